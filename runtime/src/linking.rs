//! Linking services to each other (Tecture's `Let<>`): a component that
//! imports an interface another service exports gets host functions that
//! forward each call to the exporter's instance in the same scope.
//!
//! Resolution happens at discovery, not at call time: an import with no
//! exporter, with several, or with a different signature is a load error of
//! the importer, and the importer of a service that failed to load fails too.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::{Linker, Val};

use crate::invoke::{self, Target};
use crate::registry::{
    Code, Compiled, Function, HookSet, Import, LoadError, LoadFailure, Loader, Service, chain, join,
};
use crate::runtime::Runtime;
use crate::state::ScopeState;

/// Links every compiled component against the host and the other services.
/// Returns the services that linked and a failure for each that did not.
pub(crate) fn link(runtime: &Arc<Runtime>, compiled: Vec<Compiled>) -> (Vec<Service>, Vec<LoadFailure>) {
    let mut alive = compiled;
    let mut failures = Vec::new();
    // Interfaces whose exporter failed, for a clearer error in the importer.
    let mut lost: HashMap<String, String> = HashMap::new();
    loop {
        let exporters = exporters(&alive);
        let mut failed: Vec<(usize, LoadError)> = Vec::new();
        let mut calls: Vec<Vec<(String, String)>> = vec![Vec::new(); alive.len()];
        for (i, c) in alive.iter().enumerate() {
            for import in &c.imports {
                match resolve(c, import, &exporters, &alive, &lost) {
                    Ok(exporter) => calls[i].push((import.interface.clone(), exporter)),
                    Err(e) => {
                        failed.push((i, e));
                        break;
                    }
                }
            }
        }
        if failed.is_empty() {
            let linker = Arc::new(forwarding_linker(runtime, &alive, &exporters));
            let mut pres = Vec::with_capacity(alive.len());
            for (i, c) in alive.iter().enumerate() {
                match linker.instantiate_pre(&c.component) {
                    Ok(pre) => pres.push(pre),
                    Err(e) => failed.push((i, LoadError::Link { service: c.name.clone(), reason: chain(&e) })),
                }
            }
            if failed.is_empty() {
                // With a cache, a service's code is dropped once it linked
                // and read again on its first use; without one it is kept.
                let keep = !runtime.caches();
                let services = alive
                    .into_iter()
                    .zip(calls)
                    .zip(pres)
                    .map(|((c, calls), pre)| {
                        let loaded = std::sync::OnceLock::new();
                        if keep {
                            let _ = loaded.set(Code { pre, functions: c.exports, hooks: c.hooks.clone() });
                        }
                        Service {
                            manifest_path: crate::manifest::Manifest::path_for(&c.path),
                            shared_name: std::sync::Arc::from(c.name.as_str()),
                            name: c.name,
                            path: c.path,
                            code: c.code,
                            functions: c.functions,
                            hooks: HookSet::from(&c.hooks),
                            calls,
                            manifest: c.manifest,
                            limits: c.limits,
                            digest: c.digest,
                            sha256: c.sha256,
                            imports: c.imports,
                            loaded,
                            loading: std::sync::Mutex::new(()),
                            loader: Loader { runtime: Arc::clone(runtime), linker: Arc::clone(&linker) },
                        }
                    })
                    .collect();
                return (services, failures);
            }
        }
        // Drop the failed ones and resolve again: their importers may fail now.
        failed.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
        failed.dedup_by_key(|(i, _)| *i);
        for (i, error) in failed {
            let c = alive.remove(i);
            for f in c.functions.iter().filter_map(|f| f.interface.clone()) {
                lost.insert(f, c.name.clone());
            }
            failures.push(LoadFailure { path: c.path, error, kept_previous: false });
        }
    }
}

/// Which alive components export each interface.
fn exporters(alive: &[Compiled]) -> HashMap<String, Vec<usize>> {
    let mut map: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, c) in alive.iter().enumerate() {
        for iface in c.functions.iter().filter_map(|f| f.interface.as_ref()) {
            let list = map.entry(iface.clone()).or_default();
            if list.last() != Some(&i) {
                list.push(i);
            }
        }
    }
    map
}

