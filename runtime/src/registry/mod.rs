//! Discovery: every `*.wasm` in the services directory becomes a [`Service`],
//! compiled once (or read from the cache), linked against the host and the
//! other services it imports ([`crate::linking`]) and pre-instantiated into
//! an `InstancePre`, so a scope only has to instantiate it.
//!
//! A file that fails to load is reported with its reason and skipped; the
//! other services still load. [`Registry::reload`] builds the next registry
//! from the current one: unchanged files are not compiled again, and a file
//! that is now broken leaves its previous version serving.

mod errors;
mod service;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

pub use errors::{LoadError, LookupError};
pub use service::chain;
pub use service::{Code, Function, HTTP_HANDLER, HookSet, Hooks, LIFECYCLE, Service};
pub(crate) use service::{Compiled, Import, Loader, compile, join};

use crate::runtime::{CodeSource, Runtime};

/// A file that was skipped, and why.
#[derive(Debug)]
pub struct LoadFailure {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub error: LoadError,
    /// On a reload: the previous version of the service still serves
    /// in its place.
    pub kept_previous: bool,
}

/// Every service found in one services directory. A registry is immutable:
/// a scope holds an `Arc` to the registry it started with.
pub struct Registry {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    services: BTreeMap<String, Arc<Service>>,
    failures: Vec<LoadFailure>,
}

impl Registry {
    /// Loads every `*.wasm` file in `dir`, in name order.
    ///
    /// Only a directory that cannot be listed is an error; each file that
    /// fails to load is recorded in [`Registry::failures`] and logged.
    pub fn discover(runtime: Arc<Runtime>, dir: &Path) -> std::io::Result<Registry> {
        Registry::load(runtime, dir, None)
    }

    /// Loads the directory again, for a hot reload. A file whose bytes did
    /// not change reuses its compiled code; a file that now fails to compile
    /// (or whose manifest is now invalid) keeps its previous version
    /// serving, recorded with `kept_previous`. Removed files are gone.
    pub fn reload(&self) -> std::io::Result<Registry> {
        Registry::load(Arc::clone(&self.runtime), &self.dir, Some(self))
    }

    fn load(runtime: Arc<Runtime>, dir: &Path, previous: Option<&Registry>) -> std::io::Result<Registry> {
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let olds: Vec<Option<&Service>> = paths
            .iter()
            .map(|path| {
                let name = path.file_stem()?.to_str()?;
                previous?.services.get(name).map(|s| s.as_ref())
            })
            .collect();
        let results = compile_all(&runtime, &paths, &olds);
        let mut compiled = Vec::new();
        let mut failures = Vec::new();
        for ((path, old), result) in paths.into_iter().zip(olds).zip(results) {
            match result {
                Ok(c) => compiled.push(c),
                Err(error) => match old.map(|old| (old, Compiled::from_service(old))) {
                    Some((old, Ok(kept))) => {
                        tracing::warn!(service = %old.name, "the new version is broken, the previous one keeps serving: {error}");
                        compiled.push(kept);
                        failures.push(LoadFailure { path, error, kept_previous: true });
                    }
                    _ => failures.push(LoadFailure { path, error, kept_previous: false }),
                },
            }
        }
        let (mut linked, link_failures) = crate::linking::link(&runtime, compiled);
        let mut mounted: BTreeMap<String, String> = BTreeMap::new();
        linked.retain(|service| {
            let Some(prefix) = service.manifest.http.prefix.clone() else { return true };
            if let Some(first) = mounted.get(&prefix) {
                let reason = format!("http.prefix {prefix:?} is already the prefix of service {first}");
                let error = LoadError::Manifest { service: service.name.clone(), reason };
                failures.push(LoadFailure { path: service.path.clone(), error, kept_previous: false });
                return false;
            }
            mounted.insert(prefix, service.name.clone());
            true
        });
        for failure in &link_failures {
            tracing::warn!("skipped: {}", failure.error);
        }
        for failure in failures.iter().filter(|f| !f.kept_previous) {
            tracing::warn!("skipped: {}", failure.error);
        }
        failures.extend(link_failures);
        let mut services = BTreeMap::new();
        for service in linked {
            tracing::info!(service = %service.name, code = ?service.code, "loaded {}", service.path.display());
            services.insert(service.name.clone(), Arc::new(service));
        }
        Ok(Registry { runtime, dir: dir.to_path_buf(), services, failures })
    }

