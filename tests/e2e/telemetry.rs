//! Spans exported over OTLP/HTTP to a collector on `127.0.0.1:0`.

use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::receiver::Receiver;
use crate::support::Fixture;

/// With `--otlp-endpoint`, a request's spans reach the collector as OTLP
/// JSON: a `request` span that is the child of the caller's `traceparent`
/// span, in the caller's trace, with `scope` and `save` spans under it that
/// carry the scope id and the service; the answer echoes the exported
/// request span's id, so caller, log and collector name the same span.
#[test]
fn spans_go_to_the_collector_in_the_callers_trace() {
    let collector = Receiver::start();
    let f = Fixture::new(&["products"]);
    f.migrate();
    let s = f.serve_env(&[("OTEL_BSP_SCHEDULE_DELAY", "100")], &["--otlp-endpoint", &collector.base]);
    let theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, echoed) =
        s.post_traced("/services/products/add", theirs, &json!({ "name": "widget", "price-cents": 250 }));
    assert_eq!(status, 200);
    let ours = echoed.split('-').nth(2).unwrap_or_default().to_string();

    let started = Instant::now();
    let spans = loop {
        let spans = exported_spans(&collector);
        let names: Vec<&str> = spans.iter().filter_map(|s| s["name"].as_str()).collect();
        if ["request", "scope", "save"].iter().all(|n| names.contains(n)) {
            break spans;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no request, scope and save spans yet: {names:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let named = |name: &str| spans.iter().find(|s| s["name"] == name).cloned().unwrap_or_default();
    let request = named("request");
    assert_eq!(request["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736", "{request}");
    assert_eq!(request["parentSpanId"], "00f067aa0ba902b7", "the caller's span is the parent: {request}");
    assert_eq!(request["spanId"], ours, "the answer's traceparent names the exported span: {echoed}");
    let scope = named("scope");
    assert_eq!(scope["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(scope["parentSpanId"], ours, "the scope runs inside the request: {scope}");
    let attribute = |span: &Json, key: &str| {
        span["attributes"].as_array().and_then(|a| a.iter().find(|kv| kv["key"] == key)).map(|kv| kv["value"].clone())
    };
    assert_eq!(attribute(&scope, "service"), Some(json!({ "stringValue": "products" })), "{scope}");
    let save = named("save");
    assert_eq!(attribute(&save, "service"), Some(json!({ "stringValue": "products" })), "{save}");
    assert_eq!(attribute(&save, "scope"), attribute(&scope, "scope"), "both carry the scope id");
    assert!(collector.received().iter().all(|r| r.path == "/v1/traces" && r.method == "POST"));
}

/// Every span in every OTLP JSON export the collector got so far.
fn exported_spans(collector: &Receiver) -> Vec<Json> {
    let mut spans = Vec::new();
    for received in collector.received() {
        let Ok(body) = serde_json::from_slice::<Json>(&received.body) else { continue };
        for resource in body["resourceSpans"].as_array().into_iter().flatten() {
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                spans.extend(scope["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    spans
}
