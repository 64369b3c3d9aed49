//! The hostile-guest corpus: every attack in `guests/hostile` (and the
//! `intruder` component) against a real host. For each the test checks
//! three things: the error is clear and names the service and the cause;
//! the database is unchanged, table by table, row by row; and the same host
//! then serves a normal scope correctly.

use std::time::Duration;

use sluice_host::call::{self, Ending, Mode};
use sluice_host::command::Outcome;
use sluice_host::registry::LoadError;
use sluice_host::{Host, HostOptions, values};
use wasmtime::component::Val;

use crate::support::Fixture;

pub(crate) fn s(v: &str) -> Val {
    Val::String(v.to_string())
}

/// A host with `hostile` and `products`, the example schema, and one product.
pub(crate) fn corpus() -> Fixture {
    let f = Fixture::new(&["hostile", "products"]);
    f.migrate();
    let host = f.host();
    call::run(&host, "products", "add", &[s("widget"), Val::S64(250)], Mode::Save).expect("seed");
    f
}

/// A corpus host with its database dump before any attack.
fn corpus_host() -> (Fixture, Host, String) {
    let f = corpus();
    let host = f.host();
    let before = f.dump();
    (f, host, before)
}

/// Runs one attack as one request and returns what the caller is told: the
/// scope's error, or the service's own error value when it returned one.
pub(crate) fn attack(host: &Host, function: &str, args: &[Val]) -> String {
    match call::run(host, "hostile", function, args, Mode::Save) {
        Err(e) => e.to_string(),
        Ok(report) => match report.ending {
            // The guest's error value (a denial too discards the scope).
            Ending::Discarded { .. } | Ending::Denied { .. } => values::to_json(&report.results[0]).to_string(),
            other => panic!("hostile.{function} was not stopped: {other:?}"),
        },
    }
}

/// The same host serves a normal request: it adds a product and lists it.
pub(crate) fn serves_normally(host: &Host, f: &Fixture, name: &str) {
    let before = f.count("products");
    call::run(host, "products", "add", &[s(name), Val::S64(100)], Mode::Save).expect("a normal scope saves");
    assert_eq!(f.count("products"), before + 1);
    let list = call::run(host, "products", "list", &[], Mode::Save).expect("a normal scope reads");
    assert!(values::to_json(&list.results[0]).to_string().contains(name));
}

/// Runs `function` on a fresh corpus host whose hostile manifest is
/// `manifest` (the built one when `None`), with `tune` applied to the host
/// options, and checks the three things. Returns the error.
fn contained(manifest: Option<&str>, tune: impl FnOnce(&mut HostOptions), function: &str, args: &[Val]) -> String {
    let f = corpus();
    if let Some(text) = manifest {
        f.write_manifest("hostile", text);
    }
    let mut options = f.options();
    tune(&mut options);
    let host = Host::open(&options).expect("host");
    assert!(host.registry().failures().is_empty(), "{:?}", host.registry().failures());
    let before = f.dump();
    let error = attack(&host, function, args);
    assert_eq!(f.dump(), before, "hostile.{function} changed the database");
    serves_normally(&host, &f, &format!("after-{function}"));
    error
}

const GRANTS: &str = "[channels.main]\nreads = [\"products\"]\ninserts = [\"products\"]\ndeletes = [\"products\"]\n";

fn with_limits(limits: &str) -> String {
    format!("{GRANTS}[limits]\n{limits}\n")
}

#[test]
fn an_infinite_loop_hits_the_deadline() {
    let manifest = with_limits("deadline-ms = 300");
    let error = contained(Some(&manifest), |_| {}, "spin", &[]);
    assert_eq!(
        error,
        "hostile.spin failed: hostile broke its limit deadline-ms: still running after 300 ms (limits.deadline-ms)"
    );
}

#[test]
fn an_infinite_loop_hits_the_scope_timeout() {
    let error = contained(None, |o| o.runtime.scope_timeout = Duration::from_millis(400), "spin", &[]);
    assert_eq!(
        error,
        "hostile.spin failed: hostile broke its limit scope-timeout: the scope ran past the host's scope timeout \
         of 400 ms"
    );
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    let manifest = with_limits("fuel = 2000000");
    let error = contained(Some(&manifest), |o| o.runtime.limits.fuel = Some(1 << 40), "spin", &[]);
    assert_eq!(
        error,
        "hostile.spin failed: hostile broke its limit fuel: hostile ran out of fuel: hostile's calls may use \
         2000000 units (limits.fuel)"
    );
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let error = contained(None, |_| {}, "balloon", &[Val::U32(1024)]);
    assert!(error.starts_with("hostile.balloon failed: hostile broke its limit memory-mb: tried to grow its memory"));
    assert!(error.contains("over its limit of 64.0 MiB (limits.memory-mb)"), "{error}");
    // Within the limit the same function works.
    let f = corpus();
    let out = call::run(&f.host(), "hostile", "balloon", &[Val::U32(8)], Mode::Save).expect("8 MiB is fine");
    assert_eq!(out.results, [Val::U32(8)]);
}

