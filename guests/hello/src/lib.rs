//! The smallest `wasi:http` component: every request gets 200 `hello`. It
//! imports nothing of Sluice's, so `wasmtime serve` runs the same file; the
//! benchmarks compare the two hosts on it.

use std::io::Write as _;

use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let response = OutgoingResponse::new(Fields::new());
        let Ok(body) = response.body() else { return };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(mut stream) = body.write() {
            // A failed write means the host stopped reading; nothing to add.
            let _ = stream.write_all(b"hello");
            let _ = stream.flush();
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

wasip2::http::proxy::export!(Hello);
