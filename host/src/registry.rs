//! Discovery: every `*.wasm` in the services directory becomes a [`Service`],
//! compiled once (or read from the cache), linked against the host and the
//! other services it imports ([`crate::linking`]) and pre-instantiated into
//! an `InstancePre`, so a scope only has to instantiate it.
//!
//! A file that fails to load is reported with its reason and skipped; the
//! other services still load. [`Registry::reload`] builds the next registry
//! from the current one: unchanged files are not compiled again, and a file
//! that is now broken leaves its previous version serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre};

use crate::grants::Grants;
use crate::limits::Limits;
use crate::manifest::Manifest;
use crate::runtime::{CodeSource, Runtime};
use crate::state::ScopeState;

/// Why one file in the services directory could not become a service.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file name cannot be a service name.
    #[error("{path}: {reason}")]
    BadName {
        /// The file.
        path: PathBuf,
        /// What is wrong with the name.
        reason: String,
    },
    /// The file does not start with the WebAssembly magic bytes.
    #[error("{service}: {path} is not a WebAssembly file (it does not start with \\0asm)")]
    NotWasm {
        /// The service name.
        service: String,
        /// The file.
        path: PathBuf,
    },
    /// The file is a core module, which cannot use the component interfaces.
    #[error(
        "{service}: {path} is a core WebAssembly module, not a component; build it for \
         wasm32-wasip2 or wrap it with `wasm-tools component new`"
    )]
    CoreModule {
        /// The service name.
        service: String,
        /// The file.
        path: PathBuf,
    },
    /// The component is malformed (truncated, invalid) or cannot be compiled.
    #[error("{service}: {path} is not a valid component: {reason}")]
    Invalid {
        /// The service name.
        service: String,
        /// The file.
        path: PathBuf,
        /// What the validator or compiler said.
        reason: String,
    },
    /// The component imports something the host does not provide.
    #[error("{service}: cannot be linked: {reason}")]
    Link {
        /// The service name.
        service: String,
        /// What is missing or mismatched.
        reason: String,
    },
    /// The manifest beside the component is unreadable or invalid, or asks
    /// for more than the host's caps.
    #[error("{service}: {reason}")]
    Manifest {
        /// The service name.
        service: String,
        /// What is wrong, naming the file and the setting.
        reason: String,
    },
    /// The component calls a service its manifest does not grant.
    #[error(
        "{service}: imports {interface} from service {exporter}, which its manifest does not grant; \
         grant it in {manifest}: calls = [{exporter:?}]"
    )]
    CallNotGranted {
        /// The importing service.
        service: String,
        /// The interface it imports.
        interface: String,
        /// The service that exports it.
        exporter: String,
        /// Where the importer's manifest is or would be.
        manifest: PathBuf,
    },
    /// The component imports a service interface no loaded service exports.
    #[error("{service}: imports {interface}, but no loaded service exports it")]
    NoExporter {
        /// The importing service.
        service: String,
        /// The interface it imports.
        interface: String,
    },
    /// More than one service exports the interface a component imports.
    #[error(
        "{service}: imports {interface}, which more than one service exports ({exporters}); \
         keep one"
    )]
    ManyExporters {
        /// The importing service.
        service: String,
        /// The interface it imports.
        interface: String,
        /// The services that export it, comma separated.
        exporters: String,
    },
    /// The service that exports an imported interface failed to load.
    #[error("{service}: imports {interface} from {exporter}, which failed to load")]
    ExporterFailed {
        /// The importing service.
        service: String,
        /// The interface it imports.
        interface: String,
        /// The exporter that failed.
        exporter: String,
    },
    /// The exporter's functions do not match what the importer expects.
    #[error("{service}: imports {interface}, but {exporter} exports it differently: {reason}")]
    Mismatch {
        /// The importing service.
        service: String,
        /// The interface.
        interface: String,
        /// The exporting service.
        exporter: String,
        /// Which function differs and how.
        reason: String,
    },
}

/// The interface a service exports to receive the scope's hooks.
pub const LIFECYCLE: &str = "sluice:service/lifecycle@0.1.0";

