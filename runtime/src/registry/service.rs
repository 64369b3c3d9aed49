//! One service: its exports, hooks and imports as read from the component,
//! and how a component file is read, checked and compiled into one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker};

use super::{LoadError, LookupError};
use crate::channels::Caller;
use crate::grants::Grants;
use crate::limits::Limits;
use crate::manifest::Manifest;
use crate::names::FunctionNames;
use crate::runtime::{CodeSource, Runtime};
use crate::state::ScopeState;

/// The interface a service exports to receive the scope's hooks.
pub const LIFECYCLE: &str = "sluice:service/lifecycle@0.1.0";

/// The export indices of the lifecycle hooks a service exports, in its
/// loaded code ([`Code::hooks`]); [`Service::hooks`] says which it exports.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// `init`, after instantiation.
    pub init: Option<ComponentExportIndex>,
    /// `on-save`, once per save round with outcomes.
    pub on_save: Option<ComponentExportIndex>,
    /// Whether `on-save` returns `result<_, refusal>` (a component built
    /// against the first `lifecycle`, whose `on-save` returns nothing, still
    /// loads).
    pub on_save_refuses: bool,
    /// `on-finally`, after commit.
    pub on_finally: Option<ComponentExportIndex>,
    /// `dispose`, when the scope ends.
    pub dispose: Option<ComponentExportIndex>,
    /// `wasi:http/incoming-handler.handle`, for a component `sluice serve`
    /// mounts under its manifest's `http.prefix`.
    pub http: Option<ComponentExportIndex>,
}

/// Which lifecycle hooks a service exports, known without its code.
#[derive(Debug, Clone, Copy, Default)]
pub struct HookSet {
    /// `init`.
    pub init: bool,
    /// `on-save`.
    pub on_save: bool,
    /// `on-finally`.
    pub on_finally: bool,
    /// `dispose`.
    pub dispose: bool,
    /// `wasi:http/incoming-handler.handle`.
    pub http: bool,
}

impl From<&Hooks> for HookSet {
    fn from(h: &Hooks) -> HookSet {
        HookSet {
            init: h.init.is_some(),
            on_save: h.on_save.is_some(),
            on_finally: h.on_finally.is_some(),
            dispose: h.dispose.is_some(),
            http: h.http.is_some(),
        }
    }
}

/// A service's code, linked and ready to be instantiated once per scope:
/// what a service holds only once it is used (see [`Service::code`]).
pub struct Code {
    pub(crate) pre: InstancePre<ScopeState>,
    /// The export index of each of [`Service::functions`], in their order.
    pub functions: Vec<ComponentExportIndex>,
    /// The hooks' export indices.
    pub hooks: Hooks,
}

/// Where a service's code comes from when it is first used: the engine and
/// its cache, and the linker of the registry that loaded it.
pub(crate) struct Loader {
    pub runtime: Arc<Runtime>,
    pub linker: Arc<Linker<ScopeState>>,
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
    /// The names its author gave the types of its parameters and results,
    /// decoded from the component's WIT (none when it could not be).
    pub names: FunctionNames,
    /// Its place in [`Service::functions`], and so in [`Code::functions`].
    pub slot: usize,
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

    /// Whether `name` is this function's [`Function::qualified_name`],
    /// compared without building it (a lookup runs on every call).
    fn has_qualified_name(&self, name: &str) -> bool {
        match &self.interface {
            Some(i) => {
                name.strip_prefix(i.as_str()).and_then(|rest| rest.strip_prefix('#')) == Some(self.name.as_str())
            }
            None => name == self.name,
        }
    }
}

/// A loaded service: what it exports, imports and is granted, and its code,
/// pre-linked and ready to be instantiated once per scope. With a
/// compilation cache the code is held only from the service's first use: a
/// service nobody calls costs its description, not its machine code.
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
    pub hooks: HookSet,
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
    /// The SHA-256 of the component file's bytes (`sha256:<hex>`): the same
    /// on every host, so it says which version each host runs.
    pub sha256: String,
    pub(crate) imports: Vec<Import>,
    /// Its code, once loaded: at link time without a compilation cache, on
    /// first use with one.
    pub(crate) loaded: OnceLock<Code>,
    /// Held while the code is being loaded, so it is loaded once.
    pub(crate) loading: Mutex<()>,
    pub(crate) loader: Loader,
    /// `name`, shared by every [`Caller`] of the service: a read or command
    /// names its caller without allocating.
    pub(crate) shared_name: std::sync::Arc<str>,
}

/// A component compiled and described, before it is linked.
pub(crate) struct Compiled {
    pub name: String,
    pub path: PathBuf,
    pub code: CodeSource,
    pub component: Component,
    pub functions: Vec<Function>,
    /// The export index of each of `functions`, in `component`.
    pub exports: Vec<ComponentExportIndex>,
    pub hooks: Hooks,
    pub imports: Vec<Import>,
    pub manifest: Manifest,
    pub limits: Limits,
    pub digest: String,
    pub sha256: String,
}

