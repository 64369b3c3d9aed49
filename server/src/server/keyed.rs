//! `Idempotency-Key` on the typed routes and mounted components: the
//! header read, and the answer of a request that did not run because of
//! its key ([`crate::idempotent`]).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Problem;
use super::metrics::Outcome;
use crate::idempotent::{KeyError, Unrun};

/// The request header that carries the key.
pub(super) const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The header of an answer replayed from the first request's.
pub(super) const REPLAYED: &str = "idempotent-replayed";

/// The request's key, if it sent one; one that is not text is refused.
pub(super) fn key(headers: &HeaderMap, target: &str) -> Result<Option<String>, Problem> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        let message = format!("{target}: the request has more than one Idempotency-Key header");
        return Err(Problem::new(StatusCode::BAD_REQUEST, "arguments", message));
    }
    match value.to_str() {
        Ok(key) => Ok(Some(key.to_string())),
        Err(_) => {
            let message = format!("{target}: the Idempotency-Key header is not visible ASCII");
            Err(Problem::new(StatusCode::BAD_REQUEST, "arguments", message))
        }
    }
}

/// The answer of a request that did not run because of its key, and how
/// to count it.
pub(super) fn answer(target: &str, unrun: Unrun) -> (Response, Outcome) {
    match unrun {
        Unrun::Stored(stored) => {
            let mut response = Response::new(Body::from(stored.body));
            *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
            let headers = response.headers_mut();
            for (name, value) in &stored.headers {
                if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
                    headers.append(name, value);
                }
            }
            headers.insert(REPLAYED, HeaderValue::from_static("true"));
            (response, Outcome::Ok)
        }
        Unrun::Running => {
            let message = format!(
                "{target}: a request with this Idempotency-Key is still running; nothing was run for this one. \
                 Send it again once that one has answered"
            );
            let mut problem = Problem::new(StatusCode::CONFLICT, "in-progress", message);
            problem.retry_after = Some(1);
            (problem.into_response(), Outcome::Error("in-progress"))
        }
        Unrun::Different => {
            let message = format!(
                "{target}: this Idempotency-Key was used for a different request (another route, arguments or \
                 body); nothing was run. Use a new key for a new request"
            );
            (
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key", message).into_response(),
                Outcome::Error("idempotency-key"),
            )
        }
        Unrun::Refused(KeyError::Invalid(why)) => {
            let problem = Problem::new(StatusCode::BAD_REQUEST, "arguments", format!("{target}: {why}"));
            (problem.into_response(), Outcome::Error("arguments"))
        }
        Unrun::Refused(e @ KeyError::Unavailable(_)) => {
            let problem = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("{target}: {e}"));
            (problem.into_response(), Outcome::Error("unavailable"))
        }
    }
}
