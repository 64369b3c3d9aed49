//! A `wasi:http` component's request inside a scope: the request and the
//! response outparam become resources in the scope's table, and the
//! component's `wasi:http/incoming-handler.handle` runs like any other call,
//! with the same budget, grants and nested service calls.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use wasmtime::AsContextMut as _;
use wasmtime::component::{ResourceAny, Val};
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::{Scope, ScopeError};
use crate::invoke::{self, Target};
use crate::registry::Service;
use crate::scope::Cause;

/// What a component answers: its response, or a `wasi:http` error code.
pub type HttpAnswer = Result<hyper::Response<HyperOutgoingBody>, ErrorCode>;

/// How long a response body may go on streaming after the component's
/// handler returned before it counts as unfinished.
const BODY_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// A component's response, its body read in full.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// The status.
    pub status: hyper::StatusCode,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// Waits for the component to set its response, then reads its body, up to
/// `limit` bytes.
async fn collect(rx: tokio::sync::oneshot::Receiver<HttpAnswer>, limit: usize) -> Result<HttpReply, String> {
    let response = rx
        .await
        .map_err(|_| "its handler returned without setting a response".to_string())?
        .map_err(|code| format!("it answered with the error {code:?}"))?;
    let (parts, body) = response.into_parts();
    let body = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| format!("its response body failed or passed {limit} bytes (limits.result-bytes): {e}"))?
        .to_bytes();
    Ok(HttpReply { status: parts.status, headers: parts.headers, body })
}

/// Where the component's response goes once it sets it.
pub type ResponseSender = tokio::sync::oneshot::Sender<HttpAnswer>;

impl Scope {
    /// Hands `request` to `service`'s `wasi:http` handler. The response
    /// arrives on `response` (its body may still be streaming when this
    /// returns); the caller decides whether to save.
    pub fn handle_http(
        &mut self,
        service: &Arc<Service>,
        request: hyper::Request<Full<Bytes>>,
        response: ResponseSender,
    ) -> Result<(), ScopeError> {
        self.check_open()?;
        let failed = |reason: String| ScopeError::Failed {
            service: service.name.clone(),
            function: "handle".into(),
            reason,
            cause: Cause::Other,
        };
        let code = service.code().map_err(|e| failed(format!("{e:#}")))?;
        let Some(index) = code.hooks.http else {
            return Err(failed("it does not export wasi:http/incoming-handler".into()));
        };
        let request = request.map(|body| {
            body.map_err(|never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} })
        });
        let resources = self.http_resources(request, response);
        let (req, out) = match resources {
            Ok(pair) => pair,
            Err(e) => return Err(self.fail(&service.name, "handle", &e)),
        };
        let target = Target { service, function: "handle", index };
        let args = [Val::Resource(req), Val::Resource(out)];
        match invoke::call(&mut self.store.as_context_mut(), target, &args, &mut []) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(&service.name, "handle", &e)),
        }
    }

    /// Hands `request` to `service`'s handler and reads the response it
    /// sets, its body in full (up to the service's `result-bytes`), on
    /// `runtime`. `Ok(Err(..))` is a response that could not be read, for
    /// people; the caller decides whether to save.
    pub fn serve_http(
        &mut self,
        service: &Arc<Service>,
        request: hyper::Request<Full<Bytes>>,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Result<HttpReply, String>, ScopeError> {
        let name = &service.name;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let collector = runtime.spawn(collect(rx, service.limits.result_bytes));
        if let Err(e) = self.handle_http(service, request, tx) {
            collector.abort();
            return Err(e);
        }
        let collected = runtime.block_on(async { tokio::time::timeout(BODY_GRACE, collector).await });
        Ok(match collected {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(reason))) => Err(format!("{name}: {reason}; nothing was applied")),
            Ok(Err(e)) => Err(format!("{name}: reading its response failed: {e}; nothing was applied")),
            Err(_) => Err(format!(
                "{name}: its response body was not finished when its handler returned; nothing was applied"
            )),
        })
    }

    fn http_resources<B>(
        &mut self,
        request: hyper::Request<B>,
        response: ResponseSender,
    ) -> wasmtime::Result<(ResourceAny, ResourceAny)>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let mut view = self.store.data_mut().http();
        let req = view.new_incoming_request(wasmtime_wasi_http::p2::bindings::http::types::Scheme::Http, request)?;
        let out = view.new_response_outparam(response)?;
        let req = req.try_into_resource_any(&mut self.store)?;
        let out = out.try_into_resource_any(&mut self.store)?;
        Ok((req, out))
    }
}
