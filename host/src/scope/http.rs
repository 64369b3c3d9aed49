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
        let Some(index) = service.hooks.http else {
            return Err(ScopeError::Failed {
                service: service.name.clone(),
                function: "handle".into(),
                reason: "it does not export wasi:http/incoming-handler".into(),
                cause: Cause::Other,
            });
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
