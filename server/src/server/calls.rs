//! `POST /services/{service}/{function}` (one scope: call, then save) and
//! `GET /services`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::keyed;
use super::metrics::Outcome;
use super::trace::Trace;
use super::{App, Problem, SCOPE_HEADER, scope_header};
use crate::call::{self, CallReport, Ending, Mode};
use crate::idempotent;
use crate::scope::{Cause, Scope, ScopeError};
use crate::signature;

/// `GET /services`: every loaded service as `sluice list --json` shows it,
/// and the files that failed to load.
pub(super) async fn list(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let registry = app.host.registry();
    let services: Vec<_> = registry.services().map(|s| signature::service_json(s)).collect();
    let failures: Vec<_> = registry
        .failures()
        .iter()
        .map(|f| json!({ "path": f.path, "error": f.error.to_string(), "kept-previous": f.kept_previous }))
        .collect();
    Json(json!({ "services": services, "failures": failures }))
}

/// `POST /services/{service}/{function}[?dry_run=true]` with a JSON object
/// of named arguments.
pub(super) async fn call(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    Extension(trace): Extension<Trace>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // A path or query the extractors cannot read (a name that is not
    // UTF-8 once decoded) is the client's error, told as a problem.
    let (Path((service, function)), Query(query)) = match (path, query) {
        (Ok(path), Ok(query)) => (path, query),
        (Err(e), _) => return Problem::new(StatusCode::BAD_REQUEST, "arguments", e.body_text()).into_response(),
        (_, Err(e)) => return Problem::new(StatusCode::BAD_REQUEST, "arguments", e.body_text()).into_response(),
    };
    match run(&app, &service, &function, &query, &headers, body, &trace).await {
        Ok(response) | Err(response) => response,
    }
}

async fn run(
    app: &Arc<App>,
    service: &str,
    function: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    trace: &Trace,
) -> Result<Response, Response> {
    let registry = app.host.registry();
    // Resolved once: every run of the scope calls it as it is.
    let callee = registry.callee(service, function).map_err(|e| Problem::from(e).into_response())?;
    let (svc, func) = (callee.service(), callee.function());
    // Closed by default: only what the manifest exposes is a route. Other
    // services may still call the function inside a scope.
    if !svc.manifest.http.exposes(&func.name) {
        let message = format!(
            "{}.{} is not exposed over HTTP; expose it in {}: [http] expose = [{:?}]",
            svc.name,
            func.name,
            crate::manifest::Manifest::path_for(&svc.path).display(),
            func.name
        );
        return Err(Problem::new(StatusCode::NOT_FOUND, "not-found", message).into_response());
    }
    let mode = mode(query).map_err(IntoResponse::into_response)?;
    let body = body.map_err(|e| body_problem(&format!("{}.{}", svc.name, func.name), &e).into_response())?;
    let json: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            let message = format!("{}.{}: the request body is not JSON: {e}", svc.name, func.name);
            Problem::new(StatusCode::BAD_REQUEST, "arguments", message).with("path", "$").into_response()
        })?
    };
    let args = crate::values::from_named(&func.params, &func.names, &json)
        .map_err(|e| Problem::arguments(&svc.name, &func.name, &e).into_response())?;
    let key = keyed::key(headers, &format!("{}.{}", svc.name, func.name)).map_err(IntoResponse::into_response)?;

    let permit = app.turn().await?;
    let started = Instant::now();
    let (name, fname) = (svc.name.clone(), func.name.clone());
    let channels = Arc::clone(&app.host.channels);
    let scope = Scope::new(Arc::clone(&registry), channels);
    let guard = super::CancelOnDrop::new(&scope);
    // Every log line of the scope carries its id, the service and the trace.
    let span = sluice_core::work_span!("scope", scope = %scope.id(), service = %name, trace_id = %trace.trace_id);
    let recording = app.options.record.clone();
    let run = callee.clone();
    let host = Arc::clone(&app.host);
    let joined = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _entered = span.enter();
        let work = |scope: Scope| match recording.filter(crate::server::Recording::sampled) {
            Some(recording) => {
                let scope_id = scope.id();
                let (ran, case) = crate::case::record(scope, &name, &fname, &args, mode, &recording.rules);
                let file = recording.dir.join(format!("{scope_id}.json"));
                match case.and_then(|case| crate::case::diff::write(&file, &case)) {
                    Ok(()) => tracing::info!("recorded the scope as {}", file.display()),
                    Err(e) => tracing::warn!("the scope could not be recorded: {e}"),
                }
                ran
            }
            None => call::run_callee(scope, &run, &args, mode),
        };
        let fingerprint = || idempotent::call_fingerprint(&name, &fname, &args);
        let saved = |ran: &Result<CallReport, ScopeError>| matches!(ran, Ok(r) if matches!(r.ending, Ending::Saved(_)));
        idempotent::run(&host, key.as_deref(), fingerprint, scope, work, saved)
    })
    .await;
    guard.disarm();
    let outcome = joined.unwrap_or_else(|e| {
        Ok(Err(ScopeError::Failed {
            service: service.to_string(),
            function: function.to_string(),
            reason: format!("the host thread running the scope failed: {e}"),
            cause: Cause::Other,
        }))
    });
    let (response, counted) = match outcome {
        Ok(outcome) => answer(&svc.name, &func.name, outcome, app),
        Err(unrun) => keyed::answer(&format!("{}.{}", svc.name, func.name), unrun),
    };
    app.answered(&svc.name, &func.name, started, &response, &counted, trace);
    Ok(response)
}

