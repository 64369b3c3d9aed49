//! `sluice serve` over real HTTP: every route, every error class with its
//! status, concurrency without leakage between scopes, and that the server
//! keeps serving after each failure.

use serde_json::{Value as Json, json};

use crate::served::Served;
use crate::support::Fixture;

/// The example services with the schema, served.
fn shop() -> (Fixture, Served) {
    let f = Fixture::new(&["products", "inventory", "orders", "probe", "hostile"]);
    f.migrate();
    let served = f.serve(&[]);
    (f, served)
}

#[test]
fn routes_call_save_list_describe_and_count() {
    let (f, s) = shop();
    let (status, health) = s.get_json("/healthz");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["services"], 5);

    let (status, body) = s.post("/services/products/add", &json!({ "name": "widget", "price-cents": 250 }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], json!({ "ok": null }));
    // A client is told how the scope ended, not what it applied: the save
    // report (SQL, parameters, tables) is the operator's.
    assert_eq!(body["ending"], json!({ "status": "saved", "attempt": 1 }), "{body}");
    assert_eq!(f.count("products"), 1);

    let (status, body) = s.post("/services/products/list", &json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["ok"][0]["name"], "widget");
    assert_eq!(body["result"]["ok"][0]["price-cents"], 250);

    // The scope's number is in a header too.
    let response =
        reqwest::blocking::Client::new().post(s.url("/services/products/list")).body("{}").send().expect("POST list");
    let header = response.headers().get("x-sluice-scope").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body: Json = response.json().expect("json");
    assert_eq!(header.as_deref(), body["scope"].as_str(), "{body}");
    // A UUIDv7: unique across hosts, ordered by time.
    let id = body["scope"].as_str().unwrap_or_default();
    assert!(id.len() == 36 && id.as_bytes()[14] == b'7', "not a UUIDv7: {id}");

    // An empty body is no arguments.
    let (status, _) = s.post_raw("/services/products/list", String::new());
    assert_eq!(status, 200);

    // A dry run applies nothing; served with --reports, it answers with
    // what the save would apply.
    let before = f.dump();
    let gadget = json!({ "name": "gadget", "price-cents": 1200 });
    let (status, body) = s.post("/services/products/add?dry_run=true", &gadget);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ending"], json!({ "status": "dry-run", "attempt": 1 }), "{body}");
    let reporting = f.serve(&["--reports"]);
    let (status, body) = reporting.post("/services/products/add?dry_run=true", &gadget);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ending"]["status"], "dry-run");
    let op = &body["ending"]["applied"][0]["command"]["op"];
    assert_eq!(op, &json!({ "kind": "insert", "table": "products", "row": { "name": "gadget", "price_cents": 1200 } }));
    assert_eq!(f.dump(), before);

    let (status, listing) = s.get_json("/services");
    assert_eq!(status, 200);
    let products = listing["services"].as_array().and_then(|l| l.iter().find(|s| s["name"] == "products")).cloned();
    let products = products.expect("products listed");
    let add = products["functions"].as_array().and_then(|l| l.iter().find(|f| f["name"] == "add")).cloned();
    assert_eq!(add.expect("add listed")["params"][1], json!({ "name": "price-cents", "type": "s64" }));

    let (status, metrics) = s.get("/metrics");
    assert_eq!(status, 200);
    for line in [
        "sluice_calls_total{service=\"products\"} 5",
        "sluice_commands_applied_total{service=\"products\"} 1",
        "sluice_call_duration_seconds_count{service=\"products\"} 5",
        "sluice_services_loaded 5",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in\n{metrics}");
    }
    // The process metrics every Prometheus client exports.
    let value = |name: &str| {
        metrics.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse::<f64>().ok())
    };
    assert!(value("process_resident_memory_bytes").is_some_and(|v| v > 1e6), "{metrics}");
    assert!(value("process_cpu_seconds_total").is_some_and(|v| v > 0.0), "{metrics}");
    assert!(value("process_open_fds").is_some_and(|v| v >= 3.0), "{metrics}");
    let started = value("process_start_time_seconds").unwrap_or_default();
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    assert!(started > now - 600.0 && started <= now + 1.0, "start time {started} is not about now ({now})");
}

/// Asserts the status and the RFC 9457 problem of `kind` (with the same
/// under `error`, the form before it), and returns the problem.
fn expect_error(answer: (u16, Json), status: u16, kind: &str) -> Json {
    let (got, body) = answer;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["type"], format!("urn:sluice:problem:{kind}"), "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
    assert_eq!(body["kind"], kind, "{body}");
    assert_eq!(body["error"]["kind"], kind, "{body}");
    assert_eq!(body["error"]["message"], body["detail"], "{body}");
    body
}

