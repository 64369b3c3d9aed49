//! The once-per-host part: one wasmtime `Engine` (pooling allocator,
//! copy-on-write memory images, epoch interruption driven by one ticker
//! thread), one `Linker` with everything a service may import, and the
//! compilation cache that lets a restart skip Cranelift.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasData, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings;
use crate::config::MAX_RETRIES;
use crate::interfaces::poll::DeadlinePoll;
use crate::limits::Limits;
use crate::state::{ScopeState, ServiceView};

pub use crate::work::EPOCH_TICK;

/// How much of each linear memory, and of each table, stays resident in its
/// pooling slot after an instance is dropped, reset in place for the next
/// one. At most `max_instances` slots hold this much each.
pub const MEMORY_KEEP_RESIDENT: usize = 1 << 20;
/// See [`MEMORY_KEEP_RESIDENT`].
pub const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Host-wide settings that shape the engine.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where compiled components are kept between runs; `None` compiles every
    /// start.
    pub cache_dir: Option<PathBuf>,
    /// The limits of a service whose manifest does not set its own. Setting
    /// `limits.fuel` turns fuel metering on for the whole engine.
    pub limits: Limits,
    /// The most a manifest may ask for. `caps.memory_bytes` also sizes the
    /// pooling allocator's memory slots.
    pub caps: Limits,
    /// How long a whole scope may run guest code, wall clock from its start,
    /// whatever its services' own deadlines.
    pub scope_timeout: Duration,
    /// How many bytes of commands one scope may queue in all, whatever its
    /// services' own limits: a bound on the memory a scope's queue holds.
    pub scope_queued_bytes: usize,
    /// How many component instances may be alive at once across all scopes.
    pub max_instances: u32,
    /// Whether saves check the scope's reads (`[scopes] isolation`).
    pub isolation: crate::reads::Isolation,
    /// How many times a scope whose save was a conflict runs again before
    /// the conflict is the answer (`[scopes] retries`). The last retry holds
    /// the channels it needs from its start, so it cannot conflict with
    /// this host's other saves.
    pub retries: usize,
}

impl RuntimeOptions {
    /// These options with `config`'s `[caps]` and `[limits]` applied (caps
    /// first, then defaults, which must fit under them), and its `[scopes]`.
    pub fn configure(&mut self, config: &crate::config::Config) -> anyhow::Result<()> {
        let options = self;
        let caps = config.caps.apply(options.caps, &Limits::UNBOUNDED).map_err(|e| anyhow::anyhow!("[caps]: {e}"))?;
        let ceiling = Limits { fuel: Some(caps.fuel.unwrap_or(u64::MAX)), ..caps };
        options.limits = config.limits.apply(options.limits, &ceiling).map_err(|e| anyhow::anyhow!("[limits]: {e}"))?;
        options.caps = caps;
        options.apply_scopes(&config.scopes)
    }

    /// These options with `scopes` (`[scopes]`, or the command line's)
    /// applied.
    pub fn apply_scopes(&mut self, scopes: &crate::config::ScopeSettings) -> anyhow::Result<()> {
        let options = self;
        if let Some(isolation) = scopes.isolation {
            options.isolation = isolation;
        }
        if let Some(retries) = scopes.retries {
            if retries > MAX_RETRIES {
                anyhow::bail!("[scopes]: retries = {retries} is over the most allowed, {MAX_RETRIES}");
            }
            options.retries = retries;
        }
        Ok(())
    }
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            cache_dir: None,
            limits: Limits::DEFAULTS,
            caps: Limits::CAPS,
            scope_timeout: Duration::from_secs(60),
            scope_queued_bytes: 64 << 20,
            max_instances: 256,
            isolation: crate::reads::Isolation::Serializable,
            retries: 1,
        }
    }
}

impl RuntimeOptions {
    /// Whether the engine meters fuel: only when the host sets a default
    /// fuel budget.
    pub fn meters_fuel(&self) -> bool {
        self.limits.fuel.is_some()
    }

    /// The caps as they apply: no fuel cap when fuel is not metered, and
    /// never a cap below the default.
    pub fn effective_caps(&self) -> Limits {
        let mut caps = self.caps;
        caps.fuel = if self.meters_fuel() {
            Some(caps.fuel.unwrap_or(u64::MAX).max(self.limits.fuel.unwrap_or(0)))
        } else {
            None
        };
        caps.deadline = caps.deadline.max(self.limits.deadline);
        caps.memory_bytes = caps.memory_bytes.max(self.limits.memory_bytes);
        caps.commands = caps.commands.max(self.limits.commands);
        caps.command_bytes = caps.command_bytes.max(self.limits.command_bytes);
        caps.result_bytes = caps.result_bytes.max(self.limits.result_bytes);
        caps.save_rounds = caps.save_rounds.max(self.limits.save_rounds);
        caps
    }
}