#[test]
fn unbounded_recursion_exhausts_the_stack() {
    let error = contained(None, |_| {}, "recurse", &[Val::U64(u64::MAX)]);
    assert_eq!(error, "hostile.recurse failed: wasm trap: call stack exhausted");
}

#[test]
fn a_100_mb_result_hits_the_result_limit() {
    // Memory is raised so the guest can build the string: the result limit,
    // not the memory limit, is what stops it.
    let manifest = with_limits("memory-mb = 256");
    let error = contained(Some(&manifest), |_| {}, "huge", &[Val::U32(100)]);
    assert_eq!(
        error,
        "hostile.huge failed: hostile broke its limit result-bytes: hostile.huge returned 100.0 MiB, over its limit \
         of 4.0 MiB (limits.result-bytes)"
    );
}

#[test]
fn a_million_enqueues_hit_the_command_limit() {
    let error = contained(None, |_| {}, "flood", &[Val::U32(1_000_000)]);
    assert_eq!(
        error,
        "hostile.flood failed: hostile broke its limit commands: queued more than its limit of 10000 commands in \
         one scope (limits.commands)"
    );
    // A manifest can tighten it.
    let error = contained(Some(&with_limits("commands = 5")), |_| {}, "flood", &[Val::U32(6)]);
    assert!(error.contains("queued more than its limit of 5 commands"), "{error}");
}

#[test]
fn a_huge_command_hits_the_command_size_limit() {
    let big = format!("DELETE FROM products WHERE name = '{}'", "x".repeat(2 << 20));
    let error = contained(None, |_| {}, "execute", &[s(&big)]);
    assert!(error.starts_with("hostile.execute failed: hostile broke its limit command-bytes: queued a command of"));
    assert!(error.contains("over its limit of 1.0 MiB (limits.command-bytes)"), "{error}");
}

#[test]
fn files_environment_and_arguments_are_not_there() {
    let (f, host, before) = corpus_host();
    let out = call::run(&host, "hostile", "snoop", &[], Mode::Save).expect("snoop returns what it saw");
    let seen = values::to_json(&out.results[0]).to_string();
    // No directory is preopened, so no path resolves to anything.
    assert!(seen.contains("passwd: No such file or directory"), "{seen}");
    assert!(seen.contains("root: No such file or directory"), "{seen}");
    assert!(seen.contains("env: []") && seen.contains("args: []"), "{seen}");
    assert!(!seen.contains("root:x:0"), "{seen}");
    assert_eq!(f.dump(), before);
    serves_normally(&host, &f, "after-snoop");
}

#[test]
fn sockets_are_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let address = listener.local_addr().expect("addr").to_string();
    let error = contained(None, |_| {}, "connect", &[s(&address)]);
    assert!(error.starts_with(&format!("{{\"err\":\"connect {address}: ")), "{error}");
    assert!(listener.accept().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock), "a connection arrived");
}

#[test]
fn exit_ends_the_scope_not_the_host() {
    // WASI 0.2's exit takes ok or err, so Rust's exit(3) arrives as exit(1).
    let error = contained(None, |_| {}, "quit", &[Val::U8(3)]);
    assert_eq!(
        error,
        "hostile.quit failed: the guest called exit(1); a service cannot end the host, so its scope ends instead"
    );
}

#[test]
fn output_is_capped() {
    let f = corpus();
    let host = f.host();
    let mut scope = host.scope();
    scope.call("hostile", "shout", &[Val::U32(1024)]).expect("shouting is not fatal");
    let transcript = scope.end();
    assert_eq!(transcript.stdout.len(), 64 << 10, "stdout is cut at the cap");
    serves_normally(&host, &f, "after-shout");
}

#[test]
fn a_call_to_an_ungranted_service_is_refused_at_load() {
    let f = Fixture::new(&["intruder", "inventory", "products"]);
    f.migrate();
    let before = f.dump();
    let host = f.host();
    let failures: Vec<String> = host.registry().failures().iter().map(|x| x.error.to_string()).collect();
    assert_eq!(
        failures,
        [format!(
            "intruder: imports acme:inventory/stock@0.1.0 from service inventory, which its manifest does not grant; \
         grant it in {}: calls = [\"inventory\"]",
            f.manifest("intruder").display()
        )]
    );
    assert!(matches!(host.registry().failures()[0].error, LoadError::CallNotGranted { .. }));
    let registry = host.registry();
    let loaded: Vec<&str> = registry.services().map(|s| s.name.as_str()).collect();
    assert_eq!(loaded, ["inventory", "products"]);
    assert_eq!(f.dump(), before);
    serves_normally(&host, &f, "after-intruder");
    // With the grant it loads and its call goes through.
    f.write_manifest("intruder", "calls = [\"inventory\"]\n");
    let host = f.host();
    assert!(host.registry().failures().is_empty());
    let out = call::run(&host, "intruder", "level", &[Val::S64(1)], Mode::Save).expect("call");
    assert_eq!(values::to_json(&out.results[0]), serde_json::json!({"ok": 0}));
}