#[test]
fn every_error_class_has_its_status_and_the_server_survives() {
    let (f, s) = shop();
    s.post("/services/products/add", &json!({ "name": "widget", "price-cents": 250 }));
    let before = f.dump();

    // Every error is an RFC 9457 problem, with its media type.
    let response = reqwest::blocking::Client::new().post(s.url("/services/nothing/here")).send().expect("POST");
    assert_eq!(response.status().as_u16(), 404);
    let media = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(media.as_deref(), Some("application/problem+json"));

    // 400: the JSON path of the bad field.
    let e = expect_error(s.post("/services/products/add", &json!({ "name": 5, "price-cents": 1 })), 400, "arguments");
    assert_eq!(e["path"], "$.name");
    assert!(e["detail"].as_str().is_some_and(|m| m.contains("expected string")), "{e}");
    let e = expect_error(s.post("/services/products/add", &json!({ "name": "x" })), 400, "arguments");
    assert_eq!(e["path"], "$.price-cents");
    let e = expect_error(
        s.post("/services/products/add", &json!({ "name": "x", "price-cents": 1, "colour": 2 })),
        400,
        "arguments",
    );
    assert_eq!(e["path"], "$.colour");
    let mut sample = json!({
        "flag": true, "small": 300, "big": 1, "ratio": 0.5, "letter": "a", "label": "l", "tags": [],
        "pair": [1, "x"], "maybe": null, "colour": "red", "access": [], "shape": "point", "outcome": { "ok": 1 },
    });
    let e = expect_error(s.post("/services/probe/echo", &json!({ "input": sample.clone() })), 400, "arguments");
    assert_eq!(e["path"], "$.input.small", "{e}");
    sample["small"] = json!(3);
    sample["tags"] = json!(["a", 7]);
    let e = expect_error(s.post("/services/probe/echo", &json!({ "input": sample.clone() })), 400, "arguments");
    assert_eq!(e["path"], "$.input.tags[1]", "{e}");
    let e = expect_error(s.post_raw("/services/products/list", "{not json".into()), 400, "arguments");
    assert!(e["detail"].as_str().is_some_and(|m| m.contains("not JSON")), "{e}");
    expect_error(s.post("/services/products/list?dry_run=maybe", &json!({})), 400, "arguments");

    // 404: what was not found.
    let e = expect_error(s.post("/services/nothing/here", &json!({})), 404, "not-found");
    assert!(e["detail"].as_str().is_some_and(|m| m.contains("no service \"nothing\"")), "{e}");
    let e = expect_error(s.post("/services/products/remove", &json!({})), 404, "not-found");
    assert!(e["detail"].as_str().is_some_and(|m| m.contains("no function \"remove\"")), "{e}");
    expect_error(s.post("/elsewhere", &json!({})), 404, "not-found");

    // 422: the service's own error, with its value.
    let e = expect_error(
        s.post("/services/orders/place", &json!({ "customer": "ann", "product-id": 99, "quantity": 1 })),
        422,
        "service-error",
    );
    assert_eq!(e["value"], json!({ "unknown-product": 99 }));

    // 403: a denied grant, naming the manifest line.
    let e = expect_error(
        s.post("/services/hostile/execute", &json!({ "sql": "INSERT INTO orders (customer) VALUES ('x')" })),
        403,
        "denied",
    );
    assert!(e["detail"].as_str().is_some_and(|m| m.contains("may not insert into table orders")), "{e}");
    assert!(e["denials"][0].as_str().is_some_and(|m| m.contains("inserts = [\"orders\"]")), "{e}");

    // 500: a trap, naming the service and the cause.
    let e = expect_error(s.post("/services/probe/fail", &json!({ "message": "boom" })), 500, "trap");
    assert_eq!(e["service"], "probe");
    assert!(e["detail"].as_str().is_some_and(|m| m.contains("probe.fail failed") && m.contains("boom")), "{e}");

    // 503: a limit breach, naming the limit.
    let e = expect_error(s.post("/services/hostile/balloon", &json!({ "mib": 200 })), 503, "limit");
    assert_eq!(e["limit"], "memory-mb");
    assert_eq!(e["service"], "hostile");

    // 409: a command the data refuses at save (a duplicate name).
    let duplicate = json!({
        "channel": "main", "table": "products",
        "columns": ["name", "price_cents"], "values": [{ "text": "widget" }, { "integer": 9 }],
    });
    let e = expect_error(s.post("/services/probe/insert", &duplicate), 409, "save");
    assert_eq!(e["service"], "probe");
    assert!(e["detail"].as_str().is_some_and(|m| m.contains("UNIQUE")), "{e}");

    assert_eq!(f.dump(), before, "nothing of a failed request may be applied");
    let (status, _) = s.post("/services/products/list", &json!({}));
    assert_eq!(status, 200, "the server keeps serving");
    let (_, metrics) = s.get("/metrics");
    for line in [
        "sluice_call_errors_total{service=\"probe\",kind=\"trap\"} 1",
        "sluice_traps_total{service=\"probe\"} 1",
        "sluice_limit_breaches_total{service=\"hostile\",limit=\"memory-mb\"} 1",
        "sluice_call_errors_total{service=\"hostile\",kind=\"denied\"} 1",
        "sluice_call_errors_total{service=\"orders\",kind=\"service-error\"} 1",
        "sluice_call_errors_total{service=\"probe\",kind=\"save\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in\n{metrics}");
    }
}