    /// What changed from `before` to this registry: services added, changed
    /// (other code or another manifest) and removed, by name.
    pub fn changes_since(&self, before: &Registry) -> Changes {
        let mut changes = Changes::default();
        for (name, now) in &self.services {
            match before.services.get(name) {
                None => changes.added.push(name.clone()),
                Some(was) if was.digest != now.digest || was.manifest != now.manifest || was.limits != now.limits => {
                    changes.changed.push(name.clone())
                }
                Some(_) => {}
            }
        }
        changes.removed = before.services.keys().filter(|n| !self.services.contains_key(*n)).cloned().collect();
        changes
    }

    /// The runtime the services were compiled for.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The directory the services were loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The loaded services, by name.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values()
    }

    /// The files that failed to load.
    pub fn failures(&self) -> &[LoadFailure] {
        &self.failures
    }

    /// The `wasi:http` service mounted on the longest prefix covering `path`.
    pub fn mounted(&self, path: &str) -> Option<&Arc<Service>> {
        self.services
            .values()
            .filter(|s| s.hooks.http && s.manifest.http.covers(path))
            .max_by_key(|s| s.manifest.http.prefix.as_ref().map_or(0, String::len))
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Result<&Arc<Service>, LookupError> {
        self.services.get(name).ok_or_else(|| LookupError::UnknownService {
            service: name.to_string(),
            known: join(self.services.keys().cloned()),
        })
    }

    /// `service.function`, resolved once for a request to carry.
    pub fn callee(&self, service: &str, function: &str) -> Result<Callee, LookupError> {
        let service = self.service(service)?;
        let index = service.function_index(function)?;
        Ok(Callee { service: Arc::clone(service), index })
    }
}

/// A service's function, resolved once by name ([`Registry::callee`]): a
/// request carries it from its route to every run of its scope instead of
/// looking the names up again.
#[derive(Clone)]
pub struct Callee {
    service: Arc<Service>,
    index: usize,
}

impl Callee {
    /// The service.
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// The function.
    pub fn function(&self) -> &Function {
        &self.service.functions[self.index]
    }
}

/// Compiles (or reads from the cache, or keeps) every file, on as many
/// threads as there are cores, and returns the results in `paths` order.
/// Cranelift takes seconds on a large component (a Python or JavaScript
/// guest), so each file compiled, rather than found in the cache, is logged
/// as it finishes, with a count, under the `progress` target (`sluice` shows
/// it on a terminal, and `serve` always): the progress an operator sees on a
/// first start.
fn compile_all(runtime: &Runtime, paths: &[PathBuf], olds: &[Option<&Service>]) -> Vec<Result<Compiled, LoadError>> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(paths.len());
    let next = AtomicUsize::new(0);
    let compiled = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<Compiled, LoadError>>>> = paths.iter().map(|_| Mutex::new(None)).collect();
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(path) = paths.get(i) else { return };
            let started = Instant::now();
            let result = compile(runtime, path, olds[i]);
            if let Some(c) = result.as_ref().ok().filter(|c| c.code == CodeSource::Compiled) {
                let n = compiled.fetch_add(1, Ordering::Relaxed) + 1;
                let mib = std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / (1 << 20) as f64);
                tracing::info!(
                    target: "progress",
                    service = %c.name,
                    "compiled {} ({mib:.1} MiB) in {:.1} s; {n} compiled so far, {} files in all, {workers} at a time",
                    path.display(),
                    started.elapsed().as_secs_f64(),
                    paths.len()
                );
            }
            *slots[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..workers {
            s.spawn(work);
        }
        work();
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner().unwrap_or_else(PoisonError::into_inner).expect("every file is compiled in the scope")
        })
        .collect()
}

/// Services added, changed and removed by a reload.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Changes {
    /// New services.
    pub added: Vec<String>,
    /// Services whose code, manifest or limits changed.
    pub changed: Vec<String>,
    /// Services whose file is gone (or that no longer link).
    pub removed: Vec<String>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        write!(f, "added {}; changed {}; removed {}", list(&self.added), list(&self.changed), list(&self.removed))
    }
}