/// The one service that exports `import`, with matching functions.
fn resolve(
    importer: &Compiled,
    import: &Import,
    exporters: &HashMap<String, Vec<usize>>,
    alive: &[Compiled],
    lost: &HashMap<String, String>,
) -> Result<String, LoadError> {
    let service = importer.name.clone();
    let interface = import.interface.clone();
    let candidates: Vec<&Compiled> = exporters
        .get(&import.interface)
        .map(|list| list.iter().map(|&i| &alive[i]).filter(|c| c.name != importer.name).collect())
        .unwrap_or_default();
    let exporter = match candidates.as_slice() {
        [one] => *one,
        [] => {
            return Err(match lost.get(&import.interface) {
                Some(exporter) => LoadError::ExporterFailed { service, interface, exporter: exporter.clone() },
                None => LoadError::NoExporter { service, interface },
            });
        }
        many => {
            let exporters = join(many.iter().map(|c| c.name.clone()));
            return Err(LoadError::ManyExporters { service, interface, exporters });
        }
    };
    if !importer.manifest.calls.contains(&exporter.name) {
        return Err(LoadError::CallNotGranted {
            service,
            interface,
            exporter: exporter.name.clone(),
            manifest: crate::manifest::Manifest::path_for(&importer.path),
        });
    }
    for (name, wanted) in &import.functions {
        let found =
            exporter.functions.iter().find(|f| f.interface.as_deref() == Some(&import.interface) && f.name == *name);
        let differs = |reason: String| LoadError::Mismatch {
            service: service.clone(),
            interface: interface.clone(),
            exporter: exporter.name.clone(),
            reason,
        };
        let Some(found) = found else {
            return Err(differs(format!("it has no function {name}")));
        };
        let params: Vec<_> = wanted.params().map(|(_, t)| t).collect();
        let results: Vec<_> = wanted.results().collect();
        if !same_types(found, &params, &results) {
            return Err(differs(format!("{name} has a different signature")));
        }
    }
    Ok(exporter.name.clone())
}

fn same_types(
    f: &Function,
    params: &[wasmtime::component::types::Type],
    results: &[wasmtime::component::types::Type],
) -> bool {
    f.params.len() == params.len()
        && f.params.iter().zip(params).all(|((_, a), b)| a == b)
        && f.results.as_slice() == results
}

/// The host linker plus, for every interface some service imports, host
/// functions that forward to its exporter in the caller's scope.
///
/// An interface that cannot be defined is logged and left out; its importers
/// then fail `instantiate_pre` with the linker's own message.
fn forwarding_linker(
    runtime: &Runtime,
    alive: &[Compiled],
    exporters: &HashMap<String, Vec<usize>>,
) -> Linker<ScopeState> {
    let mut linker = runtime.linker().clone();
    let mut imported: Vec<&str> = alive.iter().flat_map(|c| c.imports.iter().map(|i| i.interface.as_str())).collect();
    imported.sort_unstable();
    imported.dedup();
    for interface in imported {
        let Some(&[exporter]) = exporters.get(interface).map(Vec::as_slice) else { continue };
        if let Err(e) = forward(&mut linker, interface, &alive[exporter]) {
            tracing::warn!("cannot link {interface} to {}: {}", alive[exporter].name, chain(&e));
        }
    }
    linker
}

/// Defines each function of `interface` as a call into `exporter`.
fn forward(linker: &mut Linker<ScopeState>, interface: &str, exporter: &Compiled) -> wasmtime::Result<()> {
    let mut instance = linker.instance(interface)?;
    for f in exporter.functions.iter().filter(|f| f.interface.as_deref() == Some(interface)) {
        let service = exporter.name.clone();
        let function = f.name.clone();
        let slot = f.slot;
        instance.func_new(&f.name, move |mut store, _ty, args: &[Val], results: &mut [Val]| {
            // The exporter is looked up in the scope's own registry snapshot,
            // so a scope never mixes versions of a service.
            let registry = Arc::clone(&store.data().registry);
            let service = registry.service(&service).map_err(wasmtime::Error::new)?;
            let index = service.code()?.functions[slot];
            // A recorded scope keeps each call between services; an
            // unrecorded one pays nothing for it.
            let by: Option<Vec<String>> = store
                .data()
                .kept
                .tape
                .as_ref()
                .map(|_| store.data().calls.frames.iter().map(ToString::to_string).collect());
            invoke::call(&mut store, Target { service, function: &function, index }, args, results)?;
            if let Some(by) = by
                && let Some(tape) = store.data_mut().kept.tape.as_mut()
                && tape.room(args.iter().chain(results.iter()).map(crate::values::size).sum())
            {
                tape.calls.push(serde_json::json!({
                    "by": by,
                    "call": format!("{}.{function}", service.name),
                    "args": args.iter().map(crate::values::to_json).collect::<Vec<_>>(),
                    "results": results.iter().map(crate::values::to_json).collect::<Vec<_>>(),
                }));
            }
            Ok(())
        })?;
    }
    Ok(())
}
