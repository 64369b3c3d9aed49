//! Cases of a `wasi:http` component's scope: the request that went to the
//! mounted component, recorded by `sluice serve --record`, and its answer
//! (`{"status", "body"}`) as the result.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::{Case, Expected, assemble, ended, failed, redact};
use crate::channels::Channels;
use crate::registry::Registry;
use crate::scope::{Answer, HttpReply, Mode, Scope, ScopeError};

/// A request to a mounted component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCall {
    /// The service whose handler got it.
    pub service: String,
    /// `GET`, `POST` …
    pub method: String,
    /// The path and query, as the component saw them.
    pub uri: String,
    /// Its headers, in order.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Its body, as text (a body that is not UTF-8 is kept with its bad
    /// bytes replaced).
    #[serde(default)]
    pub body: String,
}

impl HttpCall {
    /// The request `parts` with `body`, as `service` got it.
    pub fn new(service: &str, parts: &hyper::http::request::Parts, body: &Bytes) -> HttpCall {
        HttpCall {
            service: service.to_string(),
            method: parts.method.to_string(),
            uri: parts.uri.path_and_query().map_or_else(|| parts.uri.to_string(), ToString::to_string),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }

    fn request(&self) -> Result<hyper::Request<Full<Bytes>>, String> {
        let mut builder = hyper::Request::builder().method(self.method.as_str()).uri(self.uri.as_str());
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder.body(Full::new(Bytes::from(self.body.clone()))).map_err(|e| format!("the case's request: {e}"))
    }
}

/// A component's answer as a case's result.
fn answer(reply: &HttpReply) -> Json {
    json!({ "status": reply.status.as_u16(), "body": String::from_utf8_lossy(&reply.body) })
}

/// How a `wasi:http` scope ended, in a case's terms: its answer and the
/// ending, a response that could not be read, or an error.
pub fn expected(ran: Result<Result<(&HttpReply, &crate::scope::Ending), &str>, &ScopeError>) -> Expected {
    match ran {
        Ok(Ok((reply, ending))) => ended(answer(reply), ending),
        Ok(Err(message)) => Expected {
            result: Json::String(message.to_string()),
            ending: "failed".into(),
            commands: Vec::new(),
            calls: Vec::new(),
        },
        Err(e) => failed(e),
    }
}

/// The case of a recorded `wasi:http` scope, redacted by `rules`
/// (`arg:` rules do not apply: a request has no parameters).
pub fn record(
    channels: &Channels,
    call: HttpCall,
    tape: crate::reads::Tape,
    expect: Expected,
    rules: &[redact::Rule],
) -> Result<Case, String> {
    if tape.full {
        return Err(super::full());
    }
    let mut case = assemble(channels, tape, expect);
    case.http = Some(call);
    redact::apply(&mut case, &[], rules)?;
    Ok(case)
}

/// Replays a `wasi:http` case in `scope`.
pub(super) fn replay(registry: &Arc<Registry>, scope: Scope, call: &HttpCall) -> Result<Expected, String> {
    let service = registry.service(&call.service).map_err(|e| e.to_string())?;
    let runtime = replay_runtime()?;
    let mut calls = Vec::new();
    let ran = scope.run(|scope| {
        scope.record();
        let request = call.request().map_err(|reason| ScopeError::Failed {
            service: call.service.clone(),
            function: "handle".into(),
            reason,
            cause: crate::scope::Cause::Other,
        })?;
        let served = scope.serve_http(service, request, runtime);
        let result = match served {
            Ok(Ok(reply)) => {
                scope.finish(Answer::Http { service: &service.name, reply: &reply }, Mode::Save).map(|e| Ok((reply, e)))
            }
            Ok(Err(message)) => Ok(Err(message)),
            Err(e) => Err(e),
        };
        calls = scope.take_tape().calls;
        result
    });
    let outcome = match &ran {
        Ok(Ok((reply, ending))) => Ok(Ok((reply, ending))),
        Ok(Err(message)) => Ok(Err(message.as_str())),
        Err(e) => Err(e),
    };
    let mut actual = expected(outcome);
    actual.calls = calls;
    Ok(actual)
}

/// The runtime replays read responses on: one worker thread, shared (its
/// drivers must run on a thread of their own for `Handle::block_on`).
fn replay_runtime() -> Result<&'static tokio::runtime::Handle, String> {
    static RUNTIME: std::sync::OnceLock<Result<tokio::runtime::Runtime, String>> = std::sync::OnceLock::new();
    let built = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-replay")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))
    });
    built.as_ref().map(tokio::runtime::Runtime::handle).map_err(Clone::clone)
}
