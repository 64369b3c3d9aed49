//! How services and functions are shown to people and programs:
//! `place(customer: string) -> result<…>`, and a service as JSON.

use serde_json::json;

use crate::registry::{Function, Service};
use wasmtime::component::types::Type;

use crate::names::Names;
use crate::values::{each_named, type_name, written_out};

/// The parameter list: `customer: string, lines: list<line-item>`, with
/// types named as their author named them.
pub fn params(f: &Function) -> String {
    f.params
        .iter()
        .enumerate()
        .map(|(i, (n, t))| format!("{n}: {}", type_name(t, f.names.param(i))))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The result types, as [`params`] writes types.
pub fn results(f: &Function) -> Vec<String> {
    f.results.iter().enumerate().map(|(i, t)| type_name(t, f.names.result(i))).collect()
}

/// The whole signature: `name(params) -> result`.
pub fn signature(f: &Function) -> String {
    let results = results(f);
    match results.as_slice() {
        [] => format!("{}({})", f.name, params(f)),
        [one] => format!("{}({}) -> {one}", f.name, params(f)),
        many => format!("{}({}) -> ({})", f.name, params(f), many.join(", ")),
    }
}

/// Every named type a function's signature uses, with what it is
/// (`{"name": "line-item", "interface": "acme:orders/orders", "type": "record { sku: string, quantity: u32 }"}`),
/// so a reader of the signature can look its names up.
pub fn types(f: &Function) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    let mut found = Vec::new();
    let mut visit = |ty: &Type, names: &Names| {
        each_named(ty, names, &mut |ty, names, named: &crate::names::Named| {
            let key = named.qualified();
            if !seen.contains(&key) {
                seen.push(key);
                found.push(json!({ "name": named.name, "interface": named.owner, "type": written_out(ty, names) }));
            }
        })
    };
    for (i, (_, t)) in f.params.iter().enumerate() {
        visit(t, f.names.param(i));
    }
    for (i, t) in f.results.iter().enumerate() {
        visit(t, f.names.result(i));
    }
    found
}

/// A service as JSON, for `sluice list --json` and `GET /services`: its
/// functions with their types, calls, hooks, grants and limits.
pub fn service_json(svc: &Service) -> serde_json::Value {
    let functions: Vec<_> = svc
        .functions
        .iter()
        .map(|f| {
            json!({
                "interface": f.interface,
                "name": f.name,
                "params": f.params.iter().enumerate()
                    .map(|(i, (n, t))| json!({ "name": n, "type": type_name(t, f.names.param(i)) }))
                    .collect::<Vec<_>>(),
                "results": results(f),
                "signature": signature(f),
                "types": types(f),
                "exposed": svc.manifest.http.exposes(&f.name),
            })
        })
        .collect();
    let calls: Vec<_> = svc.calls.iter().map(|(i, e)| json!({ "interface": i, "service": e })).collect();
    let l = &svc.limits;
    let limits = json!({
        "deadline-ms": l.deadline.as_millis() as u64,
        "fuel": l.fuel,
        "memory-mb": l.memory_bytes >> 20,
        "commands": l.commands,
        "command-bytes": l.command_bytes,
        "result-bytes": l.result_bytes,
        "save-rounds": l.save_rounds,
    });
    let h = &svc.hooks;
    let hooks: Vec<&str> = [
        ("init", h.init),
        ("on-save", h.on_save),
        ("on-finally", h.on_finally),
        ("dispose", h.dispose),
        ("http", h.http),
    ]
    .into_iter()
    .filter_map(|(n, present)| present.then_some(n))
    .collect();
    json!({
        "name": svc.name,
        "path": svc.path,
        "sha256": svc.sha256,
        "code": svc.code,
        "functions": functions,
        "calls": calls,
        "hooks": hooks,
        "grants": svc.manifest.summary(),
        "limits": limits,
        "http-prefix": svc.manifest.http.prefix,
    })
}