/// The export indices of the lifecycle hooks a service exports.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// `init`, after instantiation.
    pub init: Option<ComponentExportIndex>,
    /// `on-save`, once per save round with outcomes.
    pub on_save: Option<ComponentExportIndex>,
    /// `on-finally`, after commit.
    pub on_finally: Option<ComponentExportIndex>,
    /// `dispose`, when the scope ends.
    pub dispose: Option<ComponentExportIndex>,
    /// `wasi:http/incoming-handler.handle`, for a component `sluice serve`
    /// mounts under its manifest's `http.prefix`.
    pub http: Option<ComponentExportIndex>,
}

/// The interface a `wasi:http` component exports, without its version.
pub const HTTP_HANDLER: &str = "wasi:http/incoming-handler@0.2";

/// One interface a component imports from another service.
#[derive(Debug, Clone)]
pub(crate) struct Import {
    pub interface: String,
    pub functions: Vec<(String, ComponentFunc)>,
}

/// One exported function of a service.
#[derive(Debug, Clone)]
pub struct Function {
    /// The exported interface it belongs to (`acme:orders/api@0.1.0`), or
    /// `None` for a function exported directly by the world.
    pub interface: Option<String>,
    /// Its WIT name (`do-clearing`).
    pub name: String,
    /// Parameter names and types, in order.
    pub params: Vec<(String, Type)>,
    /// Result types (zero or one).
    pub results: Vec<Type>,
    pub(crate) index: ComponentExportIndex,
}

impl Function {
    /// Checks the number of arguments; the error lists the parameters.
    pub fn check_arity(&self, given: usize) -> Result<(), String> {
        if given == self.params.len() {
            return Ok(());
        }
        Err(format!("takes {} argument(s) ({}), got {given}", self.params.len(), crate::signature::params(self)))
    }