/// How a component's machine code was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodeSource {
    /// Compiled by Cranelift during this load.
    Compiled,
    /// Read back from the compilation cache.
    Cached,
    /// Kept from the version already running (a reload of an unchanged
    /// file, or of a broken one).
    Kept,
}

/// The engine, the linker and the cache, shared by every service and scope.
pub struct Runtime {
    engine: Engine,
    linker: Linker<ScopeState>,
    options: RuntimeOptions,
    // Held for its Drop, which stops the thread.
    _ticker: Ticker,
}

impl Runtime {
    /// Builds the engine and linker and starts the epoch ticker.
    pub fn new(options: RuntimeOptions) -> anyhow::Result<Arc<Runtime>> {
        let caps = options.effective_caps();
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_component_instances(options.max_instances)
            .total_core_instances(options.max_instances * 4)
            .total_memories(options.max_instances * 2)
            .total_tables(options.max_instances * 4)
            .max_memory_size(caps.memory_bytes);
        // When a scope ends, reset the pages its instances touched in place
        // (up to these sizes, found with Linux's PAGEMAP_SCAN where the kernel
        // has it) instead of an `madvise` per memory and table: the madvise
        // takes the process-wide memory-map lock, so scopes ending on two
        // threads waited for each other (docs/performance.md: B1 more than
        // twice as fast on one thread, and two threads no longer slower).
        pooling
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(options.meters_fuel())
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine =
            Engine::new(&config).map_err(|e| anyhow::Error::from(e).context("cannot create the wasmtime engine"))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| anyhow::Error::from(e).context("cannot link WASI"))?;
        // wasi:http types, for components `sluice serve` mounts; the
        // outgoing handler is linked but refuses every request.
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)
            .map_err(|e| anyhow::Error::from(e).context("cannot link wasi:http"))?;
        bindings::Imports::add_to_linker::<ScopeState, Sluice>(&mut linker, ScopeState::service_view)
            .map_err(|e| anyhow::Error::from(e).context("cannot link sluice:service"))?;
        // WASI's waits, again, bounded by the deadline of the call that waits.
        linker.allow_shadowing(true);
        wasmtime_wasi::p2::bindings::sync::io::poll::add_to_linker::<ScopeState, DeadlinePoll>(
            &mut linker,
            ScopeState::poll_view,
        )
        .map_err(|e| anyhow::Error::from(e).context("cannot link wasi:io/poll"))?;
        linker.allow_shadowing(false);

        if let Some(dir) = &options.cache_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create cache dir {}", dir.display()))?;
        }
        let ticker = Ticker::start(engine.clone())?;
        Ok(Arc::new(Runtime { engine, linker, options, _ticker: ticker }))
    }

    /// The engine every component is compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The settings this runtime was built with.
    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }

    pub(crate) fn linker(&self) -> &Linker<ScopeState> {
        &self.linker
    }

    /// The caps a manifest's limits are checked against.
    pub fn caps(&self) -> Limits {
        self.options.effective_caps()
    }

    /// Compiles `bytes`, or loads the result of an earlier compile of the same
    /// bytes by the same engine configuration from the cache. `digest` is
    /// [`Runtime::digest`] of `bytes`.
    pub fn compile(&self, bytes: &[u8], digest: &str) -> wasmtime::Result<(Component, CodeSource)> {
        let Some(dir) = &self.options.cache_dir else {
            return Ok((Component::new(&self.engine, bytes)?, CodeSource::Compiled));
        };
        let cached = cache_entry(dir, digest, "cwasm");
        if cached.exists() {
            match load_cached(&self.engine, &cached) {
                Ok(component) => return Ok((component, CodeSource::Cached)),
                Err(e) => {
                    tracing::warn!(file = %cached.display(), "ignoring unusable cache entry: {e}")
                }
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        if let Err(e) = store_cached(&component, &cached) {
            tracing::warn!(file = %cached.display(), "cannot write compilation cache: {e:#}");
        }
        Ok((component, CodeSource::Compiled))
    }

    /// The compiled component of `digest` from the cache, if this host has
    /// a cache and the entry is there and usable.
    pub fn cached(&self, digest: &str) -> Option<Component> {
        let cached = cache_entry(self.options.cache_dir.as_ref()?, digest, "cwasm");
        load_cached(&self.engine, &cached).ok()
    }

    /// The names of a component's types (`names::exports`) kept in the cache
    /// beside its compiled code, if there are.
    pub fn cached_names(&self, digest: &str) -> Option<Vec<crate::names::ExportNames>> {
        let path = cache_entry(self.options.cache_dir.as_ref()?, digest, "names.json");
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Keeps `names` in the cache beside the compiled code of `digest`; a
    /// failure to write costs only the next start's time.
    pub fn cache_names(&self, digest: &str, names: &[crate::names::ExportNames]) {
        let Some(dir) = &self.options.cache_dir else { return };
        let path = cache_entry(dir, digest, "names.json");
        let written =
            serde_json::to_vec(names).map_err(anyhow::Error::from).and_then(|bytes| write_then_rename(&path, &bytes));
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), "cannot write the names to the cache: {e:#}");
        }
    }

    /// Whether compiled components are cached on disk, so that a service's
    /// code can be dropped and read again cheaply.
    pub fn caches(&self) -> bool {
        self.options.cache_dir.is_some()
    }

    /// A key that changes when the component or anything about the engine
    /// that affects its machine code changes (wasmtime version, settings).
    pub fn digest(&self, bytes: &[u8]) -> String {
        self.digest_of(&content_digest(bytes))
    }

    /// [`Runtime::digest`] of a component whose [`content_digest`] is
    /// `content`: the bytes are hashed once.
    pub fn digest_of(&self, content: &str) -> String {
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut engine_hash);
        let mut sha = Sha256::new();
        sha.update(engine_hash.finish().to_le_bytes());
        sha.update(content.as_bytes());
        hex(&sha.finalize())
    }
}

