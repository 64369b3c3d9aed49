//! Every error `sluice serve` answers, as one JSON shape with a status that
//! follows from its cause (the table is in `docs/http.md`): an RFC 9457
//! problem (`application/problem+json`) whose extension members are the
//! cause's `kind` and its fields, and, for clients of the form before it, the
//! same under `error`:
//!
//! ```json
//! {"type": "urn:sluice:problem:arguments", "title": "Bad arguments", "status": 400,
//!  "detail": "...", "kind": "arguments", "path": "$.quantity",
//!  "error": {"kind": "arguments", "message": "...", "path": "$.quantity"}}
//! ```

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value as JsonValue, json};

use crate::registry::LookupError;
use crate::scope::{Cause, ScopeError};
use crate::values::ValueError;

/// An error answer: its status, a stable `kind`, a message for people and
/// any fields that help a program (the JSON path, the error value…).
#[derive(Debug, Clone)]
pub struct Problem {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable name of the cause: `arguments`, `not-found`, `denied`,
    /// `service-error`, `trap`, `limit`, `save`, `conflict`, `unavailable`,
    /// `too-large`, `timeout`, `cancelled`, `method-not-allowed`.
    pub kind: &'static str,
    /// What went wrong, naming the service and the cause.
    pub message: String,
    /// More fields of the `error` object.
    pub extra: Map<String, JsonValue>,
    /// Seconds after which trying again may succeed, sent as `Retry-After`
    /// (for a channel that was unavailable).
    pub retry_after: Option<u64>,
}

/// What `Retry-After` says when a channel was unavailable: a busy database
/// is usually free again within a second.
const RETRY_AFTER_SECONDS: u64 = 1;

impl Problem {
    /// A problem without extra fields.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Problem {
        Problem { status, kind, message: message.into(), extra: Map::new(), retry_after: None }
    }

    /// Adds a field to the `error` object.
    pub fn with(mut self, key: &str, value: impl Into<JsonValue>) -> Problem {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    /// A request that does not fit the function's parameters: 400, with the
    /// JSON path of the bad value.
    pub fn arguments(service: &str, function: &str, e: &ValueError) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "arguments", format!("{service}.{function}: {}: {}", e.path, e.message))
            .with("path", e.path.clone())
    }

    /// The body as JSON: the RFC 9457 members, the extension members, and
    /// the same under `error` as before RFC 9457.
    pub fn body(&self) -> JsonValue {
        let mut error = Map::new();
        error.insert("kind".into(), json!(self.kind));
        error.insert("message".into(), json!(self.message));
        error.extend(self.extra.clone());
        let mut body = Map::new();
        body.insert("type".into(), json!(format!("urn:sluice:problem:{}", self.kind)));
        body.insert("title".into(), json!(title(self.kind)));
        body.insert("status".into(), json!(self.status.as_u16()));
        body.insert("detail".into(), json!(self.message));
        body.insert("kind".into(), json!(self.kind));
        body.extend(self.extra.clone());
        body.insert("error".into(), JsonValue::Object(error));
        JsonValue::Object(body)
    }
}

/// The media type of every error answer (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A short summary of a kind of problem, the same for every occurrence.
fn title(kind: &str) -> &'static str {
    match kind {
        "arguments" => "The arguments do not fit the function",
        "not-found" => "No such route, service or function",
        "denied" => "A grant was denied",
        "service-error" => "The service refused the request",
        "trap" => "The service failed",
        "limit" => "A service broke one of its limits",
        "save" => "The data refused the save",
        "conflict" => "The data changed on every run",
        "unavailable" => "A channel is unavailable",
        "too-large" => "The request is too large",
        "timeout" => "The request stopped arriving",
        "cancelled" => "The client went away",
        "method-not-allowed" => "The route does not take that method",
        "partially-applied" => "The save failed after part of it committed",
        "in-progress" => "A request with the same idempotency key is still running",
        "idempotency-key" => "The idempotency key was used for another request",
        _ => "The request failed",
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static(PROBLEM_JSON));
        // Every 503 says when to try again; a busy channel sets its own.
        let retry_after =
            self.retry_after.or((self.status == StatusCode::SERVICE_UNAVAILABLE).then_some(RETRY_AFTER_SECONDS));
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<LookupError> for Problem {
    fn from(e: LookupError) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", e.to_string())
    }
}

