//! A running host's parts in one place: the runtime, the channels and the
//! current registry, opened from the operator's options.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use crate::channels::Channels;
use crate::config::Config;
use crate::registry::Registry;
use crate::runtime::{Runtime, RuntimeOptions};
use crate::scope::Scope;

/// Where the host finds its services, configuration and data.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The services directory: every `*.wasm` in it is a service.
    pub services: PathBuf,
    /// `sluice.toml`; `None` uses [`Config::embedded`].
    pub config: Option<PathBuf>,
    /// Where the embedded database and the compilation cache live.
    pub data_dir: PathBuf,
    /// Engine settings; the cache dir defaults to `data_dir/cache`.
    pub runtime: RuntimeOptions,
}

impl HostOptions {
    /// The defaults for a services directory: data in `data/`, no config file.
    pub fn new(services: impl Into<PathBuf>) -> HostOptions {
        HostOptions {
            services: services.into(),
            config: None,
            data_dir: PathBuf::from("data"),
            runtime: RuntimeOptions::default(),
        }
    }
}

/// The runtime, the channels and the registry of one host process.
pub struct Host {
    /// The loaded services.
    pub registry: Arc<Registry>,
    /// The configured channels.
    pub channels: Arc<Channels>,
}

impl Host {
    /// Opens the channels, builds the runtime and discovers the services.
    pub fn open(options: &HostOptions) -> anyhow::Result<Host> {
        let config = match &options.config {
            Some(path) => Config::load(path)?,
            None => Config::embedded(&options.data_dir),
        };
        let channels = Arc::new(Channels::open(&config)?);
        let mut runtime_options = options.runtime.clone();
        config.apply_limits(&mut runtime_options)?;
        if runtime_options.cache_dir.is_none() {
            runtime_options.cache_dir = Some(options.data_dir.join("cache"));
        }
        let runtime = Runtime::new(runtime_options)?;
        let registry = Registry::discover(runtime, &options.services)
            .with_context(|| format!("cannot read services directory {}", options.services.display()))?;
        Ok(Host { registry: Arc::new(registry), channels })
    }

    /// Starts a new scope over the current services.
    pub fn scope(&self) -> Scope {
        Scope::new(Arc::clone(&self.registry), Arc::clone(&self.channels))
    }
}
