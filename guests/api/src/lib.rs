//! Example `wasi:http` component `api`: the orders example as a small REST
//! API, the thin-API-over-services pattern done inside the sandbox. It
//! parses HTTP and JSON, calls the `orders` service (in the same scope, so
//! what `orders` queues is saved only if this component answers below 400)
//! and reads orders through `from`.
//!
//! Routes, relative to the prefix the host mounts it under (`/shop`):
//! - `POST /orders` with `{"customer": "ann", "product-id": 1, "quantity": 3}`
//!   places an order: 201 `{"total-cents": 750}`. With `"max-total-cents"`,
//!   an order that costs more is refused with 422 after `orders` has queued
//!   it: the host then discards the scope, so nothing of it is applied.
//! - `GET /orders/{id}` reads one: 200 `{"id": 1, "customer": "ann", …}`.
//! - `POST /orders/{id}/clearing` clears one: 200 `{"cleared": 1}`.
//!
//! Errors are JSON `{"error": "..."}` with 400 (bad JSON), 404 (unknown
//! order, product or route), 405, 409 (out of stock, not placed), 422
//! (invalid order) or 403/500 (the host refused a read or a command).

sluice_guest::generate!("acme:api/api");

use std::io::Write as _;

use acme::orders::api::{self as orders, OrderError};
use serde_json::{Value as Json, json};
use sluice_guest::from;
use sluice_guest::types::{Error, Value};
use wasip2::http::types::{Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam};
use wasip2::io::streams::StreamError;

/// The channel the examples keep their tables in.
const CHANNEL: &str = "main";
/// The largest request body read.
const MAX_BODY: usize = 64 << 10;

struct Api;

impl wasip2::exports::http::incoming_handler::Guest for Api {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (status, body) = route(&request);
        respond(out, status, &body);
    }
}

wasip2::http::proxy::export!(Api);

/// A status and a JSON body.
type Answer = (u16, Json);

fn route(request: &IncomingRequest) -> Answer {
    let method = request.method();
    let path = request.path_with_query().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (parts.as_slice(), &method) {
        (["orders"], Method::Post) => match read_json(request) {
            Ok(body) => place(&body),
            Err(answer) => answer,
        },
        (["orders", id], Method::Get) => with_id(id, show),
        (["orders", id, "clearing"], Method::Post) => with_id(id, clear),
        (["orders"] | ["orders", _] | ["orders", _, "clearing"], _) => error(405, "method not allowed here"),
        _ => error(404, &format!("no route {path}; try POST /orders, GET /orders/ID, POST /orders/ID/clearing")),
    }
}

fn place(body: &Json) -> Answer {
    let customer = body.get("customer").and_then(Json::as_str);
    let product = body.get("product-id").and_then(Json::as_i64);
    let quantity = body.get("quantity").and_then(Json::as_u64).and_then(|q| u32::try_from(q).ok());
    let (Some(customer), Some(product), Some(quantity)) = (customer, product, quantity) else {
        return error(400, "expected {\"customer\": string, \"product-id\": integer, \"quantity\": integer}");
    };
    let budget = body.get("max-total-cents").and_then(Json::as_i64);
    match orders::place(customer, product, quantity) {
        Ok(placed) if budget.is_some_and(|b| placed.total_cents > b) => error(
            422,
            &format!(
                "the order costs {} cents, over the budget of {} cents",
                placed.total_cents,
                budget.unwrap_or_default()
            ),
        ),
        Ok(placed) => (201, json!({ "total-cents": placed.total_cents })),
        Err(e) => order_error(&e),
    }
}

fn show(id: i64) -> Answer {
    let sql = "SELECT id, customer, product_id, quantity, total_cents, status FROM orders WHERE id = ?1";
    match from::query(CHANNEL, sql, &[Value::Integer(id)]) {
        Ok(rows) if rows.is_empty() => error(404, &format!("no order {id}")),
        Ok(rows) => {
            let mut order = serde_json::Map::new();
            for column in &rows.columns {
                let value = match rows.get(0, column) {
                    Some(Value::Integer(n)) => json!(n),
                    Some(Value::Text(t)) => json!(t),
                    Some(Value::Real(r)) => json!(r),
                    _ => Json::Null,
                };
                order.insert(column.replace('_', "-"), value);
            }
            (200, Json::Object(order))
        }
        Err(e) => store_error(&e),
    }
}

fn clear(id: i64) -> Answer {
    match orders::do_clearing(id) {
        Ok(()) => (200, json!({ "cleared": id })),
        Err(e) => order_error(&e),
    }
}

fn with_id(text: &str, f: impl FnOnce(i64) -> Answer) -> Answer {
    match text.parse() {
        Ok(id) => f(id),
        Err(_) => error(404, &format!("{text:?} is not an order id")),
    }
}

fn order_error(e: &OrderError) -> Answer {
    match e {
        OrderError::EmptyCustomer => error(422, "the customer name is empty"),
        OrderError::InvalidQuantity(q) => error(422, &format!("quantity {q} is not between 1 and 1000")),
        OrderError::UnknownProduct(id) => error(404, &format!("no product {id}")),
        OrderError::UnknownOrder(id) => error(404, &format!("no order {id}")),
        OrderError::NotPlaced(status) => error(409, &format!("the order is {status}, not placed")),
        OrderError::OutOfStock(on_hand) => error(409, &format!("out of stock: {on_hand} on hand")),
        OrderError::Store(e) => store_error(e),
    }
}

fn store_error(e: &Error) -> Answer {
    match e {
        Error::Denied(m) => error(403, m),
        Error::UnknownChannel(m) | Error::Invalid(m) | Error::Unavailable(m) => error(500, m),
    }
}

fn error(status: u16, message: &str) -> Answer {
    (status, json!({ "error": message }))
}

/// The request body as JSON, at most [`MAX_BODY`] bytes.
fn read_json(request: &IncomingRequest) -> Result<Json, Answer> {
    let body = request.consume().map_err(|()| error(400, "the request body was already read"))?;
    let mut bytes = Vec::new();
    {
        let stream = body.stream().map_err(|()| error(400, "cannot read the request body"))?;
        // Read until the body ends; cap what is kept.
        loop {
            match stream.blocking_read(4096) {
                Ok(chunk) if bytes.len() + chunk.len() <= MAX_BODY => bytes.extend_from_slice(&chunk),
                Ok(_) => return Err(error(413, "the request body is too large")),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(error(400, &format!("cannot read the request body: {}", e.to_debug_string())));
                }
            }
        }
    }
    serde_json::from_slice(&bytes).map_err(|e| error(400, &format!("the request body is not JSON: {e}")))
}

fn respond(out: ResponseOutparam, status: u16, body: &Json) {
    let headers = Fields::new();
    // Only a forbidden header name could fail here, and this one is not.
    let _ = headers.set("content-type", &[b"application/json".to_vec()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else { return };
    ResponseOutparam::set(out, Ok(response));
    let text = body.to_string();
    if let Ok(mut stream) = outgoing.write() {
        // A failed write means the host stopped reading; nothing to add.
        let _ = stream.write_all(text.as_bytes());
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(outgoing, None);
}