impl Service {
    /// Its code, loaded on first use: from the compilation cache (or
    /// compiled again from its file, if that still has the bytes it was
    /// loaded from) and linked with the registry's linker. A failure is not
    /// kept: the next use tries again.
    pub fn code(&self) -> wasmtime::Result<&Code> {
        if let Some(code) = self.loaded.get() {
            return Ok(code);
        }
        let _loading = self.loading.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(code) = self.loaded.get() {
            return Ok(code);
        }
        let code = self
            .load_code()
            .map_err(|e| wasmtime::Error::msg(format!("{}: its code could not be loaded: {e}", self.name)))?;
        Ok(self.loaded.get_or_init(|| code))
    }

    /// Whether its code is loaded now.
    pub fn is_loaded(&self) -> bool {
        self.loaded.get().is_some()
    }

    fn load_code(&self) -> Result<Code, String> {
        let runtime = &self.loader.runtime;
        let component = match runtime.cached(&self.digest) {
            Some(component) => component,
            None => {
                let bytes =
                    std::fs::read(&self.path).map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
                if crate::runtime::content_digest(&bytes) != self.sha256 {
                    return Err(format!(
                        "{} changed since it was loaded; the reload that follows the change loads it",
                        self.path.display()
                    ));
                }
                runtime.compile(&bytes, &self.digest).map_err(|e| chain(&e))?.0
            }
        };
        let (functions, hooks) = exports(runtime, &component);
        let same = functions.len() == self.functions.len()
            && functions.iter().zip(&self.functions).all(|(a, b)| a.name == b.name && a.interface == b.interface);
        if !same {
            return Err("its exports differ from the ones it was loaded with".into());
        }
        let pre = self.loader.linker.instantiate_pre(&component).map_err(|e| chain(&e))?;
        Ok(Code { pre, functions: export_indices(&component, &functions), hooks })
    }

    /// The service as the caller of a read or command on `channel`: its
    /// grant there (none grants nothing) and the call's deadline.
    pub fn caller(&self, channel: &str, deadline: std::time::Instant) -> Caller {
        Caller::named(std::sync::Arc::clone(&self.shared_name), self.grants().on(channel), deadline)
    }

    /// Its grants, for checking a read or a command.
    pub fn grants(&self) -> Grants<'_> {
        Grants { service: &self.name, manifest: &self.manifest, path: &self.manifest_path }
    }

    /// Finds a function by its WIT name, or by `interface#name` when the
    /// plain name is exported by more than one interface.
    pub fn function(&self, name: &str) -> Result<&Function, LookupError> {
        self.function_index(name).map(|i| &self.functions[i])
    }

    /// [`Service::function`]'s place in [`Service::functions`].
    pub fn function_index(&self, name: &str) -> Result<usize, LookupError> {
        if let Some(i) = self.functions.iter().position(|f| f.has_qualified_name(name)) {
            return Ok(i);
        }
        let matches: Vec<usize> = (0..self.functions.len()).filter(|&i| self.functions[i].name == name).collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(LookupError::UnknownFunction {
                service: self.name.clone(),
                function: name.to_string(),
                known: join(self.functions.iter().map(|f| f.name.clone())),
            }),
            many => Err(LookupError::Ambiguous {
                service: self.name.clone(),
                function: name.to_string(),
                candidates: join(many.iter().map(|&i| self.functions[i].qualified_name())),
            }),
        }
    }
}

