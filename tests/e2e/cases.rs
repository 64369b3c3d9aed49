//! Scopes as test cases: `sluice call --record` writes one, `sluice test`
//! replays it against the current components with no database, a changed
//! scope fails with a diff by command, `--update` rewrites it, and the
//! Python, JavaScript and C ports pass the cases recorded from the Rust
//! services.

use std::path::{Path, PathBuf};

use crate::support::{Fixture, components, repo, skip_without, text};

/// A fixture whose data dir has no database: what `sluice test` runs in.
fn replay(f: &Fixture, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--services")
        .arg(f.services())
        .arg("--data-dir")
        .arg(f.dir.path().join("no-db"))
        .arg("--cache-dir")
        .arg(components().join("../test-cache"))
        .env_remove("SLUICE_CONFIG")
        .args(args)
        .output()
        .expect("run sluice test");
    (out.status.success(), format!("{}{}", text(&out.stdout), text(&out.stderr)))
}

/// Records the README's scenario, one case per call, into `dir`.
fn record(f: &Fixture, dir: &Path) {
    f.migrate();
    for call in [vec!["products.add", "widget", "250"], vec!["inventory.restock", "1", "10"]] {
        assert!(f.sluice(&[&["call"], call.as_slice()].concat()).status.success());
    }
    for (name, call) in [
        ("place", vec!["orders.place", "ann", "1", "3"]),
        ("out-of-stock", vec!["orders.place", "bob", "1", "30"]),
        ("clear", vec!["orders.do-clearing", "1"]),
    ] {
        let file = dir.join(format!("{name}.json"));
        let out = f.sluice(&[&["call", "--record", &file.to_string_lossy()], call.as_slice()].concat());
        assert!(text(&out.stderr).contains("recorded the scope as a test case"), "{}", text(&out.stderr));
    }
}

#[test]
fn recorded_scopes_replay_without_a_database() {
    let f = Fixture::new(&["orders", "inventory", "products"]);
    let cases = f.dir.path().join("cases");
    std::fs::create_dir_all(&cases).expect("cases dir");
    record(&f, &cases);
    let (passed, out) = replay(&f, &["test", &cases.to_string_lossy()]);
    assert!(passed, "{out}");
    assert!(out.contains("3 passed, 0 failed"), "{out}");
    assert!(!f.dir.path().join("no-db/main.db").exists(), "the replay opened a database");

    // The case holds the reads with their rows and the commands with their
    // provenance and outcomes.
    let place: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cases.join("place.json")).expect("case")).expect("JSON");
    assert_eq!(place["reads"][1]["chain"], serde_json::json!(["orders.place", "inventory.reserve"]));
    assert_eq!(place["reads"][1]["rows"]["values"], serde_json::json!([[10]]));
    assert_eq!(place["expect"]["commands"][2]["round"], 2);
    assert_eq!(place["expect"]["commands"][1]["outcome"], serde_json::json!({"inserted": 1}));
}

