//! The smallest `wasi:http` component: every request gets 200 `hello`. It
//! imports nothing of Sluice's, so `wasmtime serve` runs the same file; the
//! benchmarks compare the two hosts on it (B5). It does what sunfishcode's
//! `hello-wasi-http`, the component of wasmtime's own `serve` benchmarks,
//! does: a response with no headers, its body written with one
//! `blocking-write-and-flush`, then finished. That repository is not on
//! crates.io, so this is our own writing of it.

use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let response = OutgoingResponse::new(Fields::new());
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = body.write() {
            // A failed write means the host stopped reading; nothing to add.
            let _ = stream.blocking_write_and_flush(b"hello");
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

wasip2::http::proxy::export!(Hello);