/// A route asked with a method it does not take answers 405 as a problem
/// document, with `Allow` naming the methods it takes; before, the body was
/// empty.
#[test]
fn a_method_a_route_does_not_take_gets_405_as_a_problem() {
    let f = Fixture::new(&["probe", "orders", "products", "inventory", "api"]);
    let s = f.serve(&[]);
    let client = reqwest::blocking::Client::new();
    let trace = reqwest::Method::from_bytes(b"TRACE").expect("TRACE");
    for (method, path, allow) in [
        (reqwest::Method::GET, "/services/probe/note", "POST"),
        (reqwest::Method::DELETE, "/services/probe/note", "POST"),
        (reqwest::Method::POST, "/openapi.json", "GET,HEAD"),
        (reqwest::Method::PUT, "/services", "GET,HEAD"),
        // A mounted component takes the methods its operations list; the
        // host answers the others.
        (trace, "/shop", "GET,HEAD,POST,PUT,PATCH,DELETE,OPTIONS"),
    ] {
        let response = client.request(method.clone(), s.url(path)).send().expect("request");
        let status = response.status().as_u16();
        let allowed = response.headers().get("allow").and_then(|v| v.to_str().ok()).map(str::to_string);
        let media = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body: Json = response.json().expect("a JSON body");
        let e = expect_error((status, body), 405, "method-not-allowed");
        assert!(e["detail"].as_str().is_some_and(|d| d.contains(method.as_str()) && d.contains(path)), "{e}");
        assert_eq!(allowed.as_deref(), Some(allow), "{method} {path}");
        assert_eq!(media.as_deref(), Some("application/problem+json"), "{method} {path}");
    }
}

/// A path the router cannot decode (a service name that is not UTF-8) is
/// a 400 problem document, as every error the host answers itself.
#[test]
fn an_undecodable_path_gets_400_as_a_problem() {
    let f = Fixture::new(&["probe"]);
    let s = f.serve(&[]);
    let response = reqwest::blocking::Client::new().post(s.url("/services/%FF/note")).send().expect("request");
    let media = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    let status = response.status().as_u16();
    let body: Json = response.json().expect("a JSON body");
    expect_error((status, body), 400, "arguments");
    assert_eq!(media.as_deref(), Some("application/problem+json"));
}

#[test]
fn a_body_over_the_limit_gets_413() {
    let f = Fixture::new(&["probe"]);
    let s = f.serve(&["--max-body-bytes", "1000"]);
    let big = json!({ "text": "x".repeat(5000) });
    expect_error(s.post("/services/probe/note", &big), 413, "too-large");
    let (status, _) = s.post("/services/probe/note", &json!({ "text": "small" }));
    assert_eq!(status, 200);
}

#[test]
fn two_hundred_concurrent_requests_each_get_their_own_scope() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let s = f.serve(&["--reports"]);
    let answers: Vec<(u16, Json)> = std::thread::scope(|threads| {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let s = &s;
                threads.spawn(move || {
                    let insert = json!({
                        "channel": "main", "table": "products",
                        "columns": ["name", "price_cents"], "values": [{ "text": format!("p{i}") }, { "integer": i + 1 }],
                    });
                    s.post("/services/probe/insert", &insert)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("request thread")).collect()
    });
    let mut scopes = std::collections::HashSet::new();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        // Tickets count from 1 in every scope: one command queued, one applied.
        assert_eq!(body["result"], json!({ "ok": 1 }), "{body}");
        assert_eq!(body["ending"]["applied"].as_array().map(Vec::len), Some(1), "{body}");
        assert!(scopes.insert(body["scope"].as_str().expect("scope id").to_string()), "scope reused: {body}");
    }
    assert_eq!(f.count("products"), 200);
    // A fresh instance per scope: the counter starts again every time.
    for _ in 0..3 {
        let (_, body) = s.post("/services/probe/counter", &json!({}));
        assert_eq!(body["result"], 1);
    }
}

