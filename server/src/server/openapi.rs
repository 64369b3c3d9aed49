//! `GET /openapi.json`: an OpenAPI 3.1 document generated from the loaded
//! components' exported types. Each function is one `POST` operation whose
//! request body is an object of named arguments and whose `200` answer holds
//! the result; schemas are JSON Schema 2020-12, following the JSON mapping
//! of [`crate::values`].

use std::collections::HashMap;

use serde_json::{Map, Value as Json, json};
use wasmtime::component::types::Type;

use crate::names::{Named, Names};
use crate::registry::{Function, Registry, Service};
use crate::signature;
use crate::values::each_named;

/// The whole document for the services in `registry`.
pub fn document(registry: &Registry) -> Json {
    let mut paths = Map::new();
    paths.insert(
        "/services".into(),
        fixed(
            "List the services, their functions and their types.",
            "application/json",
            json!({ "$ref": "#/components/schemas/Services" }),
        ),
    );
    paths.insert(
        "/openapi.json".into(),
        fixed("This document.", "application/json", json!({ "type": "object", "required": ["openapi", "paths"] })),
    );
    paths.insert(
        "/healthz".into(),
        fixed("Liveness: 200 while the server accepts requests.", "application/json", health_schema()),
    );
    let mut readyz = fixed(
        "Readiness: 200, or 503 once the server is stopping.",
        "application/json",
        json!({ "type": "object", "properties": { "status": { "const": "ready" } }, "required": ["status"] }),
    );
    readyz["get"]["responses"]["503"] = json!({ "$ref": "#/components/responses/Problem" });
    paths.insert("/readyz".into(), readyz);
    paths.insert(
        "/metrics".into(),
        fixed("Counters per service in the Prometheus text format.", "text/plain", json!({ "type": "string" })),
    );
    let exposed = || {
        registry.services().flat_map(|service| {
            // A name exported by two interfaces has no plain route, and a
            // function the manifest does not expose has none either.
            service
                .functions
                .iter()
                .filter(|f| service.function(&f.name).is_ok() && service.manifest.http.exposes(&f.name))
                .map(move |f| (service, f))
        })
    };
    let mut schemas = Schemas::new(exposed().map(|(_, f)| f));
    for (service, f) in exposed() {
        paths.insert(
            format!("/services/{}/{}", service.name, f.name),
            json!({ "post": operation(service, f, &mut schemas) }),
        );
    }
    for service in registry.services() {
        if let Some(prefix) = &service.manifest.http.prefix {
            paths.insert(prefix.clone(), mounted(service));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Sluice services",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every function a loaded service exposes ([http] expose in its manifest). Each call runs in its own scope: \
                the call, then save (all queued commands or none).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.finish(),
            "responses": {
                "Problem": {
                    "description": "The request failed; `kind` says why (see docs/http.md).",
                    "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } },
                },
            },
        },
    })
}

fn fixed(summary: &str, media: &str, schema: Json) -> Json {
    json!({ "get": {
        "summary": summary,
        "responses": { "200": { "description": "OK", "content": { media: { "schema": schema } } } },
    }})
}

fn health_schema() -> Json {
    json!({
        "type": "object",
        "properties": {
            "status": { "const": "ok" },
            "services": { "type": "integer", "format": "int64", "minimum": 0, "description": "Services loaded." },
            "failures": { "type": "integer", "format": "int64", "minimum": 0, "description": "Files that failed to load." },
        },
        "required": ["status", "services", "failures"],
    })
}

