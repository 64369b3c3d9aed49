//! How services and functions are shown to people and programs:
//! `place(customer: string) -> result<…>`, and a service as JSON.

use serde_json::json;

use crate::registry::{Function, Service};
use crate::values::type_name;

/// The parameter list: `customer: string, quantity: u32`.
pub fn params(f: &Function) -> String {
    f.params.iter().map(|(n, t)| format!("{n}: {}", type_name(t))).collect::<Vec<_>>().join(", ")
}

/// The whole signature: `name(params) -> result`.
pub fn signature(f: &Function) -> String {
    let results = f.results.iter().map(type_name).collect::<Vec<_>>();
    match results.as_slice() {
        [] => format!("{}({})", f.name, params(f)),
        [one] => format!("{}({}) -> {one}", f.name, params(f)),
        many => format!("{}({}) -> ({})", f.name, params(f), many.join(", ")),
    }
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
                "params": f.params.iter().map(|(n, t)| json!({ "name": n, "type": type_name(t) })).collect::<Vec<_>>(),
                "results": f.results.iter().map(type_name).collect::<Vec<_>>(),
                "signature": signature(f),
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
    .filter_map(|(n, i)| i.map(|_| n))
    .collect();
    json!({
        "name": svc.name,
        "path": svc.path,
        "code": svc.code,
        "functions": functions,
        "calls": calls,
        "hooks": hooks,
        "grants": svc.manifest.summary(),
        "limits": limits,
        "http-prefix": svc.manifest.http.prefix,
    })
}
