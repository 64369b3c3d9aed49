//! `wasi:http` components, mounted under the `http.prefix` of their
//! manifests. A request under a prefix runs the component's
//! `incoming-handler` in a new scope, with the prefix taken off the path it
//! sees (and given in `x-forwarded-prefix`). The response is read in full
//! while the component writes it; then the scope ends by the save rule of
//! [`Scope::finish`] (saved below 400, discarded at 400 or more or after a
//! denied grant), and only then is the answer sent, so a client never sees
//! a success whose save failed or was refused.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use http_body_util::Full;

use super::keyed;
use super::metrics::Outcome;
use super::trace::{TRACEPARENT, Trace};
use super::{App, Problem, SCOPE_HEADER};
use crate::idempotent;
use crate::registry::Service;
use crate::scope::{Answer, Ending, HttpReply, Mode, Scope};

/// The methods a request to a mounted component may have, as its OpenAPI
/// operations list them.
pub(super) const MOUNT_METHODS: [Method; 7] =
    [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];

/// The fallback route: a mounted component's prefix, or 404.
pub(super) async fn handle(State(app): State<Arc<App>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let registry = app.host.registry();
    let Some(service) = registry.mounted(&path).cloned() else {
        let message = format!("no route {} {path}; the routes are listed in /openapi.json", request.method());
        return Problem::new(StatusCode::NOT_FOUND, "not-found", message).into_response();
    };
    // Methods a mounted component may take (its OpenAPI operations); the
    // host answers the others (TRACE, CONNECT, any extension) itself.
    if !MOUNT_METHODS.contains(request.method()) {
        let message = format!(
            "{} is not a method of {path} (the component {} takes {}); the Allow header lists them",
            request.method(),
            service.name,
            MOUNT_METHODS.iter().map(Method::as_str).collect::<Vec<_>>().join(", ")
        );
        let mut response = Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", message).into_response();
        let allow = MOUNT_METHODS.iter().map(Method::as_str).collect::<Vec<_>>().join(",");
        if let Ok(value) = HeaderValue::from_str(&allow) {
            response.headers_mut().insert(header::ALLOW, value);
        }
        return response;
    }
    let prefix = service.manifest.http.prefix.clone().unwrap_or_default();
    let (mut parts, body) = request.into_parts();
    // The caller's trace continues into the component's request as ours.
    let trace = parts.extensions.get::<Trace>().cloned().unwrap_or_else(|| Trace::continue_from(&parts.headers));
    parts.headers.insert(TRACEPARENT, trace.header());
    let bytes = match axum::body::to_bytes(body, app.options.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(e) if super::stalled(&e) => {
            let message =
                format!("{}: the request body stopped arriving (a stalled client); nothing was run", service.name);
            return Problem::new(StatusCode::REQUEST_TIMEOUT, "timeout", message).into_response();
        }
        Err(e) => {
            let message = format!(
                "{}: cannot read the request body (at most {} bytes): {e}",
                service.name, app.options.max_body_bytes
            );
            return Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", message).into_response();
        }
    };
    let rest = match &path[prefix.len()..] {
        "" => "/",
        rest => rest,
    };
    let target = match parts.uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    parts.uri = match target.parse::<Uri>() {
        Ok(uri) => uri,
        Err(e) => {
            let message = format!("{}: bad path {target:?}: {e}", service.name);
            return Problem::new(StatusCode::BAD_REQUEST, "arguments", message).into_response();
        }
    };
    if let Ok(value) = HeaderValue::from_str(&prefix) {
        parts.headers.insert("x-forwarded-prefix", value);
    }
    parts.headers.entry(header::HOST).or_insert(HeaderValue::from_static("localhost"));
    let key = match keyed::key(&parts.headers, &service.name) {
        Ok(key) => key,
        Err(problem) => return problem.into_response(),
    };
    // The log line names the method with the path: `GET /proxy/`.
    let what = format!("{} {path}", parts.method);
    let request = (parts, bytes);

    let permit = match app.turn().await {
        Ok(permit) => permit,
        Err(response) => return response,
    };
    let started = Instant::now();
    let runtime = tokio::runtime::Handle::current();
    let name = service.name.clone();
    let app2 = Arc::clone(&app);
    let scope = Scope::new(registry, Arc::clone(&app.host.channels));
    let guard = super::CancelOnDrop::new(&scope);
    let span = sluice_core::work_span!("scope", scope = %scope.id(), service = %name, trace_id = %trace.trace_id);
    let joined = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _entered = span.enter();
        let work = |scope: Scope| run(scope, &service, &request, &runtime, &app2);
        let saved = |(_, outcome): &(Response, Outcome)| matches!(outcome, Outcome::Ok);
        idempotent::run(&app2.host, key.as_deref(), || fingerprint(&request), scope, work, saved)
            .unwrap_or_else(|unrun| keyed::answer(&service.name, unrun))
    })
    .await;
    guard.disarm();
    let (response, outcome) = joined.unwrap_or_else(|e| {
        let problem =
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "trap", format!("{name}: the host thread failed: {e}"));
        (problem.into_response(), Outcome::Error("trap"))
    });
    app.answered(&name, &what, started, &response, &outcome, &trace);
    response
}

