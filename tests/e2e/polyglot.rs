//! The example services ported to other languages (`guests/orders-py`,
//! `guests/products-js`, `guests/inventory-c`, built by
//! `scripts/build-polyglot`): the same scenario gives the same results, the
//! same errors, the same commands and the same data as the Rust services,
//! with a Python `orders` calling a C `inventory` in one scope; each
//! language's commands are applied only at save; what they print reaches the
//! host log tagged with the service; and a restart does not compile them
//! again.

use serde_json::{Value as Json, json};
use sluice_host::call::{self, Mode};
use sluice_host::runtime::CodeSource;
use wasmtime::component::Val;

use crate::support::s;
use crate::support::{Fixture, components, text};

/// The ports, by the service each one stands in for.
const PORTS: [(&str, &str); 3] = [("products-js", "products"), ("orders-py", "orders"), ("inventory-c", "inventory")];

/// True when every port was built; otherwise says what to run and skips
/// (fails when SLUICE_REQUIRE_TOOLS=1, as in CI).
fn ports_built() -> bool {
    let missing: Vec<&str> =
        PORTS.iter().map(|(port, _)| *port).filter(|p| !components().join(format!("{p}.wasm")).exists()).collect();
    if missing.is_empty() {
        return true;
    }
    crate::support::skip_without(&format!(
        "components {} not built: run `just polyglot` (it says which toolchain is missing); skipping",
        missing.join(", ")
    ));
    false
}

/// A fixture with the example services under their usual names, each taken
/// from `components` (a port or the Rust original).
fn examples(components: [&str; 3]) -> Fixture {
    let fixture = Fixture::new(&[]);
    for (component, service) in components.iter().zip(["products", "orders", "inventory"]) {
        fixture.add_component_as(component, service);
    }
    fixture.migrate();
    fixture
}

/// The example scenario, every error included, one scope per step.
fn scenario() -> Vec<(&'static str, &'static str, Vec<Val>)> {
    vec![
        ("products", "add", vec![s("widget"), Val::S64(250)]),
        ("products", "add", vec![s(" gadget "), Val::S64(1200)]),
        ("products", "add", vec![s("widget"), Val::S64(99)]),
        ("products", "add", vec![s("  "), Val::S64(5)]),
        ("products", "add", vec![s("thing"), Val::S64(0)]),
        ("products", "list", vec![]),
        ("inventory", "restock", vec![Val::S64(1), Val::U32(10)]),
        ("inventory", "restock", vec![Val::S64(1), Val::U32(0)]),
        ("inventory", "level", vec![Val::S64(1)]),
        ("orders", "place", vec![s("ann"), Val::S64(1), Val::U32(3)]),
        ("orders", "place", vec![s("bob"), Val::S64(1), Val::U32(30)]),
        ("orders", "place", vec![s(" "), Val::S64(1), Val::U32(1)]),
        ("orders", "place", vec![s("cy"), Val::S64(99), Val::U32(1)]),
        ("orders", "place", vec![s("cy"), Val::S64(1), Val::U32(0)]),
        ("orders", "place", vec![s("cy"), Val::S64(2), Val::U32(1)]),
        ("orders", "do-clearing", vec![Val::S64(1)]),
        ("orders", "do-clearing", vec![Val::S64(1)]),
        ("orders", "do-clearing", vec![Val::S64(42)]),
        ("inventory", "level", vec![Val::S64(1)]),
    ]
}

/// Runs the scenario and returns each step's answer (without scope ids,
/// which differ between runs) and the database at the end.
fn run_scenario(fixture: &Fixture) -> (Vec<Json>, String) {
    let host = fixture.host();
    let answers = scenario()
        .into_iter()
        .map(|(service, function, args)| {
            let answer = match call::run(&host, service, function, &args, Mode::Save) {
                Ok(report) => report.to_json(),
                Err(e) => json!({ "error": e.to_string() }),
            };
            json!({ "call": format!("{service}.{function}"), "answer": without_scopes(answer) })
        })
        .collect();
    (answers, data(&fixture.dump()))
}