#[test]
fn sql_injection_through_parameters_is_only_data() {
    let (f, host, before) = corpus_host();
    for payload in ["widget' OR '1'='1", "x'; DROP TABLE products; --", "\" OR 1=1 --"] {
        let out = call::run(&host, "hostile", "inject", &[s(payload)], Mode::Save).expect("runs");
        assert_eq!(values::to_json(&out.results[0]), serde_json::json!({"ok": 0}), "{payload} matched rows");
        let Ending::Saved(report) = out.ending else { panic!("not saved") };
        assert_eq!(report.applied.get(0).map(|a| a.outcome), Some(Outcome::Affected(0)), "{payload} deleted rows");
    }
    assert_eq!(f.dump(), before);
    // Smuggling a second statement into the text is refused, not run.
    let error = attack(&host, "execute", &[s("DELETE FROM products WHERE id = 99; DROP TABLE products")]);
    assert_eq!(
        error,
        r#"{"err":{"invalid":"hostile on main: the sql holds more than one statement; pass one per call"}}"#
    );
    assert_eq!(f.dump(), before);
    serves_normally(&host, &f, "after-inject");
}

#[test]
fn raw_sql_on_ungranted_tables_is_denied() {
    let (f, host, before) = corpus_host();
    let path = f.manifest("hostile");
    let grant = |line: &str| format!("grant it in {}: [channels.main] {line}", path.display());
    let never = || "no grant allows it".to_string();
    let cases = [
        ("execute", "DROP TABLE products", "change the schema (DROP TABLE products)", grant("raw-sql = true")),
        ("execute", "CREATE TABLE evil (x)", "change the schema (CREATE TABLE evil)", grant("raw-sql = true")),
        ("execute", "ATTACH DATABASE '/tmp/sluice-evil.db' AS evil", "attach the database", never()),
        ("execute", "PRAGMA writable_schema = 1", "run PRAGMA writable_schema", never()),
        ("execute", "PRAGMA writable_schema = ON", "run PRAGMA writable_schema", never()),
        ("execute", "VACUUM", "run a statement that SQLite reports no access for", never()),
        ("execute", "UPDATE products SET price_cents = 0", "update table products", grant("updates = [\"products\"]")),
        (
            "execute",
            "INSERT INTO products (name, price_cents) SELECT customer, 1 FROM orders",
            "read table orders",
            grant("reads = [\"orders\"]"),
        ),
        ("execute", "DELETE FROM orders", "delete from table orders", grant("deletes = [\"orders\"]")),
        ("query", "SELECT * FROM orders", "read table orders", grant("reads = [\"orders\"]")),
        (
            "query",
            "SELECT sql FROM sqlite_master",
            "read table sqlite_master",
            "no grant allows it (sqlite_master is the database engine's own catalog)".to_string(),
        ),
        (
            "query",
            "SELECT * FROM pragma_table_info('orders')",
            "read table pragma_table_info",
            grant("reads = [\"pragma_table_info\"]"),
        ),
    ];
    for (function, sql, what, line) in cases {
        let error = attack(&host, function, &[s(sql)]);
        assert!(error.starts_with(&format!(r#"{{"err":{{"denied":"hostile may not {what}"#)), "{sql}: {error}");
        assert!(error.contains(" on channel main"), "{sql}: {error}");
        assert!(error.ends_with(&format!("{}\"}}}}", line.replace('"', "\\\""))), "{sql}: {error}\nexpected: {line}");
        assert_eq!(f.dump(), before, "{sql} changed the database");
    }
    assert!(!std::path::Path::new("/tmp/sluice-evil.db").exists());
    serves_normally(&host, &f, "after-raw-sql");
}

#[test]
fn a_trap_in_on_save_discards_the_save() {
    let (f, host, before) = corpus_host();
    let error = attack(&host, "trap-on-save", &[]);
    assert!(error.starts_with("hostile.on-save failed: wasm trap: wasm `unreachable` instruction executed"), "{error}");
    assert!(error.contains("hostile traps in on-save"), "{error}");
    assert_eq!(f.dump(), before);
    serves_normally(&host, &f, "after-trap-on-save");
}