/// `GET /services`: what `signature::service_json` writes.
fn services_schema() -> Json {
    let strings = json!({ "type": "array", "items": { "type": "string" } });
    let function = json!({
        "type": "object",
        "properties": {
            "interface": { "type": ["string", "null"] },
            "name": { "type": "string" },
            "params": { "type": "array", "items": {
                "type": "object",
                "properties": { "name": { "type": "string" }, "type": { "type": "string", "description": "WIT, types named as the author named them" } },
                "required": ["name", "type"],
            }},
            "results": strings,
            "signature": { "type": "string" },
            "types": { "type": "array", "description": "The named types the signature uses.", "items": {
                "type": "object",
                "properties": {
                    "name": { "type": "string" },
                    "interface": { "type": "string", "description": "Where the type is defined." },
                    "type": { "type": "string", "description": "The type written out." },
                },
                "required": ["name", "interface", "type"],
            }},
            "exposed": { "type": "boolean" },
        },
        "required": ["name", "params", "results", "signature", "types", "exposed"],
    });
    let service = json!({
        "type": "object",
        "properties": {
            "name": { "type": "string" },
            "path": { "type": "string" },
            "sha256": {
                "type": "string",
                "pattern": "^sha256:[0-9a-f]{64}$",
                "description": "The SHA-256 of the component file: which version this host runs.",
            },
            "code": { "type": "string" },
            "functions": { "type": "array", "items": function },
            "calls": { "type": "array", "items": {
                "type": "object",
                "properties": { "interface": { "type": "string" }, "service": { "type": "string" } },
            }},
            "hooks": strings,
            "grants": strings,
            "limits": {
                "type": "object",
                "description": "Each limit of docs/security.md; null for one not set (fuel, on a host that meters none).",
                "additionalProperties": { "type": ["integer", "null"], "format": "int64" },
            },
            "http-prefix": { "type": ["string", "null"] },
        },
        "required": ["name", "sha256", "functions", "grants", "limits"],
    });
    json!({
        "type": "object",
        "properties": {
            "services": { "type": "array", "items": service },
            "failures": { "type": "array", "items": {
                "type": "object",
                "properties": {
                    "path": { "type": "string" },
                    "error": { "type": "string" },
                    "kept-previous": { "type": "boolean" },
                },
                "required": ["path", "error", "kept-previous"],
            }},
        },
        "required": ["services", "failures"],
    })
}

fn mounted(service: &Service) -> Json {
    let description = format!(
        "Handled by the wasi:http component `{}`, with the prefix removed from the path it sees; \
         its scope is saved when it answers below 400.",
        service.name
    );
    let op = |summary: &str| {
        json!({
            "summary": summary,
            "description": description,
            "tags": [service.name],
            "parameters": [idempotency_key()],
            "responses": { "default": { "description": "Whatever the component answers." } },
        })
    };
    // Every method the host passes to a component (`mount::MOUNT_METHODS`);
    // it answers the others 405 itself.
    json!({
        "get": op("Read through the component."),
        "head": op("Read the headers of an answer of the component."),
        "post": op("Write through the component."),
        "put": op("Write through the component."),
        "patch": op("Write through the component."),
        "delete": op("Write through the component."),
        "options": op("Ask the component what it takes."),
    })
}

fn operation(service: &Service, f: &Function, schemas: &mut Schemas) -> Json {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (i, (name, ty)) in f.params.iter().enumerate() {
        properties.insert(name.clone(), schemas.schema(ty, f.names.param(i)));
        if !matches!(ty, Type::Option(_)) {
            required.push(json!(name));
        }
    }
    let result = match f.results.as_slice() {
        [] => json!({ "type": "null" }),
        [one] => schemas.schema(one, f.names.result(0)),
        many => json!({
            "type": "array",
            "prefixItems": many.iter().enumerate().map(|(i, t)| schemas.schema(t, f.names.result(i))).collect::<Vec<_>>(),
        }),
    };
    let problem = json!({ "$ref": "#/components/responses/Problem" });
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({
            "description": "Called and saved (or, with dry_run, saved and rolled back).",
            "content": { "application/json": { "schema": {
                "type": "object",
                "properties": {
                    "scope": { "type": "string", "format": "uuid", "description": "The scope the call ran in (also the x-sluice-scope header)." },
                    "result": result,
                    "ending": {
                        "type": "object",
                        "description": "How the scope ended, and on which run of it. A host served with --reports adds the save report: each applied command with its outcome.",
                        "properties": {
                            "status": { "type": "string", "enum": ["saved", "dry-run"] },
                            "attempt": { "type": "integer", "minimum": 1 },
                        },
                        "required": ["status", "attempt"],
                    },
                },
                "required": ["scope", "result", "ending"],
            }}},
        }),
    );
    // Any service in the scope may refuse the save from its `on-save`.
    let refusal = json!({
        "type": "object",
        "properties": { "code": { "type": "string" }, "message": { "type": "string" } },
        "required": ["code", "message"],
    });
    let value = match f.results.first() {
        Some(Type::Result(r)) => {
            let err = r.err().map_or(json!({ "type": "null" }), |t| schemas.schema(&t, f.names.result(0).part(1)));
            json!({ "oneOf": [err, refusal] })
        }
        _ => refusal,
    };
    responses.insert(
        "422".into(),
        json!({
            "description": "The service returned its error, or an on-save hook refused the save; nothing was applied.",
            "content": { "application/problem+json": { "schema": {
                "allOf": [
                    { "$ref": "#/components/schemas/Problem" },
                    { "type": "object", "properties": { "value": value.clone(), "error": { "type": "object", "properties": { "value": value } } } },
                ],
            }}},
        }),
    );
    // Every status the host answers a typed call with (docs/http.md's
    // table), each a problem document: 408 for a body that stalled, 500
    // for a trap or a save left partly applied.
    for code in ["400", "403", "404", "408", "409", "413", "500", "503"] {
        responses.insert(code.into(), problem.clone());
    }
    json!({
        "operationId": format!("{}.{}", service.name, f.name),
        "summary": signature::signature(f),
        "tags": [service.name],
        "parameters": [{
            "name": "dry_run",
            "in": "query",
            "required": false,
            "description": "Run the save, every round of it, then roll it back and answer with what it would apply.",
            "schema": { "type": "boolean", "default": false },
        }, idempotency_key()],
        "requestBody": {
            "required": !required.is_empty(),
            "content": { "application/json": { "schema": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false,
            }}},
        },
        "responses": responses,
    })
}