/// One request, in a scope that runs again when its save is a conflict
/// ([`Scope::run`]): each run gets the same request and a new response, and
/// only the saved run's response is sent.
fn run(
    scope: Scope,
    service: &Arc<Service>,
    (parts, bytes): &(hyper::http::request::Parts, Bytes),
    runtime: &tokio::runtime::Handle,
    app: &App,
) -> (Response, Outcome) {
    let name = &service.name;
    let recording = app.options.record.as_ref().filter(|r| r.sampled());
    let channels = Arc::clone(scope.channels());
    let mut tape = None;
    let ran = scope.run(|scope| {
        if recording.is_some() {
            scope.record();
        }
        let request = hyper::Request::from_parts(parts.clone(), Full::new(bytes.clone()));
        let served = scope.serve_http(service, request, runtime);
        let id = scope.id();
        let result = match served {
            Ok(Ok(answer)) => {
                scope.finish(Answer::Http { service: name, reply: &answer }, Mode::Save).map(|e| Ok((answer, e)))
            }
            Ok(Err(message)) => Ok(Err(message)),
            Err(e) => Err(e),
        };
        tape = recording.map(|_| scope.take_tape());
        result.map(|done| done.map(|(answer, ending)| (id, answer, ending)))
    });
    if let (Some(recording), Some(tape)) = (recording, tape) {
        let outcome = match &ran {
            Ok(Ok((_, answer, ending))) => Ok(Ok((answer, ending))),
            Ok(Err(message)) => Ok(Err(message.as_str())),
            Err(e) => Err(e),
        };
        let expect = crate::case::http::expected(outcome);
        let call = crate::case::http::HttpCall::new(name, parts, bytes);
        let file = recording.dir.join(format!("{}.json", uuid::Uuid::now_v7()));
        match crate::case::http::record(&channels, call, tape, expect, &recording.rules)
            .and_then(|case| crate::case::diff::write(&file, &case))
        {
            Ok(()) => tracing::info!("recorded the scope as {}", file.display()),
            Err(e) => tracing::warn!("the scope could not be recorded: {e}"),
        }
    }
    let (id, answer, ending) = match ran {
        Ok(Ok(done)) => done,
        Ok(Err(message)) => return unanswered(message),
        Err(e) => return app.failed(name, e),
    };
    match ending {
        Ending::Saved(report) => {
            app.saved(name, &report);
            (respond(answer, id, report.applied.len()), Outcome::Ok)
        }
        // The component's own error answer, with nothing applied.
        Ending::Discarded { .. } | Ending::DryRun(_) => (respond(answer, id, 0), Outcome::Error("service-error")),
        // Whatever it answered, a scope that was denied a grant is not
        // saved, and the client is told so rather than shown a success.
        Ending::Denied { denials, .. } => {
            let message = format!("{name} was denied a grant, so nothing was applied: {}", denials.join("; "));
            let problem = Problem::new(StatusCode::FORBIDDEN, "denied", message).with("denials", denials);
            (problem.into_response(), Outcome::Error("denied"))
        }
    }
}

/// What tells a request to a component from another under the same
/// idempotency key: its method, path and query (as the component sees
/// them, under the prefix), content type and body.
fn fingerprint((parts, bytes): &(hyper::http::request::Parts, Bytes)) -> String {
    let path = parts.uri.path_and_query().map_or("", |p| p.as_str());
    let content_type = parts.headers.get(header::CONTENT_TYPE).map_or(&b""[..], HeaderValue::as_bytes);
    let prefix = parts.headers.get("x-forwarded-prefix").map_or(&b""[..], HeaderValue::as_bytes);
    idempotent::fingerprint(&[b"http", parts.method.as_str().as_bytes(), prefix, path.as_bytes(), content_type, bytes])
}

fn unanswered(message: String) -> (Response, Outcome) {
    (Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "trap", message).into_response(), Outcome::Error("trap"))
}

/// The component's answer, with the scope and the number of commands
/// applied in headers.
fn respond(answer: HttpReply, scope: crate::state::ScopeId, applied: usize) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    for (key, value) in &answer.headers {
        // The body was read in full: the length is the server's to set.
        if key != header::CONTENT_LENGTH && key != header::TRANSFER_ENCODING {
            headers.append(key, value.clone());
        }
    }
    headers.insert(SCOPE_HEADER, super::scope_header(scope));
    headers.insert("x-sluice-applied", HeaderValue::from(applied));
    response
}
