//! `wasi:http` components under `sluice serve`: the `api` example (a REST
//! API over the `orders` service, in the sandbox) and the `hello` component,
//! mounted under their manifests' prefixes.

use serde_json::json;
use sluice_host::registry::LoadError;

use crate::served::Served;
use crate::support::Fixture;

fn shop() -> (Fixture, Served) {
    let f = Fixture::new(&["products", "inventory", "orders", "api", "hello"]);
    f.migrate();
    let s = f.serve(&[]);
    let (status, _) = s.post("/services/products/add", &json!({ "name": "widget", "price-cents": 250 }));
    assert_eq!(status, 200);
    let (status, _) = s.post("/services/inventory/restock", &json!({ "product-id": 1, "quantity": 10 }));
    assert_eq!(status, 200);
    (f, s)
}

#[test]
fn the_api_component_places_reads_and_clears_orders_through_the_orders_service() {
    let (f, s) = shop();
    let (status, body) = s.post("/shop/orders", &json!({ "customer": "ann", "product-id": 1, "quantity": 3 }));
    assert_eq!(status, 201, "{body}\n{}", s.log());
    assert_eq!(body, json!({ "total-cents": 750 }));
    // Saved with every round: the order, the stock, and the event on-save queued.
    assert_eq!(f.count("orders"), 1);
    assert_eq!(f.count("order_events"), 1);
    let on_hand: i64 =
        f.db().query_row("SELECT on_hand FROM stock WHERE product_id = 1", [], |r| r.get(0)).expect("stock");
    assert_eq!(on_hand, 7);

    let (status, text) = s.get("/shop/orders/1");
    assert_eq!(status, 200, "{text}");
    let order: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        (order["customer"].as_str(), order["status"].as_str(), order["total-cents"].as_i64()),
        (Some("ann"), Some("placed"), Some(750))
    );

    let (status, body) = s.post("/shop/orders/1/clearing", &json!({}));
    assert_eq!((status, body), (200, json!({ "cleared": 1 })));
    assert_eq!(f.count("clearings"), 1);

    // The component's own error statuses; its scope is discarded.
    let before = f.dump();
    let (status, body) = s.post("/shop/orders/1/clearing", &json!({}));
    assert_eq!(status, 409, "{body}");
    let (status, _) = s.post("/shop/orders", &json!({ "customer": "bob", "product-id": 1, "quantity": 30 }));
    assert_eq!(status, 409);
    let (status, body) = s.post_raw("/shop/orders", "{oops".into());
    assert_eq!(status, 400, "{body}");
    let (status, _) = s.get("/shop/nowhere");
    assert_eq!(status, 404);
    assert_eq!(f.dump(), before);
}

#[test]
fn a_scope_answered_with_an_error_status_is_discarded_even_after_queueing() {
    let (f, s) = shop();
    let before = f.dump();
    // orders.place queues the order and the stock reservation; the api then
    // refuses the order for its budget, so the host discards the scope.
    let order = json!({ "customer": "ann", "product-id": 1, "quantity": 3, "max-total-cents": 500 });
    let (status, body) = s.post("/shop/orders", &order);
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("over the budget")), "{body}");
    assert_eq!(f.dump(), before, "nothing of a scope answered with 422 is applied");
    let (_, metrics) = s.get("/metrics");
    assert!(metrics.contains("sluice_call_errors_total{service=\"api\",kind=\"service-error\"} 1"), "{metrics}");
}

#[test]
fn hello_answers_under_its_prefix_and_nothing_answers_elsewhere() {
    let (_f, s) = shop();
    let (status, text) = s.get("/hello");
    assert_eq!((status, text.as_str()), (200, "hello"));
    let (status, text) = s.get("/hello/any/path?x=1");
    assert_eq!((status, text.as_str()), (200, "hello"));
    let (status, _) = s.get("/hellothere");
    assert_eq!(status, 404, "a prefix matches whole path segments only");
    let (_, doc) = s.get_json("/openapi.json");
    assert!(doc["paths"]["/hello"]["get"].is_object(), "mounted prefixes are in the OpenAPI document");
}

#[test]
fn bad_http_mounts_are_refused_at_load() {
    let f = Fixture::new(&["hello", "probe"]);
    f.write_manifest("probe", "[http]\nprefix = \"/probe\"\n");
    let host = f.host();
    let registry = host.registry();
    let failure = registry.failures().iter().find(|x| x.path.ends_with("probe.wasm")).expect("probe refused");
    assert!(matches!(failure.error, LoadError::Manifest { .. }));
    assert!(failure.error.to_string().contains("does not export wasi:http/incoming-handler"), "{}", failure.error);

    for (prefix, why) in
        [("/services", "overlaps the host's own route"), ("shop", "must start with '/'"), ("/a/", "not end with '/'")]
    {
        f.write_manifest("hello", &format!("[http]\nprefix = \"{prefix}\"\n"));
        let host = f.host();
        let registry = host.registry();
        let failure = registry.failures().iter().find(|x| x.path.ends_with("hello.wasm")).expect("hello refused");
        assert!(failure.error.to_string().contains(why), "{prefix}: {}", failure.error);
    }
}

/// `Idempotency-Key` on a mounted component's route (on the embedded
/// SQLite default): the repeat gets the component's own answer (status,
/// headers, body) from the stored row and places nothing; another body
/// under the key is 422; a refused request (here 409 from the component:
/// out of stock) keeps nothing, so its key runs again.
#[test]
fn a_mounted_route_with_an_idempotency_key_runs_once() {
    let (f, s) = shop();
    let http = reqwest::blocking::Client::new();
    let post = |key: &str, body: serde_json::Value| {
        let response =
            http.post(s.url("/shop/orders")).header("Idempotency-Key", key).json(&body).send().expect("answer");
        let status = response.status().as_u16();
        let replayed = response.headers().get("idempotent-replayed").is_some();
        let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap_or("").to_string());
        (status, replayed, content_type, response.text().expect("body"))
    };
    let order = json!({ "customer": "ann", "product-id": 1, "quantity": 3 });
    let first = post("k-1", order.clone());
    assert_eq!((first.0, first.1), (201, false), "{first:?}");
    let again = post("k-1", order.clone());
    assert_eq!((again.0, again.1), (201, true), "{again:?}");
    assert_eq!((&again.2, &again.3), (&first.2, &first.3), "the same answer, headers and body");
    assert_eq!(f.count("orders"), 1, "the repeat placed nothing");
    let other = post("k-1", json!({ "customer": "bob", "product-id": 1, "quantity": 3 }));
    assert_eq!(other.0, 422, "{other:?}");
    let too_many = json!({ "customer": "cy", "product-id": 1, "quantity": 30 });
    let refused = post("k-2", too_many.clone());
    assert!(refused.0 >= 400 && !refused.1, "{refused:?}");
    let again = post("k-2", too_many);
    assert_eq!((again.0, again.1), (refused.0, false), "a refused request's key runs again: {again:?}");
    assert_eq!(f.count("orders"), 1);
}