#[test]
fn the_openapi_document_describes_the_functions_and_passes_a_real_validator() {
    let (f, s) = shop();
    let (status, doc) = s.get_json("/openapi.json");
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let add = &doc["paths"]["/services/products/add"]["post"];
    let body = &add["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(body["properties"]["price-cents"]["type"], "integer");
    assert_eq!(body["properties"]["price-cents"]["format"], "int64");
    assert_eq!(body["required"], json!(["name", "price-cents"]));
    assert_eq!(add["operationId"], "products.add");
    let echo = &doc["paths"]["/services/probe/echo"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    // Named WIT types are schemas of their own, under their WIT names.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(echo["properties"]["input"], json!({ "$ref": "#/components/schemas/sample" }));
    let sample = &schemas["sample"];
    assert_eq!(sample["title"], "sample");
    assert_eq!(sample["properties"]["colour"], json!({ "$ref": "#/components/schemas/colour" }));
    assert_eq!(schemas["colour"]["enum"], json!(["red", "green", "blue"]));
    assert_eq!(sample["properties"]["maybe"]["anyOf"][0], json!({ "type": "null" }));
    assert_eq!(sample["properties"]["big"]["format"], "int64");
    assert_eq!(sample["properties"]["small"]["format"], "int32");
    let placed =
        &doc["paths"]["/services/orders/place"]["post"]["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(
        placed["properties"]["result"]["oneOf"][0]["properties"]["ok"],
        json!({ "$ref": "#/components/schemas/placed" })
    );
    // Two different types named `error` are told apart by where each is defined.
    let refuse =
        &doc["paths"]["/services/probe/refuse"]["post"]["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(
        refuse["properties"]["result"]["oneOf"][1]["properties"]["err"],
        json!({ "$ref": "#/components/schemas/test.probe.own-error.0.1.0.error" })
    );
    assert_eq!(schemas["test.probe.own-error.0.1.0.error"]["title"], "error");
    assert!(schemas["sluice.service.types.0.1.0.error"].is_object(), "{schemas}");
    assert!(schemas.get("error").is_none(), "no bare `error` when two share the name");
    // The fixed routes have real schemas too.
    assert_eq!(
        doc["paths"]["/services"]["get"]["responses"]["200"]["content"]["application/json"]["schema"],
        json!({ "$ref": "#/components/schemas/Services" })
    );
    assert_eq!(
        doc["paths"]["/healthz"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["required"],
        json!(["status", "services", "failures"])
    );
    let place = &doc["paths"]["/services/orders/place"]["post"]["responses"];
    let value = &place["422"]["content"]["application/problem+json"]["schema"]["allOf"][1]["properties"]["value"];
    assert_eq!(
        value["oneOf"][0],
        json!({ "$ref": "#/components/schemas/order-error" }),
        "a function returning result documents its error value: {value}"
    );
    assert!(schemas["order-error"]["oneOf"].is_array(), "{}", schemas["order-error"]);
    assert_eq!(value["oneOf"][1]["required"], json!(["code", "message"]), "and an on-save refusal");

    let Some(validator) = validator() else { return };
    let file = f.dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).expect("write document");
    let out = std::process::Command::new(&validator).arg(&file).output().expect("run the validator");
    assert!(
        out.status.success(),
        "openapi-spec-validator rejects the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openapi-spec-validator` from the venv `just tools` makes, or `None`
/// with a message when it is missing (an error when SLUICE_REQUIRE_TOOLS=1).
fn validator() -> Option<std::path::PathBuf> {
    crate::contract::tool("openapi-spec-validator", "the validation of /openapi.json")
}

/// A caller's W3C `traceparent` is continued: the answer carries the same
/// trace id with the host's own span id, and the request's log lines carry
/// the trace id. Without one, a new trace begins and is echoed.
#[test]
fn a_traceparent_is_continued_into_the_log_and_echoed() {
    let (_f, s) = shop();
    let theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, echoed) =
        s.post_traced("/services/products/add", theirs, &json!({ "name": "widget", "price-cents": 250 }));
    assert_eq!(status, 200);
    assert!(echoed.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && echoed.ends_with("-01"), "{echoed}");
    assert!(!echoed.contains("00f067aa0ba902b7"), "the host's span has its own id: {echoed}");
    s.wait_for("the trace id in the log", |s| {
        s.log().lines().any(|l| l.contains("4bf92f3577b34da6a3ce929d0e0e4736") && l.contains("answered"))
    });

    let response = reqwest::blocking::get(s.url("/healthz")).expect("GET healthz");
    let fresh = response.headers().get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let parts: Vec<&str> = fresh.split('-').collect();
    assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [2, 32, 16, 2], "{fresh}");
}
