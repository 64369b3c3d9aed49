//! The HTTP edge: only exposed functions are routes; a client that stalls
//! or hangs up costs nothing past its timeout; the drain after SIGTERM has
//! a deadline; and a `wasi:http` component is held to the same save rule.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::Fixture;

/// A request body of which a stalling client sends only a part.
const STALLED: &str = r#"{"name": "widget", "price-cents": 250, "padding": "................................"}"#;

/// The HTTP edge is closed by default: a function is a route only when its
/// manifest exposes it, while calls between services in a scope need no
/// exposure. `inventory.reserve` takes stock for an order; nobody may call
/// it directly.
#[test]
fn only_exposed_functions_are_routes() {
    let f = Fixture::new(&["orders", "products", "inventory"]);
    f.migrate();
    let served = f.serve(&[]);
    let (status, body) = served.post("/services/products/add", &json!({ "name": "widget", "price-cents": 250 }));
    assert_eq!(status, 200, "{body}");
    let (status, body) = served.post("/services/inventory/restock", &json!({ "product-id": 1, "quantity": 10 }));
    assert_eq!(status, 200, "{body}");
    let before = f.dump();
    let (status, body) = served.post("/services/inventory/reserve", &json!({ "product-id": 1, "quantity": 10 }));
    assert_eq!(status, 404, "{body}");
    let message = body["detail"].as_str().unwrap_or_default();
    assert!(message.starts_with("inventory.reserve is not exposed over HTTP; expose it in "), "{message}");
    assert!(message.ends_with(r#"inventory.toml: [http] expose = ["reserve"]"#), "{message}");
    assert_eq!(f.dump(), before, "a refused route changed the database");
    // Inside a scope, orders still calls it.
    let (status, body) =
        served.post("/services/orders/place", &json!({ "customer": "ann", "product-id": 1, "quantity": 3 }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(f.db().query_row("SELECT on_hand FROM stock", [], |r| r.get::<_, i64>(0)).expect("stock"), 7);
    let (_, openapi) = served.get_json("/openapi.json");
    let paths = openapi["paths"].as_object().expect("paths");
    assert!(paths.contains_key("/services/inventory/restock") && paths.contains_key("/services/orders/place"));
    assert!(!paths.contains_key("/services/inventory/reserve"), "{:?}", paths.keys().collect::<Vec<_>>());
    // A service without a manifest has no route at all.
    f.write_manifest("products", "");
    served.wait_for("the reload", |s| s.log().contains("changed products"));
    let (status, _) = served.post("/services/products/list", &json!({}));
    assert_eq!(status, 404);
}

/// A client that stalls halfway through its body gets 408 once the read
/// timeout passes, one that stalls in its head is disconnected; and on
/// SIGTERM the drain ends at its deadline, whatever the clients do.
#[test]
fn stalled_clients_time_out_and_do_not_hold_the_shutdown() {
    use std::io::Read as _;
    let f = Fixture::new(&["products"]);
    f.migrate();
    let served = f.serve(&["--read-timeout-ms", "300"]);
    let mut stream = served.raw_post("/services/products/add", STALLED, 10);
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let started = Instant::now();
    let mut answer = vec![0; 4096];
    let read = stream.read(&mut answer).expect("an answer before 5 s");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("the request body stopped arriving"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(f.count("products"), 0);
    // Half a request head, then nothing: the server hangs up.
    let mut head = served.raw(b"POST /services/products/add HTTP/1.1\r\nhost: x\r\n");
    head.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let started = Instant::now();
    let mut reply = vec![0; 1024];
    let closed = head.read(&mut reply);
    assert!(matches!(closed, Ok(0) | Err(_)) || reply.starts_with(b"HTTP/1.1 408"), "{closed:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    drop(served);

    let mut served = f.serve(&["--read-timeout-ms", "60000", "--drain-seconds", "1"]);
    let _stalled = served.raw_post("/services/products/add", STALLED, 10);
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    served.terminate();
    let status = served.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "exited {:?} after SIGTERM", started.elapsed());
    assert!(served.log().contains("requests were still in flight 1 s after the signal"), "{}", served.log());
}

/// A `wasi:http` component that is denied a read, carries on and answers
/// 200 has its scope discarded like any other: the client gets 403 with the
/// denial, and the insert it had queued is not applied.
#[test]
fn a_wasi_http_component_that_ignores_a_denial_is_not_saved() {
    let f = Fixture::new(&["sneak", "products"]);
    f.migrate();
    let before = f.dump();
    let served = f.serve(&[]);
    let (status, body) = served.post("/sneak/anything", &json!({}));
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["kind"], "denied", "{body}");
    let denial = body["denials"][0].as_str().unwrap_or_default();
    assert!(denial.starts_with("sneak may not read table orders on channel main"), "{body}");
    assert_eq!(f.dump(), before, "the denied scope was saved");
    let (status, body) = served.post("/services/products/add", &json!({ "name": "widget", "price-cents": 250 }));
    assert_eq!(status, 200, "{body}");
}
