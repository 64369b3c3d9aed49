//! The `sluice` binary, run as a user would run it.

use serde_json::Value as Json;

use crate::support::{Fixture, text};

/// `sluice list` shows each service, its functions and their types.
#[test]
fn list_shows_functions_and_types() {
    let f = Fixture::new(&["orders", "products", "inventory"]);
    let out = f.sluice(&["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("orders  ("), "{stdout}");
    assert!(stdout.contains("  acme:orders/api@0.1.0\n"), "{stdout}");
    // Types are named as the author named them in WIT, not written out.
    assert!(stdout.contains("    do-clearing(order-id: s64) -> result<_, order-error>\n"), "{stdout}");
    assert!(
        stdout.contains("    place(customer: string, product-id: s64, quantity: u32) -> result<placed, order-error>\n"),
        "{stdout}"
    );
    assert!(stdout.contains("    add(name: string, price-cents: s64) -> result<_, product-error>\n"), "{stdout}");
    assert!(
        stdout.contains(
            "  may on main: reads orders, products; inserts clearings, order_events, orders; updates orders; \
             relaxed reads of products\n"
        ),
        "{stdout}"
    );

    let out = f.sluice(&["list", "--json"]);
    let json: Json = serde_json::from_slice(&out.stdout).expect("list --json is JSON");
    let orders = &json["services"][1];
    assert_eq!(orders["name"], "orders");
    assert_eq!(orders["functions"][0]["params"][2]["type"], "u32");
    // Each named type of a signature, where it is defined and what it is.
    let types = &orders["functions"][0]["types"];
    let named = |name: &str| types.as_array().and_then(|t| t.iter().find(|t| t["name"] == name)).cloned();
    let placed = named("placed").expect("place's types name placed");
    assert_eq!(placed["interface"], "acme:orders/api@0.1.0");
    assert_eq!(placed["type"], "record { total-cents: s64 }");
    let error = named("order-error").expect("and order-error");
    assert!(error["type"].as_str().is_some_and(|t| t.ends_with("out-of-stock(s64), store(error) }")), "{error}");
    assert_eq!(
        named("error").expect("and the sluice:service error it holds")["interface"],
        "sluice:service/types@0.1.0"
    );
    assert_eq!(orders["calls"][0]["service"], "inventory");
    assert_eq!(orders["hooks"], serde_json::json!(["init", "on-save", "on-finally", "dispose"]));
    assert_eq!(orders["grants"][0], "events: publishes on orders.");
    assert_eq!(
        orders["grants"][1],
        "main: reads orders, products; inserts clearings, order_events, orders; updates orders; relaxed reads of products"
    );
    assert_eq!(orders["limits"]["deadline-ms"], 10_000);
    assert_eq!(orders["limits"]["memory-mb"], 64);
    assert!(stdout.contains("  calls inventory through acme:inventory/stock@0.1.0\n"), "{stdout}");
}

/// `sluice call` runs one scope, saves it, and prints the result and the
/// commands it applied; the database has them.
#[test]
fn call_prints_result_and_applied_commands() {
    let f = Fixture::new(&["orders", "products", "inventory"]);
    f.migrate();
    let out = f.sluice(&["call", "products.add", "widget", "250"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("result: ok\nsaved scope-"), "{stdout}");
    assert!(stdout.contains("1 command(s) applied in 1 round(s)"), "{stdout}");
    assert!(
        stdout
            .contains("  round 1: #1 products.add on main: insert into products (name, price_cents) -> inserted row 1"),
        "{stdout}"
    );

    assert!(f.sluice(&["call", "inventory.restock", "1", "4"]).status.success());
    let out = f.sluice(&["call", "--json", "orders.place", "\"ann\"", "1", "4"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: Json = serde_json::from_slice(&out.stdout).expect("call --json is JSON");
    assert_eq!(json["result"]["ok"]["total-cents"], 1000);
    assert_eq!(json["ending"]["status"], "saved");
    assert_eq!(json["ending"]["applied"][1]["command"]["op"]["table"], "orders");
    assert_eq!(json["ending"]["applied"][1]["outcome"]["inserted"], 1);
    assert_eq!(
        json["ending"]["applied"][0]["command"]["chain"],
        serde_json::json!(["orders.place", "inventory.reserve"])
    );
    assert_eq!(f.count("orders"), 1);
}

/// A service's own error result is printed, nothing is applied, and the
/// exit code is 2.
#[test]
fn call_with_service_error_applies_nothing() {
    let f = Fixture::new(&["orders", "products", "inventory"]);
    f.migrate();
    let before = f.dump();
    let out = f.sluice(&["call", "orders.do-clearing", "7"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("result: err(unknown-order(7))"), "{stdout}");
    assert!(stdout.contains("returned an error; nothing was applied (0 command(s) were queued)"), "{stdout}");
    assert_eq!(f.dump(), before);
}

/// Unknown services and functions and bad arguments are one clear line on
/// stderr and exit code 1; never a panic or a backtrace.
#[test]
fn call_errors_are_clear() {
    let f = Fixture::new(&["orders", "products", "inventory"]);
    f.migrate();
    let cases: &[(&[&str], &str)] = &[
        (&["call", "orders.nope"], "error: service orders has no function \"nope\"; it exports: place, do-clearing"),
        (&["call", "nobody.place"], "error: no service \"nobody\"; loaded services: inventory, orders, products"),
        (&["call", "orders"], "error: \"orders\" is not SERVICE.FUNCTION (for example orders.place)"),
        (
            &["call", "orders.place", "ann", "1"],
            "error: orders.place takes 3 argument(s) (customer: string, product-id: s64, quantity: u32), got 2",
        ),
        (
            &["call", "orders.place", "ann", "one", "1"],
            "error: orders.place: argument 2 (product-id: s64): expected s64 as JSON, but \"one\" is not JSON",
        ),
        (
            &["call", "orders.place", "ann", "1", "-3"],
            "error: orders.place: argument 3 (quantity: u32): -3 is out of range for u32",
        ),
        (
            &["call", "orders.place", "ann", "1.5", "1"],
            "error: orders.place: argument 2 (product-id: s64): expected s64, got the non-integer 1.5",
        ),
    ];
    for (args, expected) in cases {
        let out = f.sluice(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with(expected), "{args:?}:\n got: {stderr}\nwant: {expected}");
        assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    }
}

/// A bad component file is a warning; the other services still answer.
#[test]
fn bad_component_does_not_stop_the_cli() {
    let f = Fixture::new(&["products"]);
    f.migrate();
    f.write_service("broken.wasm", b"\0asm\x0d\0\x01\0garbage");
    let out = f.sluice(&["call", "products.list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("warning: skipped broken: "), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("result: ok([])"), "{}", text(&out.stdout));
}

/// Migrations apply once: a second run skips them.
#[test]
fn migrate_is_idempotent() {
    let f = Fixture::new(&[]);
    f.migrate();
    let schema = crate::support::repo().join("examples/schema");
    let out = f.sluice(&["migrate", &schema.to_string_lossy()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "already applied 0001_products.sql\nalready applied 0002_orders.sql\nalready applied 0003_inventory.sql\n\
         already applied 0004_payments.sql\n"
    );
    assert_eq!(f.count("sluice_migrations"), 4);
}

/// An applied migration that was edited afterwards is refused, naming it:
/// the database no longer matches the file. A database migrated before
/// checksums existed adopts the files' checksums.
#[test]
fn an_edited_migration_is_refused() {
    let f = Fixture::new(&[]);
    let dir = f.dir.path().join("schema");
    std::fs::create_dir_all(&dir).expect("schema dir");
    std::fs::write(dir.join("0001_t.sql"), "CREATE TABLE t (a);").expect("write");
    let migrate = || f.sluice(&["migrate", &dir.to_string_lossy()]);
    assert!(migrate().status.success());
    std::fs::write(dir.join("0001_t.sql"), "CREATE TABLE t (a, b);").expect("edit");
    let out = migrate();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("migration 0001_t.sql was applied with checksum ")
            && stderr.contains("an applied migration must not change; put the change in a new migration"),
        "{stderr}"
    );

    // Recorded without a checksum (an older host): adopted, then held to.
    f.db().execute("UPDATE sluice_migrations SET checksum = NULL", []).expect("forget the checksum");
    let out = migrate();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "already applied 0001_t.sql\n");
    std::fs::write(dir.join("0001_t.sql"), "CREATE TABLE t (a);").expect("edit back");
    assert_eq!(migrate().status.code(), Some(1));
}

/// A trap is reported with the service, the function and the panic message.
#[test]
fn call_reports_traps() {
    let f = Fixture::new(&["probe"]);
    let out = f.sluice(&["call", "probe.fail", "it broke"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: probe.fail failed: wasm trap: wasm `unreachable` instruction executed"),
        "{stderr}"
    );
    assert!(stderr.contains("it broke"), "{stderr}");
}

/// What a guest prints goes to the host log, one line per line, tagged with
/// the scope and the service.
#[test]
fn guest_output_is_logged_with_scope_and_service() {
    let f = Fixture::new(&["probe"]);
    let out = f.sluice_env(&[("SLUICE_LOG", "guest=info")], &["call", "probe.note", "hello"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let line = stderr.lines().find(|l| l.contains("call note hello")).unwrap_or_default();
    assert!(
        line.contains("scope=scope-") && line.contains("service=\"probe\"") && line.contains("stream=\"stdout\""),
        "{stderr}"
    );
}

/// Output to a reader that went away (`sluice list | head -1`) ends the
/// command quietly, without a panic.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let f = Fixture::new(&["probe", "products"]);
    let mut child = f
        .command()
        .arg("list")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sluice list");
    // Nobody will read: close the pipe before the host has loaded anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{:?}: {}", out.status, text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
}

/// `sluice call 'service.function(args)'` takes WAVE, as `wasmtime run
/// --invoke` does: records, options, variants, lists, flags; the result is
/// printed in WAVE, and a value that does not fit is marked where it goes
/// wrong.
#[test]
fn call_takes_and_prints_wave() {
    let f = Fixture::new(&["probe"]);
    let sample = "{flag: true, small: 1, big: -5, ratio: 0.5, letter: 'x', label: \"hi\", tags: [\"a\", \"b\"], \
                  pair: (1, \"b\"), maybe: some(3), colour: green, access: {read, write}, shape: rectangle((1.5, 2.25)), \
                  outcome: err(\"no\")}";
    let out = f.sluice(&["call", &format!("probe.echo({sample})")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let printed = stdout.lines().next().unwrap_or_default();
    assert_eq!(printed, format!("result: {}", sample.split_whitespace().collect::<Vec<_>>().join(" ")));

    // The JSON form of the same call is still there.
    let out = f.sluice(&["call", "--json", "probe.add(2, 3)"]);
    let json: Json = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["result"], 5);

    // A value that does not fit its parameter: the place is marked.
    let out = f.sluice(&["call", "probe.add(1, \"x\")"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("  probe.add(1, \"x\")\n               ^"), "{stderr}");
    // Arguments in both forms are refused.
    let out = f.sluice(&["call", "probe.add(1, 2)", "3"]);
    assert!(text(&out.stderr).contains("inside the parentheses or after the name, not both"), "{}", text(&out.stderr));
}