/// The answer for a finished scope, and how to count it.
fn answer(service: &str, function: &str, outcome: Result<CallReport, ScopeError>, app: &App) -> (Response, Outcome) {
    let report = match outcome {
        Ok(report) => report,
        Err(e) => return app.failed(service, e),
    };
    let body = if app.options.reports { report.to_json() } else { report.to_public_json() };
    let (mut response, outcome) = match &report.ending {
        Ending::Saved(saved) => {
            app.saved(service, saved);
            ((StatusCode::OK, Json(body)).into_response(), Outcome::Ok)
        }
        Ending::DryRun(_) => ((StatusCode::OK, Json(body)).into_response(), Outcome::Ok),
        Ending::Denied { denials, .. } => {
            let message = format!("{service}.{function} was denied: {}; nothing was applied", denials.join("; "));
            let problem = Problem::new(StatusCode::FORBIDDEN, "denied", message)
                .with("service", service)
                .with("denials", json!(denials))
                .with("scope", body["scope"].clone());
            (problem.into_response(), Outcome::Error("denied"))
        }
        Ending::Discarded { .. } => {
            let value = body["result"].get("err").cloned().unwrap_or_default();
            let message = format!("{service}.{function} returned an error; nothing was applied");
            let problem = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "service-error", message)
                .with("service", service)
                .with("value", value)
                .with("scope", body["scope"].clone());
            (problem.into_response(), Outcome::Error("service-error"))
        }
    };
    response.headers_mut().insert(SCOPE_HEADER, scope_header(report.scope));
    (response, outcome)
}

fn mode(query: &HashMap<String, String>) -> Result<Mode, Problem> {
    if let Some(unknown) = query.keys().find(|k| *k != "dry_run") {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "arguments",
            format!("unknown query parameter {unknown:?}; the only one is dry_run"),
        ));
    }
    match query.get("dry_run").map(String::as_str) {
        None | Some("false" | "0") => Ok(Mode::Save),
        Some("true" | "1" | "") => Ok(Mode::DryRun),
        Some(other) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "arguments",
            format!("dry_run must be true or false, got {other:?}"),
        )),
    }
}

/// A body for `target` that could not be read: too large (413) or broken.
fn body_problem(target: &str, e: &BytesRejection) -> Problem {
    if super::stalled(e) {
        let message = format!("{target}: the request body stopped arriving (a stalled client); nothing was run");
        return Problem::new(StatusCode::REQUEST_TIMEOUT, "timeout", message);
    }
    let status = e.status();
    let kind = if status == StatusCode::PAYLOAD_TOO_LARGE { "too-large" } else { "arguments" };
    Problem::new(status, kind, format!("{target}: cannot read the request body: {}", e.body_text()))
}