/// The `Idempotency-Key` header every route that runs a scope takes
/// (docs/http.md, *Idempotent requests*).
pub(super) fn idempotency_key() -> Json {
    json!({
        "name": "Idempotency-Key",
        "in": "header",
        "required": false,
        "description": "Run the request once: a repeat with the same key is answered with what the first saved (Idempotent-Replayed: true), 409 while the first runs, 422 for another request under the key.",
        "schema": { "type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$" },
    })
}

fn problem_schema() -> Json {
    let kind = json!({ "type": "string", "description": "arguments, not-found, method-not-allowed, denied, service-error, trap, limit, save, conflict, unavailable, partially-applied, too-large, timeout, cancelled" });
    json!({
        "type": "object",
        "description": "An RFC 9457 problem; `kind` and the cause's fields are extension members, repeated under `error` for clients of the earlier form.",
        "properties": {
            "type": { "type": "string", "format": "uri", "description": "urn:sluice:problem:KIND" },
            "title": { "type": "string" },
            "status": { "type": "integer" },
            "detail": { "type": "string", "description": "What went wrong, naming the service and the cause." },
            "kind": kind,
            "error": {
                "type": "object",
                "properties": { "kind": kind, "message": { "type": "string" } },
                "required": ["kind", "message"],
            },
        },
        "required": ["type", "title", "status", "detail", "kind"],
    })
}

/// The named types of the document, each once under `components/schemas`:
/// by its WIT name, or, where two different types share a name, by the
/// name qualified with where it is defined (`acme.orders.orders.error`).
struct Schemas {
    /// `Named::qualified` to its key under `components/schemas`.
    keys: HashMap<String, String>,
    defs: Map<String, Json>,
}