/// The SHA-256 of a component file's bytes, as `sha256:<hex>`: the same on
/// every host and engine, and what `sha256sum` says of the file.
pub fn content_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[expect(unsafe_code, reason = "deserializing machine code is unsafe by nature")]
fn load_cached(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // Read into memory rather than `deserialize_file`, which maps the file:
    // a cache file truncated or rewritten in place while mapped would crash
    // the host with SIGBUS.
    let bytes = std::fs::read(path)?;
    // SAFETY: the file is one this host wrote with `Component::serialize` into
    // its own cache directory, named by the hash of its source and of the
    // engine settings; wasmtime also checks its header and version.
    unsafe { Component::deserialize(engine, &bytes) }
}

/// The cache entry of `digest` of one kind: `DIGEST.cwasm` (the compiled
/// code) or `DIGEST.names.json` (the names decoded from its WIT).
fn cache_entry(dir: &Path, digest: &str, kind: &str) -> std::path::PathBuf {
    dir.join(format!("{digest}.{kind}"))
}

fn store_cached(component: &Component, path: &Path) -> anyhow::Result<()> {
    write_then_rename(path, &component.serialize()?)
}

/// Writes a cache entry then renames it into place, so a crash or a
/// concurrent host never leaves a half-written entry under the final name.
fn write_then_rename(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(())
}

/// Marker for the `sluice:service` host functions' view of the store.
struct Sluice;

impl HasData for Sluice {
    type Data<'a> = ServiceView<'a>;
}

/// The one thread per engine that advances its epoch every [`EPOCH_TICK`].
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine) -> anyhow::Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .context("cannot start the epoch ticker thread")?;
        Ok(Ticker { stop, thread: Some(thread) })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;
    use crate::reads::Isolation;

    #[test]
    fn scopes_set_isolation_and_retries_within_bounds() -> anyhow::Result<()> {
        let base = "[channels.main]\nkind = \"sql\"\nurl = \"sqlite://a.db\"\n";
        let mut options = RuntimeOptions::default();
        assert_eq!((options.isolation, options.retries), (Isolation::Serializable, 1));
        let config = crate::config::Config::parse(
            &format!("{base}[scopes]\nisolation = \"read-committed\"\nretries = 0\n"),
            std::path::Path::new("."),
        )?;
        options.configure(&config)?;
        assert_eq!((options.isolation, options.retries), (Isolation::ReadCommitted, 0));
        let over =
            crate::config::Config::parse(&format!("{base}[scopes]\nretries = 101\n"), std::path::Path::new("."))?;
        let refused = options.configure(&over).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(refused, Err("[scopes]: retries = 101 is over the most allowed, 100".to_string()));
        let unknown = crate::config::Config::parse(
            &format!("{base}[scopes]\nisolation = \"snapshot\"\n"),
            std::path::Path::new("."),
        );
        assert!(unknown.is_err_and(|e| format!("{e:#}").contains("unknown variant `snapshot`")));
        Ok(())
    }
}
