//! Discovery: every `*.wasm` in the services directory becomes a [`Service`],
//! compiled once (or read from the cache) and pre-linked into an
//! `InstancePre`, so a scope only has to instantiate it.
//!
//! A file that fails to load is reported with its reason and skipped; the
//! other services still load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::component::types::{ComponentItem, Type};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre};

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
    /// Every exported function, in export order.
    pub functions: Vec<Function>,
    pub(crate) pre: InstancePre<ScopeState>,
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
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut services = BTreeMap::new();
        let mut failures = Vec::new();
        for path in paths {
            match load(&runtime, &path) {
                Ok(service) => {
                    tracing::info!(service = %service.name, code = ?service.code, "loaded {}", path.display());
                    services.insert(service.name.clone(), Arc::new(service));
                }
                Err(error) => {
                    tracing::warn!("skipped: {error}");
                    failures.push(LoadFailure { path, error });
                }
            }
        }
        Ok(Registry {
            runtime,
            dir: dir.to_path_buf(),
            services,
            failures,
        })
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

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Result<&Arc<Service>, LookupError> {
        self.services
            .get(name)
            .ok_or_else(|| LookupError::UnknownService {
                service: name.to_string(),
                known: join(self.services.keys().cloned()),
            })
    }
}

/// Loads one component file.
pub fn load(runtime: &Runtime, path: &Path) -> Result<Service, LoadError> {
    let name = service_name(path)?;
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    check_header(&name, path, &bytes)?;
    let (component, code) = runtime.compile(&bytes).map_err(|e| LoadError::Invalid {
        service: name.clone(),
        path: path.to_path_buf(),
        reason: chain(&e),
    })?;
    let pre = runtime
        .linker()
        .instantiate_pre(&component)
        .map_err(|e| LoadError::Link {
            service: name.clone(),
            reason: chain(&e),
        })?;
    let functions = exported_functions(runtime, &component);
    Ok(Service {
        name,
        path: path.to_path_buf(),
        code,
        functions,
        pre,
    })
}

/// The service name of a component file: its stem, which must be usable in
/// `service.function` (no dots, no spaces).
fn service_name(path: &Path) -> Result<String, LoadError> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let ok = !stem.is_empty()
        && stem
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        return Err(LoadError::BadName {
            path: path.to_path_buf(),
            reason: format!(
                "{stem:?} is not a service name: use lowercase letters, digits, '-' and '_'"
            ),
        });
    }
    Ok(stem.to_string())
}

/// Tells a component from a core module (or from something else entirely)
/// before handing the bytes to the compiler, for a clearer error.
fn check_header(service: &str, path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(LoadError::NotWasm {
            service: service.to_string(),
            path: path.to_path_buf(),
        });
    }
    // Bytes 4..8 are the version and layer: layer 0 is a core module, layer 1
    // a component.
    if bytes.get(6..8) == Some(&[0, 0]) {
        return Err(LoadError::CoreModule {
            service: service.to_string(),
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn exported_functions(runtime: &Runtime, component: &Component) -> Vec<Function> {
    let engine = runtime.engine();
    let ty = component.component_type();
    let mut functions = Vec::new();
    for (export, item) in ty.exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(func) => {
                if let Some(index) = component.get_export_index(None, export) {
                    functions.push(function(None, export, &func, index));
                }
            }
            ComponentItem::ComponentInstance(instance) => {
                let Some(iface) = component.get_export_index(None, export) else {
                    continue;
                };
                for (name, item) in instance.exports(engine) {
                    if let ComponentItem::ComponentFunc(func) = item.ty
                        && let Some(index) = component.get_export_index(Some(&iface), name)
                    {
                        functions.push(function(Some(export), name, &func, index));
                    }
                }
            }
            _ => {}
        }
    }
    functions
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
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

fn join(items: impl Iterator<Item = String>) -> String {
    let all: Vec<String> = items.collect();
    if all.is_empty() {
        "(none)".to_string()
    } else {
        all.join(", ")
    }
}
