//! `GET /openapi.json`: an OpenAPI 3.1 document generated from the loaded
//! components' exported types. Each function is one `POST` operation whose
//! request body is an object of named arguments and whose `200` answer holds
//! the result; schemas are JSON Schema 2020-12, following the JSON mapping
//! of [`crate::values`].

use serde_json::{Map, Value as Json, json};
use wasmtime::component::types::Type;

use crate::registry::{Function, Registry, Service};
use crate::signature;

/// The whole document for the services in `registry`.
pub fn document(registry: &Registry) -> Json {
    let mut paths = Map::new();
    paths.insert("/services".into(), fixed("List the services, their functions and their types.", "application/json"));
    paths.insert("/openapi.json".into(), fixed("This document.", "application/json"));
    paths.insert("/healthz".into(), fixed("Liveness: 200 while the server accepts requests.", "application/json"));
    paths.insert("/readyz".into(), fixed("Readiness: 200, or 503 once the server is stopping.", "application/json"));
    paths.insert("/metrics".into(), fixed("Counters per service in the Prometheus text format.", "text/plain"));
    for service in registry.services() {
        for f in &service.functions {
            // A name exported by two interfaces has no plain route, and a
            // function the manifest does not expose has none either.
            if service.function(&f.name).is_err() || !service.manifest.http.exposes(&f.name) {
                continue;
            }
            paths.insert(format!("/services/{}/{}", service.name, f.name), json!({ "post": operation(service, f) }));
        }
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
            "schemas": {
                "Problem": problem_schema(),
            },
            "responses": {
                "Problem": {
                    "description": "The request failed; `kind` says why (see docs/http.md).",
                    "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } },
                },
            },
        },
    })
}

fn fixed(summary: &str, media: &str) -> Json {
    json!({ "get": {
        "summary": summary,
        "responses": { "200": { "description": "OK", "content": { media: { "schema": {} } } } },
    }})
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
            "responses": { "default": { "description": "Whatever the component answers." } },
        })
    };
    json!({ "get": op("Read through the component."), "post": op("Write through the component.") })
}

fn operation(service: &Service, f: &Function) -> Json {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, ty) in &f.params {
        properties.insert(name.clone(), schema(ty));
        if !matches!(ty, Type::Option(_)) {
            required.push(json!(name));
        }
    }
    let result = match f.results.as_slice() {
        [] => json!({ "type": "null" }),
        [one] => schema(one),
        many => json!({ "type": "array", "prefixItems": many.iter().map(schema).collect::<Vec<_>>() }),
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
                    "scope": { "type": "integer", "description": "The scope the call ran in." },
                    "result": result,
                    "ending": { "type": "object", "description": "How the scope ended: saved or dry-run, with the commands applied." },
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
            json!({ "oneOf": [r.err().map_or(json!({ "type": "null" }), |t| schema(&t)), refusal] })
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
    for code in ["400", "403", "404", "409", "413", "500", "503"] {
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
        }],
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

fn problem_schema() -> Json {
    let kind = json!({ "type": "string", "description": "arguments, not-found, denied, service-error, trap, limit, save, conflict, unavailable, too-large, timeout, cancelled" });
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

/// The JSON Schema of the JSON form of a WIT type (see `docs/values.md`).
pub fn schema(ty: &Type) -> Json {
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
        Type::List(l) => json!({ "type": "array", "items": schema(&l.ty()) }),
        Type::FixedLengthList(l) => {
            json!({ "type": "array", "items": schema(&l.ty()), "minItems": l.len(), "maxItems": l.len() })
        }
        Type::Map(m) => json!({
            "type": "array",
            "items": { "type": "array", "prefixItems": [schema(&m.key()), schema(&m.value())], "items": false },
        }),
        Type::Tuple(t) => {
            let items: Vec<Json> = t.types().map(|t| schema(&t)).collect();
            let n = items.len();
            json!({ "type": "array", "prefixItems": items, "items": false, "minItems": n, "maxItems": n })
        }
        Type::Record(r) => {
            let mut properties = Map::new();
            let mut required = Vec::new();
            for field in r.fields() {
                properties.insert(field.name.to_string(), schema(&field.ty));
                if !matches!(field.ty, Type::Option(_)) {
                    required.push(json!(field.name));
                }
            }
            json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false })
        }
        Type::Variant(v) => {
            let cases: Vec<Json> = v
                .cases()
                .map(|c| match &c.ty {
                    Some(t) => tagged(c.name, schema(t)),
                    None => json!({ "anyOf": [{ "const": c.name }, tagged(c.name, json!({ "type": "null" }))] }),
                })
                .collect();
            json!({ "oneOf": cases })
        }
        Type::Enum(e) => json!({ "type": "string", "enum": e.names().collect::<Vec<_>>() }),
        Type::Option(o) => json!({ "anyOf": [{ "type": "null" }, schema(&o.ty())] }),
        Type::Result(r) => {
            let side = |t: Option<Type>| t.map_or(json!({ "type": "null" }), |t| schema(&t));
            json!({ "oneOf": [tagged("ok", side(r.ok())), tagged("err", side(r.err()))] })
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

/// `{"case": payload}`, exactly one key.
fn tagged(case: &str, payload: Json) -> Json {
    json!({
        "type": "object",
        "properties": { case: payload },
        "required": [case],
        "additionalProperties": false,
    })
}