/// A database dump without the migration records, whose times differ.
fn data(dump: &str) -> String {
    let mut keep = true;
    dump.lines()
        .filter(|line| {
            if let Some(table) = line.strip_prefix("== ") {
                keep = table != "sluice_migrations";
            }
            keep
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn without_scopes(value: Json) -> Json {
    match value {
        Json::Object(map) => {
            Json::Object(map.into_iter().filter(|(k, _)| k != "scope").map(|(k, v)| (k, without_scopes(v))).collect())
        }
        Json::Array(items) => Json::Array(items.into_iter().map(without_scopes).collect()),
        other => other,
    }
}

/// A JavaScript `products`, a Python `orders` and a C `inventory` (which the
/// Python code calls in the same scope) answer every step of the scenario
/// exactly as the Rust services do, queue the same commands, and leave the
/// same data.
#[test]
fn mixed_languages_match_the_rust_services() {
    if !ports_built() {
        return;
    }
    let (rust, rust_db) = run_scenario(&examples(["products", "orders", "inventory"]));
    let mixed_fixture = examples(["products-js", "orders-py", "inventory-c"]);
    let (mixed, mixed_db) = run_scenario(&mixed_fixture);
    for (want, got) in rust.iter().zip(&mixed) {
        assert_eq!(got, want, "the ports answer differently");
    }
    assert_eq!(mixed_db, rust_db, "the ports leave different data");
    // The scenario did what it says: the order, its stock, both events.
    let db = mixed_fixture.db();
    let events: Vec<String> = db
        .prepare("SELECT event FROM order_events ORDER BY id")
        .and_then(|mut q| q.query_map([], |r| r.get(0))?.collect())
        .expect("events");
    assert_eq!(events, ["placed", "cleared"]);
    let on_hand: i64 = db.query_row("SELECT on_hand FROM stock WHERE product_id = 1", [], |r| r.get(0)).expect("stock");
    assert_eq!(on_hand, 7);
    let place = &mixed[9]["answer"];
    assert_eq!(place["result"], json!({ "ok": { "total-cents": 750 } }), "{place}");
    let chains: Vec<&Json> =
        place["ending"]["applied"].as_array().expect("applied").iter().map(|a| &a["command"]["chain"]).collect();
    assert_eq!(chains[0], &json!(["orders.place", "inventory.reserve"]), "Python called C in one scope: {place}");
    assert_eq!(mixed[10]["answer"]["result"], json!({ "err": { "out-of-stock": 7 } }));
}

/// Calls `service.function` in a scope of the mixed examples and checks that
/// its `queued` commands reach `table` only when the scope is saved, and that
/// a scope dropped unsaved applies nothing.
fn applied_only_at_save(service: &str, function: &str, args: &[Val], table: &str, queued: usize) {
    if !ports_built() {
        return;
    }
    let fixture = examples(["products-js", "orders-py", "inventory-c"]);
    fixture
        .db()
        .execute_batch(
            "INSERT INTO products (id, name, price_cents) VALUES (1, 'widget', 250), (2, 'thing', 10);
             INSERT INTO stock (product_id, on_hand) VALUES (1, 100);",
        )
        .expect("product and stock");
    let host = fixture.host();
    let dump = fixture.dump();
    let mut unsaved = host.scope();
    unsaved.call(service, function, args).unwrap_or_else(|e| panic!("{service}.{function}: {e}"));
    assert_eq!(unsaved.pending().len(), queued, "{service}.{function} queued");
    drop(unsaved);
    assert_eq!(fixture.dump(), dump, "a scope dropped unsaved applied something");

    let before = fixture.count(table);
    let mut scope = host.scope();
    scope.call(service, function, args).unwrap_or_else(|e| panic!("{service}.{function}: {e}"));
    assert_eq!(scope.pending().len(), queued, "{service}.{function} queued");
    assert_eq!(fixture.count(table), before, "{service}.{function} wrote before the save");
    let report = scope.save().unwrap_or_else(|e| panic!("{service}.{function} save: {e}"));
    assert!(report.applied.len() >= queued, "{report:?}");
    assert_eq!(fixture.count(table), before + 1, "{service}.{function} after the save");
}

/// JavaScript: `products.add` queues its insert; it lands at save.
#[test]
fn javascript_commands_apply_only_at_save() {
    applied_only_at_save("products", "add", &[s("gadget"), Val::S64(1200)], "products", 1);
}

/// C: `inventory.restock` queues its upsert; it lands at save.
#[test]
fn c_commands_apply_only_at_save() {
    applied_only_at_save("inventory", "restock", &[Val::S64(2), Val::U32(5)], "stock", 1);
}

/// Python: `orders.place` queues the stock reservation (through the C
/// `inventory`) and the order; they land at save.
#[test]
fn python_commands_apply_only_at_save() {
    applied_only_at_save("orders", "place", &[s("ann"), Val::S64(1), Val::U32(2)], "orders", 2);
}

/// `print` (Python), `console.log` (JavaScript) and `printf` (C) reach the
/// host log, tagged with the service, and do not trap.
#[test]
fn guest_output_reaches_the_host_log_tagged_with_the_service() {
    if !ports_built() {
        return;
    }
    let fixture = examples(["products-js", "orders-py", "inventory-c"]);
    let call = |args: &[&str]| {
        let out = fixture.sluice_env(&[("SLUICE_LOG", "guest=info")], &[&["call"], args].concat());
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stderr)
    };
    let log = call(&["products.add", "widget", "250"]);
    assert!(log.contains("queued product widget at 250 cents") && log.contains("service=\"products\""), "{log}");
    let log = call(&["inventory.restock", "1", "10"]);
    assert!(log.contains("restocking product 1 by 10") && log.contains("service=\"inventory\""), "{log}");
    let log = call(&["orders.place", "ann", "1", "3"]);
    assert!(log.contains("order 1 placed") && log.contains("service=\"orders\""), "{log}");
}

/// The large components compile once: a restart with unchanged files reads
/// every one from the compilation cache.
#[test]
fn restart_does_not_compile_the_ports_again() {
    if !ports_built() {
        return;
    }
    let fixture = Fixture::new(&[]);
    for (port, service) in PORTS {
        fixture.add_component_as(port, service);
    }
    let mut options = fixture.options();
    options.runtime.cache_dir = Some(fixture.dir.path().join("own-cache"));
    let codes = |host: &sluice_host::Host| -> Vec<CodeSource> {
        PORTS.iter().map(|(_, service)| host.registry().service(service).expect("loaded").code).collect()
    };
    let first = sluice_host::Host::open(&options).expect("first start");
    assert_eq!(codes(&first), [CodeSource::Compiled; 3]);
    drop(first);
    let second = sluice_host::Host::open(&options).expect("second start");
    assert_eq!(codes(&second), [CodeSource::Cached; 3]);
}
