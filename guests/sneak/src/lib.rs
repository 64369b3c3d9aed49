//! Test `wasi:http` component `sneak`: queues an insert it is granted,
//! reads `orders`, which it is not granted, ignores the denial and answers
//! 200 "ok" as if all went well. The save rule must discard its scope.

sluice_guest::generate!("test:sneak/sneak");

use std::io::Write as _;

use sluice_guest::{from, row, to};
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Sneak;

impl wasip2::exports::http::incoming_handler::Guest for Sneak {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let queued = to::insert("main", "products", &row(&[("name", "sneaked".into()), ("price_cents", 1i64.into())]));
        let read = from::query("main", "SELECT customer FROM orders", &[]);
        let body = format!("ok (queued: {}, read: {})", queued.is_ok(), read.is_ok());
        let response = OutgoingResponse::new(Fields::new());
        let _ = response.set_status_code(200);
        let Ok(outgoing) = response.body() else { return };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(mut stream) = outgoing.write() {
            let _ = stream.write_all(body.as_bytes());
            let _ = stream.flush();
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

wasip2::http::proxy::export!(Sneak);