    /// `interface#name`, the name that is unique within a service.
    pub fn qualified_name(&self) -> String {
        match &self.interface {
            Some(i) => format!("{i}#{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// A loaded service: its compiled component, pre-linked and ready to be
/// instantiated once per scope.
pub struct Service {
    /// The service name: the file stem.
    pub name: String,
    /// The component file it was loaded from.
    pub path: PathBuf,
    /// Whether this load compiled the component or read it from the cache.
    pub code: CodeSource,
    /// Every exported function, in export order (the lifecycle hooks are in
    /// [`Service::hooks`], not here).
    pub functions: Vec<Function>,
    /// The lifecycle hooks it exports.
    pub hooks: Hooks,
    /// The interfaces it imports from other services, with the exporter:
    /// `("acme:inventory/stock@0.1.0", "inventory")`.
    pub calls: Vec<(String, String)>,
    /// Its grants (empty without a manifest file).
    pub manifest: Manifest,
    /// Where its manifest is, or would be.
    pub manifest_path: PathBuf,
    /// The limits it runs under: the host's defaults, replaced by its manifest's.
    pub limits: Limits,
    /// A hash of the component's bytes (and the engine settings): two loads
    /// with the same digest run the same code.
    pub digest: String,
    pub(crate) imports: Vec<Import>,
    pub(crate) pre: InstancePre<ScopeState>,
}

/// A component compiled and described, before it is linked.
pub(crate) struct Compiled {
    pub name: String,
    pub path: PathBuf,
    pub code: CodeSource,
    pub component: Component,
    pub functions: Vec<Function>,
    pub hooks: Hooks,
    pub imports: Vec<Import>,
    pub manifest: Manifest,
    pub limits: Limits,
    pub digest: String,
}

/// Why a function could not be found on a service.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LookupError {
    /// No service has this name.
    #[error("no service {service:?}; loaded services: {known}")]
    UnknownService {
        /// The name asked for.
        service: String,
        /// The services that exist, comma separated.
        known: String,
    },
    /// The service exports no function of this name.
    #[error("service {service} has no function {function:?}; it exports: {known}")]
    UnknownFunction {
        /// The service.
        service: String,
        /// The name asked for.
        function: String,
        /// The functions that exist, comma separated.
        known: String,
    },
    /// More than one exported interface has a function of this name.
    #[error("{service}.{function} is ambiguous; use one of: {candidates}")]
    Ambiguous {
        /// The service.
        service: String,
        /// The name asked for.
        function: String,
        /// The qualified names that match.
        candidates: String,
    },
}

impl Service {
    /// Its grants, for checking a read or a command.
    pub fn grants(&self) -> Grants<'_> {
        Grants { service: &self.name, manifest: &self.manifest, path: &self.manifest_path }
    }

    /// Finds a function by its WIT name, or by `interface#name` when the
    /// plain name is exported by more than one interface.
    pub fn function(&self, name: &str) -> Result<&Function, LookupError> {
        if let Some(f) = self.functions.iter().find(|f| f.qualified_name() == name) {
            return Ok(f);
        }
        let matches: Vec<&Function> = self.functions.iter().filter(|f| f.name == name).collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(LookupError::UnknownFunction {
                service: self.name.clone(),
                function: name.to_string(),
                known: join(self.functions.iter().map(|f| f.name.clone())),
            }),
            many => Err(LookupError::Ambiguous {
                service: self.name.clone(),
                function: name.to_string(),
                candidates: join(many.iter().map(|f| f.qualified_name())),
            }),
        }
    }
}

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
        let mut compiled = Vec::new();
        let mut failures = Vec::new();
        for path in paths {
            let old = previous.and_then(|p| {
                let name = path.file_stem()?.to_str()?;
                p.services.get(name)
            });
            match compile(&runtime, &path, old.map(|s| s.as_ref())) {
                Ok(c) => compiled.push(c),
                Err(error) => match old {
                    Some(old) => {
                        tracing::warn!(service = %old.name, "the new version is broken, the previous one keeps serving: {error}");
                        compiled.push(Compiled::from_service(old));
                        failures.push(LoadFailure { path, error, kept_previous: true });
                    }
                    None => failures.push(LoadFailure { path, error, kept_previous: false }),
                },
            }
        }
        let (mut linked, link_failures) = crate::linking::link(&runtime, compiled);
        let mut mounted: BTreeMap<String, String> = BTreeMap::new();
        linked.retain(|service| {
            let Some(prefix) = service.manifest.http.as_ref().map(|h| h.prefix.clone()) else { return true };
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
            .filter(|s| s.hooks.http.is_some() && s.manifest.http.as_ref().is_some_and(|m| m.covers(path)))
            .max_by_key(|s| s.manifest.http.as_ref().map_or(0, |m| m.prefix.len()))
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Result<&Arc<Service>, LookupError> {
        self.services.get(name).ok_or_else(|| LookupError::UnknownService {
            service: name.to_string(),
            known: join(self.services.keys().cloned()),
        })
    }
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

impl Compiled {
    /// A loaded service taken apart again, to be linked into a new registry.
    fn from_service(s: &Service) -> Compiled {
        Compiled {
            name: s.name.clone(),
            path: s.path.clone(),
            code: CodeSource::Kept,
            component: s.pre.component().clone(),
            functions: s.functions.clone(),
            hooks: s.hooks.clone(),
            imports: s.imports.clone(),
            manifest: s.manifest.clone(),
            limits: s.limits,
            digest: s.digest.clone(),
        }
    }
}

/// Reads, checks and compiles one component file, and describes its
/// exports, hooks and service imports. Linking comes later, once every file
/// is compiled, because imports are resolved against the other services.
///
/// When `previous` (the running version of the same service) has the same
/// digest, its compiled code is reused; the manifest is always read again.
pub(crate) fn compile(runtime: &Runtime, path: &Path, previous: Option<&Service>) -> Result<Compiled, LoadError> {
    let name = service_name(path)?;
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
    check_header(&name, path, &bytes)?;
    let bad_manifest = |reason: String| LoadError::Manifest { service: name.clone(), reason };
    let manifest = Manifest::load(path).map_err(bad_manifest)?;
    let limits = manifest
        .limits
        .apply(runtime.options().limits, &runtime.caps())
        .map_err(|e| bad_manifest(format!("manifest {}: {e}", Manifest::path_for(path).display())))?;
    let digest = runtime.digest(&bytes);
    if let Some(old) = previous.filter(|old| old.digest == digest) {
        return Ok(Compiled { manifest, limits, path: path.to_path_buf(), ..Compiled::from_service(old) });
    }
    let (component, code) = runtime.compile(&bytes, &digest).map_err(|e| LoadError::Invalid {
        service: name.clone(),
        path: path.to_path_buf(),
        reason: chain(&e),
    })?;
    let (functions, hooks) = exports(runtime, &component);
    if manifest.http.is_some() && hooks.http.is_none() {
        return Err(bad_manifest(format!(
            "manifest {} mounts it under http.prefix, but it does not export {HTTP_HANDLER}.x",
            Manifest::path_for(path).display()
        )));
    }
    if manifest.http.is_none() && hooks.http.is_some() {
        tracing::warn!(service = %name, "exports {HTTP_HANDLER}.x but its manifest sets no [http] prefix, so it is not mounted");
    }
    let imports = service_imports(runtime, &component);
    Ok(Compiled {
        name,
        path: path.to_path_buf(),
        code,
        component,
        functions,
        hooks,
        imports,
        manifest,
        limits,
        digest,
    })
}

/// The service name of a component file: its stem, which must be usable in
/// `service.function` (no dots, no spaces).
fn service_name(path: &Path) -> Result<String, LoadError> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let ok =
        !stem.is_empty() && stem.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        return Err(LoadError::BadName {
            path: path.to_path_buf(),
            reason: format!("{stem:?} is not a service name: use lowercase letters, digits, '-' and '_'"),
        });
    }
    Ok(stem.to_string())
}

/// Tells a component from a core module (or from something else entirely)
/// before handing the bytes to the compiler, for a clearer error.
fn check_header(service: &str, path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(LoadError::NotWasm { service: service.to_string(), path: path.to_path_buf() });
    }
    // Bytes 4..8 are the version and layer: layer 0 is a core module, layer 1
    // a component.
    if bytes.get(6..8) == Some(&[0, 0]) {
        return Err(LoadError::CoreModule { service: service.to_string(), path: path.to_path_buf() });
    }
    Ok(())
}