impl From<ScopeError> for Problem {
    fn from(e: ScopeError) -> Problem {
        let message = e.to_string();
        match e {
            ScopeError::Lookup(e) => e.into(),
            ScopeError::Arguments { .. } => Problem::new(StatusCode::BAD_REQUEST, "arguments", message),
            ScopeError::Failed { service, cause, .. } => {
                let problem = match &cause {
                    Cause::Limit { service: breaker, limit } => {
                        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "limit", message)
                            .with("limit", limit.clone())
                            .with("service", breaker.clone())
                    }
                    Cause::Denied(denial) => {
                        Problem::new(StatusCode::FORBIDDEN, "denied", message).with("denials", json!([denial]))
                    }
                    // Nobody reads this answer; the status is for the log and metrics.
                    Cause::Cancelled => Problem::new(StatusCode::SERVICE_UNAVAILABLE, "cancelled", message),
                    Cause::Trap | Cause::Exit | Cause::Other => {
                        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "trap", message)
                    }
                };
                if problem.extra.contains_key("service") { problem } else { problem.with("service", service) }
            }
            ScopeError::Command { service, round, position, retryable: true, .. } => {
                // The database was busy or failing: the request may succeed
                // later, unchanged.
                let mut problem = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
                    .with("service", service)
                    .with("round", round)
                    .with("position", position);
                problem.retry_after = Some(RETRY_AFTER_SECONDS);
                problem
            }
            ScopeError::Command { service, round, position, .. } => {
                // The data refused a command (a constraint, a missing table):
                // a conflict with the stored state, not a fault of the host.
                Problem::new(StatusCode::CONFLICT, "save", message)
                    .with("service", service)
                    .with("round", round)
                    .with("position", position)
            }
            ScopeError::Conflict { service, attempts, reason, .. } => {
                // Another save changed what the scope read, on every run the
                // host allowed: trying again later may succeed.
                Problem::new(StatusCode::CONFLICT, "conflict", message)
                    .with("service", service)
                    .with("attempts", attempts)
                    .with("conflict", reason)
            }
            ScopeError::Refused { service, code, message: said } => {
                // The service's own business error, as a function's `err` is.
                let message = format!("{service} refused the save: {code}: {said}; nothing was applied");
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "service-error", message)
                    .with("service", service)
                    .with("value", json!({ "code": code, "message": said }))
            }
            ScopeError::TooManyRounds { services, .. } => {
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "save", message).with("services", services)
            }
            ScopeError::Channel { channel, committed, .. } if committed.is_empty() => {
                let mut problem =
                    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message).with("channel", channel);
                problem.retry_after = Some(RETRY_AFTER_SECONDS);
                problem
            }
            // Part of the save stays applied: a client that sent the
            // request again would apply that part twice. Not a 503.
            ScopeError::Channel { channel, committed, .. } => {
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "partially-applied", message)
                    .with("channel", channel)
                    .with("committed", json!(committed))
            }
            ScopeError::Denied { denials, .. } => {
                Problem::new(StatusCode::FORBIDDEN, "denied", message).with("denials", denials)
            }
            ScopeError::Discarded { .. } | ScopeError::Settled { .. } => {
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "trap", message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_503_says_when_to_retry_and_every_answer_is_problem_json() {
        let limit = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "limit", "x broke its limit").into_response();
        assert_eq!(limit.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
        assert_eq!(limit.headers().get("content-type").and_then(|v| v.to_str().ok()), Some(PROBLEM_JSON));
        let save = Problem::new(StatusCode::CONFLICT, "save", "a constraint").into_response();
        assert!(save.headers().get("retry-after").is_none());
        let body = Problem::new(StatusCode::CONFLICT, "save", "a constraint").with("service", "orders").body();
        assert_eq!(body["type"], "urn:sluice:problem:save");
        assert_eq!((body["status"].as_u64(), body["detail"].as_str()), (Some(409), Some("a constraint")));
        assert_eq!((body["service"].as_str(), body["error"]["service"].as_str()), (Some("orders"), Some("orders")));
    }
}