/// A scope that now differs fails with a diff by command; `--update`
/// rewrites the case, which then passes; a read the case does not hold
/// fails with its statement.
#[test]
fn a_changed_scope_fails_with_a_diff_and_update_rewrites_it() {
    let f = Fixture::new(&["orders", "inventory", "products"]);
    let cases = f.dir.path().join("cases");
    std::fs::create_dir_all(&cases).expect("cases dir");
    record(&f, &cases);
    let file = cases.join("place.json");
    let original = std::fs::read_to_string(&file).expect("case");
    // The same case asking for 4 instead of 3: the service now reserves 4
    // and totals 1000.
    let mut case: serde_json::Value = serde_json::from_str(&original).expect("JSON");
    case["args"][2] = serde_json::json!(4);
    std::fs::write(&file, case.to_string()).expect("write");
    let (passed, out) = replay(&f, &["test", &file.to_string_lossy()]);
    assert!(!passed, "{out}");
    assert!(out.contains("FAIL"), "{out}");
    assert!(
        out.contains(r#"the result is {"ok":{"total-cents":1000}}, where the case expects {"ok":{"total-cents":750}}"#),
        "{out}"
    );
    assert!(
        out.contains(r#"  - round 1: orders.place → inventory.reserve on main: {"kind":"execute","params":[1,3]"#),
        "{out}"
    );
    assert!(
        out.contains(r#"  + round 1: orders.place → inventory.reserve on main: {"kind":"execute","params":[1,4]"#),
        "{out}"
    );
    assert!(out.contains("0 passed, 1 failed"), "{out}");

    let (passed, out) = replay(&f, &["test", "--update", &file.to_string_lossy()]);
    assert!(passed, "{out}");
    let (passed, out) = replay(&f, &["test", &file.to_string_lossy()]);
    assert!(passed, "{out}");

    // Without the stock read, the replay cannot answer inventory.
    let mut case: serde_json::Value = serde_json::from_str(&original).expect("JSON");
    case["reads"].as_array_mut().expect("reads").remove(1);
    std::fs::write(&file, case.to_string()).expect("write");
    let (passed, out) = replay(&f, &["test", &file.to_string_lossy()]);
    assert!(!passed, "{out}");
    assert!(
        out.contains("a read the case does not hold: `SELECT on_hand FROM stock WHERE product_id = ?1` with [1] on main by inventory"),
        "{out}"
    );
}

/// A deliberately changed service (its clearing now writes status
/// `settled`, the bytes of its SQL changed in the component) fails the case
/// recorded from the original, with the changed command in the diff.
#[test]
fn a_changed_service_fails_its_recorded_case() {
    let f = Fixture::new(&["orders", "inventory", "products"]);
    let cases = f.dir.path().join("cases");
    std::fs::create_dir_all(&cases).expect("cases dir");
    record(&f, &cases);
    let component = f.services().join("orders.wasm");
    let bytes = std::fs::read(&component).expect("orders.wasm");
    let at = bytes.windows(9).position(|w| w == b"'cleared'").expect("the clearing SQL in the component");
    let mut changed = bytes.clone();
    changed[at..at + 9].copy_from_slice(b"'settled'");
    std::fs::write(&component, changed).expect("write the changed service");
    let (passed, out) = replay(&f, &["test", &cases.to_string_lossy()]);
    assert!(!passed, "{out}");
    assert!(out.contains("2 passed, 1 failed"), "{out}");
    assert!(out.contains("FAIL") && out.contains("clear.json"), "{out}");
    assert!(out.contains(r#"  - round 1: orders.do-clearing on main: {"kind":"execute","params":[1],"sql":"UPDATE orders SET status = 'cleared'"#), "{out}");
    assert!(out.contains(r#"  + round 1: orders.do-clearing on main: {"kind":"execute","params":[1],"sql":"UPDATE orders SET status = 'settled'"#), "{out}");
}

/// The example cases under examples/tests pass against the example
/// services, as `just test` runs them.
#[test]
fn the_example_cases_pass() {
    let f = Fixture::new(&["orders", "inventory", "products", "cart"]);
    let (passed, out) = replay(&f, &["test", &repo().join("examples/tests").to_string_lossy()]);
    assert!(passed, "{out}");
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

/// The ports in Python (orders), C (inventory) and JavaScript (products)
/// pass the cases recorded from the Rust services: the polyglot parity
/// check, by the product itself.
#[test]
fn the_ports_pass_the_cases_of_the_rust_services() {
    let ports: Vec<PathBuf> =
        ["orders-py", "inventory-c", "products-js"].iter().map(|p| components().join(format!("{p}.wasm"))).collect();
    if let Some(missing) = ports.iter().find(|p| !p.exists()) {
        skip_without(&format!("skipping: {} not built (just polyglot)", missing.display()));
        return;
    }
    let rust = Fixture::new(&["orders", "inventory", "products"]);
    let cases = rust.dir.path().join("cases");
    std::fs::create_dir_all(&cases).expect("cases dir");
    record(&rust, &cases);
    let ported = Fixture::new(&[]);
    for (component, service) in [("orders-py", "orders"), ("inventory-c", "inventory"), ("products-js", "products")] {
        ported.add_component_as(component, service);
    }
    let (passed, out) = replay(&ported, &["test", &cases.to_string_lossy()]);
    assert!(passed, "{out}");
    assert!(out.contains("3 passed, 0 failed"), "{out}");
}

/// `sluice serve --record DIR` writes each typed call's scope, and each
/// request to a mounted `wasi:http` component, as a case: the README's
/// scenario, replayed, gives the same commands; with
/// `--redact`, no customer's name is anywhere in a case, and the cases
/// still replay (a redacted text is the same token everywhere).
#[test]
fn serve_records_cases_that_replay_and_hold_no_redacted_value() {
    let f = Fixture::new(&["orders", "inventory", "products", "cart", "api"]);
    f.migrate();
    let dir = f.dir.path().join("recorded");
    let dir_arg = dir.to_string_lossy().to_string();
    let served = f.serve(&["--record", &dir_arg, "--redact", "arg:customer", "--redact", "column:customer"]);
    for (path, body) in [
        ("/services/products/add", serde_json::json!({"name": "widget", "price-cents": 250})),
        ("/services/inventory/restock", serde_json::json!({"product-id": 1, "quantity": 10})),
        ("/services/orders/place", serde_json::json!({"customer": "annabel", "product-id": 1, "quantity": 3})),
        ("/services/orders/place", serde_json::json!({"customer": "bobby", "product-id": 1, "quantity": 30})),
        ("/services/orders/do-clearing", serde_json::json!({"order-id": 1})),
        ("/services/cart/add", serde_json::json!({"customer": "annabel", "product-id": 1, "quantity": 2})),
        ("/services/cart/show", serde_json::json!({"customer": "annabel"})),
    ] {
        let (status, answer) = served.post(path, &body);
        assert!(status == 200 || status == 422, "{path}: {status} {answer}");
    }
    // The README's requests to the mounted wasi:http component.
    let (status, answer) =
        served.post("/shop/orders", &serde_json::json!({"customer": "bobby", "product-id": 1, "quantity": 2}));
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = served.get("/shop/orders/2");
    assert_eq!(status, 200, "{answer}");
    drop(served);
    let files: Vec<_> = std::fs::read_dir(&dir).expect("recorded").flatten().map(|e| e.path()).collect();
    assert_eq!(files.len(), 9, "{files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).expect("case");
        for secret in ["annabel", "bobby"] {
            assert!(!text.contains(secret), "{} holds {secret}:\n{text}", file.display());
        }
    }
    let (passed, out) = replay(&f, &["test", &dir_arg]);
    assert!(passed, "{out}");
    assert!(out.contains("9 passed, 0 failed"), "{out}");
}

/// A recorded request's credentials never reach the case: `Authorization`
/// and `Cookie` with no rule, a header named by `--redact header:NAME` too;
/// each value is a token wherever it appears, and the case still replays.
/// Before, they were kept verbatim.
#[test]
fn recorded_requests_keep_no_credential() {
    let f = Fixture::new(&["orders", "inventory", "products", "api"]);
    f.migrate();
    let dir = f.dir.path().join("recorded");
    let dir_arg = dir.to_string_lossy().to_string();
    let served = f.serve(&["--record", &dir_arg, "--redact", "header:x-api-key"]);
    let secrets = ["Bearer s3cret-token", "sid=c00kie-value", "k3y-value"];
    let answer = reqwest::blocking::Client::new()
        .get(served.url("/shop/orders/1"))
        .header("authorization", secrets[0])
        .header("cookie", secrets[1])
        .header("x-api-key", secrets[2])
        .header("x-request-note", "kept as it is")
        .send()
        .expect("GET");
    assert_eq!(answer.status().as_u16(), 404);
    drop(served);
    let files: Vec<_> = std::fs::read_dir(&dir).expect("recorded").flatten().map(|e| e.path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).expect("case");
    for secret in secrets {
        assert!(!text.contains(secret), "the case holds {secret}:\n{text}");
    }
    assert!(text.contains("redacted-1") && text.contains("kept as it is"), "{text}");
    let (passed, out) = replay(&f, &["test", &dir_arg]);
    assert!(passed, "{out}");
}

/// A scope that reads more than a case may hold runs as usual while being
/// recorded; its tape stops at the cap instead of growing with what a
/// service reads.
#[test]
fn a_recorded_scope_past_the_cap_runs_and_is_not_kept() {
    let f = Fixture::new(&["hostile"]);
    f.migrate();
    let host = f.host();
    let mut scope = host.scope();
    scope.record();
    // About 0.9 MiB per read, within the service's result-bytes.
    let sql = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 15000) \
               SELECT x, 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' FROM r";
    for _ in 0..20 {
        let out = scope.call("hostile", "query", &[wasmtime::component::Val::String(sql.into())]).expect("query");
        assert_eq!(sluice_host::values::to_json(&out[0]), serde_json::json!({"ok": 15000}));
    }
    let tape = scope.take_tape();
    assert!(tape.full, "the tape did not stop");
    assert!(tape.bytes <= sluice_host::reads::TAPE_CAP);
    assert!(tape.reads.len() < 20, "{} reads kept", tape.reads.len());
}
