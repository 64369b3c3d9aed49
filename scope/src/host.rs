//! A running host's parts in one place: the runtime, the channels and the
//! current registry, opened from the operator's options. The registry can
//! be swapped for a reloaded one while scopes run: each scope keeps the
//! registry it started with.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context as _;

use crate::channels::Channels;
use crate::channels::sql::answers::Answers;
use crate::channels::sql::ticks::Ticks;
use crate::config::{Config, IdempotencySettings, ScheduleSettings};
use crate::registry::{Changes, Registry};
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
    /// `[scopes]` settings given on the command line, which win over the
    /// configuration file's.
    pub scopes: crate::config::ScopeSettings,
}

impl HostOptions {
    /// The configuration file's, or the embedded one.
    pub fn config(&self) -> anyhow::Result<Config> {
        match &self.config {
            Some(path) => Config::load(path),
            None => Ok(Config::embedded(&self.data_dir)),
        }
    }

    /// The defaults for a services directory: data in `data/`, no config file.
    pub fn new(services: impl Into<PathBuf>) -> HostOptions {
        HostOptions {
            services: services.into(),
            config: None,
            data_dir: PathBuf::from("data"),
            runtime: RuntimeOptions::default(),
            scopes: crate::config::ScopeSettings::default(),
        }
    }
}

/// The runtime, the channels and the registry of one host process.
pub struct Host {
    registry: RwLock<Arc<Registry>>,
    /// Held while a reload builds the next registry, so two reloads never
    /// race to swap in their results.
    reloading: Mutex<()>,
    reloads: AtomicU64,
    /// The configured channels.
    pub channels: Arc<Channels>,
    /// Where the answers of idempotent requests are kept, or why nowhere.
    answers: Result<Arc<Answers>, String>,
    /// Where the ticks of scheduled functions are kept, or why nowhere.
    ticks: Result<Arc<Ticks>, String>,
}

impl Host {
    /// Opens the channels, builds the runtime and discovers the services.
    pub fn open(options: &HostOptions) -> anyhow::Result<Host> {
        let config = HostOptions::config(options)?;
        let channels = Arc::new(Channels::open(&config.channels)?);
        let registry = Host::discover(options, &config)?;
        let answers = Host::answers_in(&channels, &config.idempotency);
        let ticks = Host::ticks_in(&channels, &config.schedules);
        Ok(Host {
            registry: RwLock::new(Arc::new(registry)),
            reloading: Mutex::new(()),
            reloads: AtomicU64::new(0),
            channels,
            answers,
            ticks,
        })
    }

    /// The answers of idempotent requests in the channel `[idempotency]`
    /// names, or why not there: no such channel, not a `sql` one, or its
    /// table could not be made (logged). Requests with a key are then
    /// refused, saying why; the host serves the rest.
    fn answers_in(channels: &Channels, settings: &IdempotencySettings) -> Result<Arc<Answers>, String> {
        let name = &settings.channel;
        let Some(channel) = channels.get(name) else {
            return Err(format!(
                "idempotency keys need a sql channel to keep their answers in, and there is no channel {name:?} \
                 ([idempotency] channel in sluice.toml)"
            ));
        };
        let (keep, lease) = (Duration::from_secs(settings.keep_seconds), Duration::from_secs(settings.lease_seconds));
        Answers::open(name, Arc::clone(channel), keep, lease).map(Arc::new).map_err(|e| {
            let why = format!("channel {name:?} cannot keep the answers of idempotent requests ([idempotency]): {e}");
            tracing::warn!("{why}");
            why
        })
    }

    /// Where the answers of idempotent requests are kept, or why nowhere.
    pub fn answers(&self) -> Result<&Arc<Answers>, &str> {
        self.answers.as_ref().map_err(String::as_str)
    }

    /// The ticks of scheduled functions in the channel `[schedules]` names,
    /// or why not there (logged): then no schedule runs.
    fn ticks_in(channels: &Channels, settings: &ScheduleSettings) -> Result<Arc<Ticks>, String> {
        let name = &settings.channel;
        let Some(channel) = channels.get(name) else {
            return Err(format!(
                "schedules need a sql channel to keep their ticks in, and there is no channel {name:?} ([schedules] channel in sluice.toml)"
            ));
        };
        Ticks::open(name, Arc::clone(channel), Duration::from_secs(settings.lease_seconds)).map(Arc::new).map_err(|e| {
            let why = format!("channel {name:?} cannot keep the ticks of schedules ([schedules]): {e}");
            tracing::warn!("{why}");
            why
        })
    }

    /// Where the ticks of scheduled functions are kept, or why nowhere.
    pub fn ticks(&self) -> Result<&Arc<Ticks>, &str> {
        self.ticks.as_ref().map_err(String::as_str)
    }

    /// The runtime and the services of `options`, without opening any
    /// channel: what `sluice test` replays recorded scopes against.
    pub fn services(options: &HostOptions) -> anyhow::Result<Registry> {
        Host::discover(options, &HostOptions::config(options)?)
    }

    fn discover(options: &HostOptions, config: &Config) -> anyhow::Result<Registry> {
        let mut runtime_options = options.runtime.clone();
        runtime_options.configure(config)?;
        runtime_options.apply_scopes(&options.scopes).context("command line")?;
        if runtime_options.cache_dir.is_none() {
            runtime_options.cache_dir = Some(options.data_dir.join("cache"));
        }
        let runtime = Runtime::new(runtime_options)?;
        Registry::discover(runtime, &options.services)
            .with_context(|| format!("cannot read services directory {}", options.services.display()))
    }

    /// The services as they are now. A scope started later may see a newer
    /// registry; one holding this `Arc` never does.
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The channels every scope of this host reads from and saves to.
    pub fn channels(&self) -> &Arc<Channels> {
        &self.channels
    }

    /// Starts a new scope over the current services.
    pub fn scope(&self) -> Scope {
        Scope::new(self.registry(), Arc::clone(&self.channels))
    }

    /// Reads the services directory again and swaps the result in. The
    /// compiling happens before the swap, without blocking new scopes;
    /// scopes already running finish on the registry they started with.
    /// Only a directory that cannot be read is an error, and then the
    /// current registry stays.
    pub fn reload(&self) -> anyhow::Result<Changes> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.registry();
        let next =
            current.reload().with_context(|| format!("cannot read services directory {}", current.dir().display()))?;
        let changes = next.changes_since(&current);
        *self.registry.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(changes)
    }

    /// How many reloads have been swapped in since the host opened.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }
}