impl Compiled {
    /// A loaded service taken apart again, to be linked into a new registry
    /// (its code loaded, if it was not).
    pub(crate) fn from_service(s: &Service) -> Result<Compiled, LoadError> {
        let code = s.code().map_err(|e| LoadError::Invalid {
            service: s.name.clone(),
            path: s.path.clone(),
            reason: chain(&e),
        })?;
        Ok(Compiled {
            name: s.name.clone(),
            path: s.path.clone(),
            code: CodeSource::Kept,
            component: code.pre.component().clone(),
            functions: s.functions.clone(),
            exports: code.functions.clone(),
            hooks: code.hooks.clone(),
            imports: s.imports.clone(),
            manifest: s.manifest.clone(),
            limits: s.limits,
            digest: s.digest.clone(),
            sha256: s.sha256.clone(),
        })
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
    let sha256 = crate::runtime::content_digest(&bytes);
    let digest = runtime.digest_of(&sha256);
    // The running version's code, when it is the same and loaded; otherwise
    // the cache has it.
    if let Some(old) = previous.filter(|old| old.digest == digest && old.loaded.get().is_some()) {
        let compiled = Compiled { manifest, limits, path: path.to_path_buf(), ..Compiled::from_service(old)? };
        return check_schedules(&compiled).map(|()| compiled);
    }
    let (component, code) = runtime.compile(&bytes, &digest).map_err(|e| LoadError::Invalid {
        service: name.clone(),
        path: path.to_path_buf(),
        reason: chain(&e),
    })?;
    let (mut functions, hooks) = exports(runtime, &component);
    name_types(runtime, &digest, &name, &bytes, &mut functions);
    let exports = export_indices(&component, &functions);
    if manifest.http.prefix.is_some() && hooks.http.is_none() {
        return Err(bad_manifest(format!(
            "manifest {} mounts it under http.prefix, but it does not export {HTTP_HANDLER}.x",
            Manifest::path_for(path).display()
        )));
    }
    if manifest.http.prefix.is_none() && hooks.http.is_some() {
        tracing::warn!(service = %name, "exports {HTTP_HANDLER}.x but its manifest sets no [http] prefix, so it is not mounted");
    }
    let imports = service_imports(runtime, &component);
    let compiled = Compiled {
        name,
        path: path.to_path_buf(),
        code,
        component,
        functions,
        exports,
        hooks,
        imports,
        manifest,
        limits,
        digest,
        sha256,
    };
    check_schedules(&compiled).map(|()| compiled)
}

/// Each `[[schedule]]` names a function the component exports that takes
/// nothing, or one `u64` (the tick).
fn check_schedules(compiled: &Compiled) -> Result<(), LoadError> {
    for schedule in &compiled.manifest.schedule {
        let function = compiled.functions.iter().find(|f| f.name == schedule.function);
        let fits = function.is_some_and(|f| match f.params.as_slice() {
            [] => true,
            [(_, ty)] => matches!(ty, wasmtime::component::Type::U64),
            _ => false,
        });
        if !fits {
            let why = match function {
                None => "which it does not export".to_string(),
                Some(_) => "which takes other parameters than none or one u64 (the tick, in ms since the epoch)".into(),
            };
            return Err(LoadError::Manifest {
                service: compiled.name.clone(),
                reason: format!(
                    "manifest {}: [[schedule]] names function {:?}, {why}",
                    Manifest::path_for(&compiled.path).display(),
                    schedule.function
                ),
            });
        }
    }
    Ok(())
}

/// Gives `functions` the names of their types from the WIT in `bytes`; a
/// component whose WIT cannot be decoded keeps its types unnamed (shown
/// written out), with a warning. What was decoded is kept in the cache
/// beside the compiled code, and read from there the next time.
fn name_types(runtime: &Runtime, digest: &str, service: &str, bytes: &[u8], functions: &mut [Function]) {
    let decoded = match runtime.cached_names(digest) {
        Some(names) => Ok(names),
        None => crate::names::exports(bytes).inspect(|names| runtime.cache_names(digest, names)),
    };
    match decoded {
        Ok(exports) => {
            for export in exports {
                let same = |f: &&mut Function| f.name == export.function && f.interface == export.interface;
                if let Some(f) = functions.iter_mut().find(same) {
                    f.names = export.names;
                }
            }
        }
        Err(e) => tracing::warn!(service, "its WIT could not be decoded, so its types are shown unnamed: {e}"),
    }
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

/// The export index of each of `functions` in `component`.
fn export_indices(component: &Component, functions: &[Function]) -> Vec<ComponentExportIndex> {
    functions
        .iter()
        .filter_map(|f| {
            let iface = match &f.interface {
                Some(i) => Some(component.get_export_index(None, i)?),
                None => None,
            };
            component.get_export_index(iface.as_ref(), &f.name)
        })
        .collect()
}

/// The business functions and the lifecycle hooks a component exports.
fn exports(runtime: &Runtime, component: &Component) -> (Vec<Function>, Hooks) {
    let engine = runtime.engine();
    let ty = component.component_type();
    let mut functions = Vec::new();
    let mut hooks = Hooks::default();
    for (export, item) in ty.exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(func) if component.get_export_index(None, export).is_some() => {
                functions.push(function(None, export, &func, functions.len()));
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
                        functions.push(function(Some(export), name, &func, functions.len()));
                        continue;
                    }
                    match name {
                        "init" => hooks.init = Some(index),
                        "on-save" => {
                            hooks.on_save = Some(index);
                            hooks.on_save_refuses = func.results().len() == 1;
                        }
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
    slot: usize,
) -> Function {
    Function {
        interface: interface.map(str::to_string),
        name: name.to_string(),
        params: func.params().map(|(n, t)| (n.to_string(), t)).collect(),
        results: func.results().collect(),
        names: FunctionNames::default(),
        slot,
    }
}

/// An error with its causes, on one line: `outer: inner: root`.
pub fn chain(e: &wasmtime::Error) -> String {
    e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")
}

pub(crate) fn join(items: impl Iterator<Item = String>) -> String {
    let all: Vec<String> = items.collect();
    if all.is_empty() { "(none)".to_string() } else { all.join(", ") }
}