/// The business functions and the lifecycle hooks a component exports.
fn exports(runtime: &Runtime, component: &Component) -> (Vec<Function>, Hooks) {
    let engine = runtime.engine();
    let ty = component.component_type();
    let mut functions = Vec::new();
    let mut hooks = Hooks::default();
    for (export, item) in ty.exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(func) => {
                if let Some(index) = component.get_export_index(None, export) {
                    functions.push(function(None, export, &func, index));
                }
            }
            ComponentItem::ComponentInstance(instance) => {
                let Some(iface) = component.get_export_index(None, export) else { continue };
                if export.starts_with(HTTP_HANDLER) {
                    hooks.http = component.get_export_index(Some(&iface), "handle");
                    continue;
                }
                for (name, item) in instance.exports(engine) {
                    let ComponentItem::ComponentFunc(func) = item.ty else { continue };
                    let Some(index) = component.get_export_index(Some(&iface), name) else {
                        continue;
                    };
                    if export != LIFECYCLE {
                        functions.push(function(Some(export), name, &func, index));
                        continue;
                    }
                    match name {
                        "init" => hooks.init = Some(index),
                        "on-save" => hooks.on_save = Some(index),
                        "on-finally" => hooks.on_finally = Some(index),
                        "dispose" => hooks.dispose = Some(index),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (functions, hooks)
}

/// Whether the host itself provides an import (WASI and `sluice:service`);
/// every other interface import is another service's export.
pub(crate) fn host_provided(name: &str) -> bool {
    name.starts_with("wasi:") || name.starts_with("sluice:service/")
}

/// The interfaces a component imports from other services.
fn service_imports(runtime: &Runtime, component: &Component) -> Vec<Import> {
    let engine = runtime.engine();
    let mut imports = Vec::new();
    for (name, item) in component.component_type().imports(engine) {
        if host_provided(name) {
            continue;
        }
        if let ComponentItem::ComponentInstance(instance) = item.ty {
            let functions = instance
                .exports(engine)
                .filter_map(|(f, item)| match item.ty {
                    ComponentItem::ComponentFunc(func) => Some((f.to_string(), func)),
                    _ => None,
                })
                .collect();
            imports.push(Import { interface: name.to_string(), functions });
        }
    }
    imports
}

fn function(
    interface: Option<&str>,
    name: &str,
    func: &wasmtime::component::types::ComponentFunc,
    index: ComponentExportIndex,
) -> Function {
    Function {
        interface: interface.map(str::to_string),
        name: name.to_string(),
        params: func.params().map(|(n, t)| (n.to_string(), t)).collect(),
        results: func.results().collect(),
        index,
    }
}

/// An error and its causes on one line.
pub(crate) fn chain(e: &wasmtime::Error) -> String {
    e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")
}

pub(crate) fn join(items: impl Iterator<Item = String>) -> String {
    let all: Vec<String> = items.collect();
    if all.is_empty() { "(none)".to_string() } else { all.join(", ") }
}