impl Schemas {
    /// Keys for every named type the `functions` use.
    fn new<'a>(functions: impl Iterator<Item = &'a Function>) -> Schemas {
        let mut by_name: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let mut note = |ty: &Type, names: &Names| {
            each_named(ty, names, &mut |_, _, named: &Named| {
                let same = by_name.entry(named.name.clone()).or_default();
                let qualified = named.qualified();
                if !same.iter().any(|(q, _)| *q == qualified) {
                    same.push((qualified, format!("{}.{}", named.owner, named.name)));
                }
            });
        };
        for f in functions {
            for (i, (_, t)) in f.params.iter().enumerate() {
                note(t, f.names.param(i));
            }
            for (i, t) in f.results.iter().enumerate() {
                note(t, f.names.result(i));
            }
        }
        let key_safe = |s: &str| {
            s.chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '.' })
                .collect::<String>()
        };
        let mut keys = HashMap::new();
        for (name, same) in by_name {
            // WIT names are kebab-case, so none is `Problem` or `Services`.
            let clash = same.len() > 1;
            for (qualified, long) in same {
                keys.insert(qualified, if clash { key_safe(&long) } else { key_safe(&name) });
            }
        }
        Schemas { keys, defs: Map::new() }
    }

    /// `components/schemas`: the named types and the fixed schemas.
    fn finish(mut self) -> Json {
        self.defs.insert("Problem".into(), problem_schema());
        self.defs.insert("Services".into(), services_schema());
        Json::Object(self.defs)
    }

    /// The JSON Schema of the JSON form of a WIT type (see `docs/values.md`):
    /// a `$ref` for a named type, whose schema is added once.
    fn schema(&mut self, ty: &Type, names: &Names) -> Json {
        let Some(named) = names.named() else { return self.structure(ty, names) };
        let Some(key) = self.keys.get(&named.qualified()).cloned() else { return self.structure(ty, names) };
        if !self.defs.contains_key(&key) {
            // Taken before the parts are, so a part that names it again refers to it.
            self.defs.insert(key.clone(), Json::Null);
            let mut def = self.structure(ty, names);
            def["title"] = json!(named.name);
            self.defs.insert(key.clone(), def);
        }
        json!({ "$ref": format!("#/components/schemas/{key}") })
    }

    /// The schema of the type itself, its parts by [`Schemas::schema`].
    fn structure(&mut self, ty: &Type, names: &Names) -> Json {
        // OpenAPI's formats: int32 for what fits one, int64 for the rest (u64
        // keeps its range, which is past int64's: the minimum and maximum say it).
        let int = |min: i128, max: i128, format: &str| json!({ "type": "integer", "format": format, "minimum": min, "maximum": max });
        match ty {
            Type::Bool => json!({ "type": "boolean" }),
            Type::S8 => int(i8::MIN.into(), i8::MAX.into(), "int32"),
            Type::U8 => int(0, u8::MAX.into(), "int32"),
            Type::S16 => int(i16::MIN.into(), i16::MAX.into(), "int32"),
            Type::U16 => int(0, u16::MAX.into(), "int32"),
            Type::S32 => int(i32::MIN.into(), i32::MAX.into(), "int32"),
            Type::U32 => int(0, u32::MAX.into(), "int64"),
            Type::S64 => int(i64::MIN.into(), i64::MAX.into(), "int64"),
            Type::U64 => int(0, u64::MAX.into(), "int64"),
            Type::Float32 => {
                json!({ "type": ["number", "null"], "format": "float", "description": "null stands for NaN or an infinity" })
            }
            Type::Float64 => {
                json!({ "type": ["number", "null"], "format": "double", "description": "null stands for NaN or an infinity" })
            }
            Type::Char => json!({ "type": "string", "minLength": 1, "maxLength": 1 }),
            Type::String => json!({ "type": "string" }),
            Type::List(l) => json!({ "type": "array", "items": self.schema(&l.ty(), names.part(0)) }),
            Type::FixedLengthList(l) => {
                json!({ "type": "array", "items": self.schema(&l.ty(), names.part(0)), "minItems": l.len(), "maxItems": l.len() })
            }
            Type::Map(m) => json!({
                "type": "array",
                "items": { "type": "array", "prefixItems": [self.schema(&m.key(), names.part(0)), self.schema(&m.value(), names.part(1))], "items": false },
            }),
            Type::Tuple(t) => {
                let items: Vec<Json> = t.types().enumerate().map(|(i, t)| self.schema(&t, names.part(i))).collect();
                let n = items.len();
                json!({ "type": "array", "prefixItems": items, "items": false, "minItems": n, "maxItems": n })
            }
            Type::Record(r) => {
                let mut properties = Map::new();
                let mut required = Vec::new();
                for (i, field) in r.fields().enumerate() {
                    properties.insert(field.name.to_string(), self.schema(&field.ty, names.part(i)));
                    if !matches!(field.ty, Type::Option(_)) {
                        required.push(json!(field.name));
                    }
                }
                json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false })
            }
            Type::Variant(v) => {
                let cases: Vec<Json> = v
                    .cases()
                    .enumerate()
                    .map(|(i, c)| match &c.ty {
                        Some(t) => tagged(c.name, self.schema(t, names.part(i))),
                        None => json!({ "anyOf": [{ "const": c.name }, tagged(c.name, json!({ "type": "null" }))] }),
                    })
                    .collect();
                json!({ "oneOf": cases })
            }
            Type::Enum(e) => json!({ "type": "string", "enum": e.names().collect::<Vec<_>>() }),
            Type::Option(o) => json!({ "anyOf": [{ "type": "null" }, self.schema(&o.ty(), names.part(0))] }),
            Type::Result(r) => {
                let mut side =
                    |t: Option<Type>, i: usize| t.map_or(json!({ "type": "null" }), |t| self.schema(&t, names.part(i)));
                let (ok, err) = (side(r.ok(), 0), side(r.err(), 1));
                json!({ "oneOf": [tagged("ok", ok), tagged("err", err)] })
            }
            Type::Flags(f) => json!({
                "type": "array",
                "items": { "type": "string", "enum": f.names().collect::<Vec<_>>() },
                "uniqueItems": true,
            }),
            Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
                json!({ "description": "a handle; it cannot be passed as JSON" })
            }
        }
    }
}

/// `{"case": payload}`, exactly one key.
fn tagged(case: &str, payload: Json) -> Json {
    json!({
        "type": "object",
        "properties": { case: payload },
        "required": [case],
        "additionalProperties": false,
    })
}
