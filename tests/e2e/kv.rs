//! The `kv` channel kind: the example `cart` on the host's default `kv`
//! channel (a table of `main`), and the probe's kv functions on both
//! backends, a table of a real SQLite file and a real Redis server
//! (127.0.0.1:6379; skipped without one, except in CI).

use sluice_host::call::{self, Mode};
use sluice_host::{Host, ScopeError};
use wasmtime::component::Val;

use crate::support::{Fixture, skip_without};
use crate::support::{bytes, s};

fn maybe(v: Option<&[u8]>) -> Val {
    Val::Option(v.map(|b| Box::new(bytes(b))))
}

/// The JSON of what a call returned.
fn json(results: &[Val]) -> String {
    sluice_host::values::to_json(&results[0]).to_string()
}

/// The value `key` of channel `channel` holds, read by the probe in a scope
/// of its own, as text (`None` when unset).
fn value(host: &Host, channel: &str, key: &str) -> Option<String> {
    let report = call::run(host, "probe", "kv-get", &[s(channel), s(key)], Mode::Save).expect("kv-get");
    match &report.results[0] {
        Val::Result(Ok(Some(found))) => match found.as_ref() {
            Val::Option(Some(list)) => match list.as_ref() {
                Val::List(b) => Some(
                    String::from_utf8(b.iter().map(|v| if let Val::U8(x) = v { *x } else { 0 }).collect())
                        .expect("utf-8"),
                ),
                other => panic!("not bytes: {other:?}"),
            },
            Val::Option(None) => None,
            other => panic!("not an option: {other:?}"),
        },
        other => panic!("kv-get failed: {other:?}"),
    }
}

/// The README's cart: lines added by increments, shown by a list of the
/// customer's prefix, cleared by removes; each request one scope.
#[test]
fn the_cart_keeps_lines_in_the_kv_channel() {
    let f = Fixture::new(&["cart"]);
    let host = f.host();
    for (product, quantity) in [(1, 2), (7, 1), (1, 3)] {
        let report = call::run(&host, "cart", "add", &[s("ann"), Val::S64(product), Val::U32(quantity)], Mode::Save)
            .expect("add");
        assert_eq!(json(&report.results), r#"{"ok":null}"#);
    }
    call::run(&host, "cart", "add", &[s("bob"), Val::S64(7), Val::U32(4)], Mode::Save).expect("add");
    let shown = call::run(&host, "cart", "show", &[s("ann")], Mode::Save).expect("show");
    assert_eq!(json(&shown.results), r#"{"ok":[{"product-id":1,"quantity":5},{"product-id":7,"quantity":1}]}"#);
    let cleared = call::run(&host, "cart", "clear", &[s("ann")], Mode::Save).expect("clear");
    assert_eq!(json(&cleared.results), r#"{"ok":2}"#);
    let shown = call::run(&host, "cart", "show", &[s("ann")], Mode::Save).expect("show");
    assert_eq!(json(&shown.results), r#"{"ok":[]}"#);
    // The keys live in main's database, in the table of the kv channel.
    let rows: Vec<(String, String)> = f
        .db()
        .prepare("SELECT key, CAST(value AS TEXT) FROM sluice_kv WHERE space = 'kv' ORDER BY key")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .expect("sluice_kv");
    assert_eq!(rows, vec![("cart/bob/7".to_string(), "4".to_string())]);
}

/// Keys and rows queued in one scope commit together: when the save fails
/// on a SQL constraint, the kv commands of the same scope are not applied
/// either.
#[test]
fn keys_and_rows_of_one_scope_commit_together() {
    let f = Fixture::new(&["cart", "products"]);
    f.migrate();
    let host = f.host();
    let mut scope = host.scope();
    scope.call("cart", "add", &[s("ann"), Val::S64(1), Val::U32(2)]).expect("add to cart");
    // Both inserts read that no such product exists; the second breaks the
    // unique name at save.
    for _ in 0..2 {
        scope.call("products", "add", &[s("widget"), Val::S64(250)]).expect("add product");
    }
    let error = scope.save().expect_err("the second insert breaks the unique name");
    assert!(matches!(error, ScopeError::Command { .. }), "{error}");
    assert!(error.to_string().contains("UNIQUE"), "{error}");
    drop(scope);
    assert_eq!(f.count("sluice_kv"), 0, "the kv increment was applied without the rows");
    assert_eq!(f.count("products"), 0);
    // Without the clash both commit.
    let mut scope = host.scope();
    scope.call("cart", "add", &[s("ann"), Val::S64(1), Val::U32(2)]).expect("add to cart");
    scope.call("products", "add", &[s("widget"), Val::S64(250)]).expect("add product");
    scope.save().expect("save");
    assert_eq!((f.count("sluice_kv"), f.count("products")), (1, 1));
}

/// A key outside the service's granted prefixes is refused, naming the
/// manifest line that would grant it; a list must be covered by one
/// granted prefix; and the scope is not saved.
#[test]
fn keys_are_granted_by_prefix() {
    let f = Fixture::new(&["cart"]);
    f.write_manifest("cart", "[channels.kv]\nkeys = [\"cart/ann/\"]\n");
    let host = f.host();
    let add = |who: &str| call::run(&host, "cart", "add", &[s(who), Val::S64(1), Val::U32(1)], Mode::Save);
    let ok = add("ann").expect("ann's cart is granted");
    assert_eq!(json(&ok.results), r#"{"ok":null}"#);
    let refused = add("bob").expect("a refusal is the service's error");
    let manifest = f.manifest("cart").display().to_string();
    assert_eq!(
        json(&refused.results),
        format!(
            r#"{{"err":{{"store":{{"denied":"cart may not write key cart/bob/1 on channel kv; grant it in {manifest}: [channels.kv] keys = [\"cart/bob/1\"]"}}}}}}"#
        )
    );
    assert!(matches!(refused.ending, sluice_host::scope::Ending::Denied { .. }), "{:?}", refused.ending);
    let shown = call::run(&host, "cart", "show", &[s("bob")], Mode::Save).expect("show");
    assert!(json(&shown.results).contains("may not read key cart/bob/"), "{}", json(&shown.results));
    assert_eq!(f.count("sluice_kv"), 1);
}

/// A command or read of the wrong kind for its channel is refused when it
/// is made, naming both kinds.
#[test]
fn the_wrong_kind_is_refused_when_queued() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let host = f.host();
    let insert = [
        s("kv"),
        s("products"),
        Val::List(vec![s("name")]),
        Val::List(vec![Val::Variant("text".into(), Some(Box::new(s("x"))))]),
    ];
    let report = call::run(&host, "probe", "insert", &insert, Mode::Save).expect("insert");
    let told = json(&report.results);
    assert!(told.contains("this is a kv channel; insert into products (name) needs a sql channel"), "{told}");
    let report = call::run(&host, "probe", "kv-set", &[s("main"), s("k"), bytes(b"v")], Mode::Save).expect("kv-set");
    let told = json(&report.results);
    assert!(told.contains("this is a sql channel; set k (1 bytes) needs a kv channel"), "{told}");
    let report = call::run(&host, "probe", "kv-get", &[s("main"), s("k")], Mode::Save).expect("kv-get");
    assert!(
        json(&report.results).contains("this is a sql channel; get needs a kv channel"),
        "{}",
        json(&report.results)
    );
}

/// The kv semantics, the same on every backend: set, get, list by prefix in
/// byte order, remove (with whether the key was there), increment, and
/// compare-and-swap, whose mismatch makes the save a conflict with nothing
/// applied; a read kept by a scope is checked at save.
pub(crate) fn semantics(host: &Host, channel: &str, ns: &str) {
    let k = |name: &str| format!("{ns}{name}");
    let run = |function: &str, args: Vec<Val>| call::run(host, "probe", function, &args, Mode::Save);
    let saved = |function: &str, args: Vec<Val>| {
        let report = run(function, args).unwrap_or_else(|e| panic!("{function}: {e}"));
        assert!(
            matches!(report.ending, sluice_host::scope::Ending::Saved(_)),
            "{function}: {:?} {}",
            report.ending,
            json(&report.results)
        );
        report
    };
    saved("kv-set", vec![s(channel), s(&k("b")), bytes(b"2")]);
    saved("kv-set", vec![s(channel), s(&k("a")), bytes(b"1")]);
    saved("kv-set", vec![s(channel), s(&format!("{ns}x")), bytes(b"outside")]);
    assert_eq!(value(host, channel, &k("a")).as_deref(), Some("1"));
    assert_eq!(value(host, channel, &k("nothing")), None);
    let listed = saved("kv-list", vec![s(channel), s(&k("")), Val::U32(2)]);
    let text = json(&listed.results);
    assert!(text.contains(&format!("\"key\":\"{ns}a\"")) && text.contains(&format!("\"key\":\"{ns}b\"")), "{text}");
    assert!(!text.contains("outside"), "the limit of 2 was passed: {text}");
    saved("kv-increment", vec![s(channel), s(&k("n")), Val::S64(40)]);
    saved("kv-increment", vec![s(channel), s(&k("n")), Val::S64(2)]);
    assert_eq!(value(host, channel, &k("n")).as_deref(), Some("42"));
    // An increment of a value that is not a number fails the save.
    saved("kv-set", vec![s(channel), s(&k("word")), bytes(b"abc")]);
    let error = run("kv-increment", vec![s(channel), s(&k("word")), Val::S64(1)]).expect_err("not a number");
    assert!(error.to_string().contains("not a decimal integer"), "{error}");
    // Compare-and-swap: the right expectation swaps, a wrong one conflicts.
    saved("kv-swap", vec![s(channel), s(&k("a")), maybe(Some(b"1")), maybe(Some(b"one"))]);
    assert_eq!(value(host, channel, &k("a")).as_deref(), Some("one"));
    let conflict = run("kv-swap", vec![s(channel), s(&k("a")), maybe(Some(b"1")), maybe(None)]).expect_err("stale");
    assert!(matches!(conflict, ScopeError::Conflict { .. }), "{conflict}");
    assert!(conflict.to_string().contains("no longer holds what compare-and-swap expected"), "{conflict}");
    assert_eq!(value(host, channel, &k("a")).as_deref(), Some("one"));
    saved("kv-swap", vec![s(channel), s(&k("new")), maybe(None), maybe(Some(b"fresh"))]);
    assert_eq!(value(host, channel, &k("new")).as_deref(), Some("fresh"));
    let removed = saved("kv-remove", vec![s(channel), s(&k("new"))]);
    assert_eq!(removed.ending_applied_outcomes(), vec!["1 row(s) affected".to_string()]);
    let again = saved("kv-remove", vec![s(channel), s(&k("new"))]);
    assert_eq!(again.ending_applied_outcomes(), vec!["0 row(s) affected".to_string()]);
    // A kept read that changed before the save is a conflict.
    let mut scope = host.scope();
    scope.call("probe", "kv-get", &[s(channel), s(&k("b"))]).expect("read");
    scope.call("probe", "kv-set", &[s(channel), s(&k("c")), bytes(b"3")]).expect("queue");
    saved("kv-set", vec![s(channel), s(&k("b")), bytes(b"changed")]);
    let error = scope.save().expect_err("the read changed");
    assert!(matches!(error, ScopeError::Conflict { .. }), "{error}");
    assert!(error.to_string().contains(&format!("get {ns}b on {channel}")), "{error}");
    drop(scope);
    assert_eq!(value(host, channel, &k("c")), None);
    longer_values_are_judged_unread(host, channel, ns);
}

/// A command reads no more of a value than it needs: a value longer than
/// any counter fails an increment as not a number, a longer value than the
/// one compare-and-swap expects is a mismatch, the same value swaps, and a
/// remove only asks whether the key is set; an empty value is set.
fn longer_values_are_judged_unread(host: &Host, channel: &str, ns: &str) {
    let key = format!("{ns}long");
    let run = |function: &str, args: Vec<Val>| call::run(host, "probe", function, &args, Mode::Save);
    let long = vec![b'7'; 4096];
    run("kv-set", vec![s(channel), s(&key), bytes(&long)]).expect("set");
    let error = run("kv-increment", vec![s(channel), s(&key), Val::S64(1)]).expect_err("too long for a counter");
    assert!(error.to_string().contains("more than 20 bytes: not a decimal integer"), "{error}");
    let conflict = run("kv-swap", vec![s(channel), s(&key), maybe(Some(b"7")), maybe(None)]).expect_err("longer");
    assert!(matches!(conflict, ScopeError::Conflict { .. }), "{conflict}");
    let swapped = run("kv-swap", vec![s(channel), s(&key), maybe(Some(&long)), maybe(Some(b""))]).expect("swap");
    assert!(matches!(swapped.ending, sluice_host::scope::Ending::Saved(_)), "{:?}", swapped.ending);
    let removed = run("kv-remove", vec![s(channel), s(&key)]).expect("remove");
    assert_eq!(removed.ending_applied_outcomes(), vec!["1 row(s) affected".to_string()], "an empty value is set");
    let again = run("kv-remove", vec![s(channel), s(&key)]).expect("remove");
    assert_eq!(again.ending_applied_outcomes(), vec!["0 row(s) affected".to_string()]);
}

trait Outcomes {
    fn ending_applied_outcomes(&self) -> Vec<String>;
}

impl Outcomes for call::CallReport {
    fn ending_applied_outcomes(&self) -> Vec<String> {
        match &self.ending {
            sluice_host::scope::Ending::Saved(report) => report.applied.iter().map(|a| a.outcome.to_string()).collect(),
            _ => Vec::new(),
        }
    }
}

/// The kv semantics on the default channel: a table of main's SQLite file.
#[test]
fn kv_semantics_in_a_sql_table() {
    let f = Fixture::new(&["probe"]);
    let host = f.host();
    semantics(&host, "kv", "t/");
}

/// The Redis server the tests use.
pub(crate) const REDIS: &str = "redis://127.0.0.1:6379";

/// A connection to [`REDIS`], or `None` (after saying why) without a
/// server; a failure under SLUICE_REQUIRE_TOOLS=1, as in CI.
pub(crate) fn redis_server() -> Option<redis::Connection> {
    match redis::Client::open(REDIS).and_then(|c| c.get_connection()) {
        Ok(conn) => Some(conn),
        Err(e) => {
            skip_without(&format!("skipping: no Redis at {REDIS} ({e})"));
            None
        }
    }
}

/// The kv semantics on a real Redis server, a channel `cache` beside
/// `main`; keys under a prefix of this test's own.
#[test]
fn kv_semantics_on_redis() {
    let url = REDIS;
    if redis_server().is_none() {
        return;
    }
    let f = Fixture::new(&["probe"]);
    let config = f.dir.path().join("sluice.toml");
    let db = f.data().join("main.db");
    std::fs::create_dir_all(f.data()).expect("data dir");
    std::fs::write(
        &config,
        format!(
            "[channels.main]\nkind = \"sql\"\nurl = \"sqlite://{}\"\n\n[channels.cache]\nkind = \"kv\"\nurl = \"{url}\"\n",
            db.display()
        ),
    )
    .expect("config");
    let mut options = f.options();
    options.config = Some(config);
    let host = Host::open(&options).expect("host with redis");
    let ns = format!("sluice-test/{}/", uuid::Uuid::new_v4().simple());
    semantics(&host, "cache", &ns);
}

/// What a service may cost through a kv channel is bounded like SQL: an
/// oversized key is refused, a value over `command-bytes` traps the scope,
/// and a list whose rows pass `result-bytes` stops there; nothing is
/// applied and the host serves the next request.
#[test]
fn kv_costs_are_bounded_by_the_service_limits() {
    let f = Fixture::new(&["probe"]);
    f.write_manifest("probe", "[channels.kv]\nkeys = \"*\"\n[limits]\ncommand-bytes = 4096\nresult-bytes = 65536\n");
    let host = f.host();
    let long_key = "k".repeat(2000);
    let report = call::run(&host, "probe", "kv-set", &[s("kv"), s(&long_key), bytes(b"v")], Mode::Save).expect("call");
    assert!(
        json(&report.results).contains("the key is 2000 bytes; at most 1024 are allowed"),
        "{}",
        json(&report.results)
    );
    let error = call::run(&host, "probe", "kv-set", &[s("kv"), s("big"), bytes(&[7u8; 8192])], Mode::Save)
        .expect_err("a value over command-bytes");
    assert!(error.to_string().contains("probe broke its limit command-bytes"), "{error}");
    // 40 values of 2 KiB: 80 KiB of rows, over the 64 KiB result limit.
    let mut scope = host.scope();
    for i in 0..40 {
        scope.call("probe", "kv-set", &[s("kv"), s(&format!("fill/{i:02}")), bytes(&[b'x'; 2048])]).expect("queue");
    }
    scope.save().expect("fill");
    drop(scope);
    let error = call::run(&host, "probe", "kv-list", &[s("kv"), s("fill/"), Val::U32(1000)], Mode::Save)
        .expect_err("a list over result-bytes");
    assert!(error.to_string().contains("probe broke its limit result-bytes"), "{error}");
    assert_eq!(f.count("sluice_kv"), 40);
    assert_eq!(value(&host, "kv", "fill/00").map(|v| v.len()), Some(2048));
}

/// A save that increments a Redis key and writes a row that a deferred
/// foreign key refuses at the data commit applies nothing anywhere: Redis
/// commits after the data, under the locks its prepare took, so the key is
/// never incremented (it was, when Redis committed first), and the locks
/// are given back. The same save without the bad row applies both.
#[test]
fn a_data_commit_that_fails_leaves_redis_untouched() {
    let url = REDIS;
    let Some(mut redis) = redis_server() else { return };
    let f = Fixture::new(&["probe"]);
    f.migrate();
    f.db()
        .execute_batch(
            "CREATE TABLE parents (id INTEGER PRIMARY KEY);
             CREATE TABLE children (id INTEGER PRIMARY KEY,
                 parent INTEGER NOT NULL REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED);",
        )
        .expect("schema");
    f.write_manifest("probe", "[channels.main]\ninserts = \"*\"\n[channels.cache]\nkeys = \"*\"\n");
    let config = f.dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[channels.main]\nkind = \"sql\"\nurl = \"sqlite://{}\"\n\n[channels.cache]\nkind = \"kv\"\nurl = \"{url}\"\n",
            f.db_path().display()
        ),
    )
    .expect("config");
    let mut options = f.options();
    options.config = Some(config);
    let host = Host::open(&options).expect("host with redis");
    let key = format!("sluice-test/{}/count", uuid::Uuid::new_v4().simple());
    let child = |parent: i64| {
        let integer = |i: i64| Val::Variant("integer".into(), Some(Box::new(Val::S64(i))));
        [s("main"), s("children"), Val::List(vec![s("parent")]), Val::List(vec![integer(parent)])]
    };
    let mut scope = host.scope();
    scope.call("probe", "kv-increment", &[s("cache"), s(&key), Val::S64(5)]).expect("queue the increment");
    scope.call("probe", "insert", &child(999)).expect("queue the orphan");
    let failed = scope.save().expect_err("the deferred foreign key refuses the data commit");
    assert!(!failed.partially_applied(), "{failed}");
    assert!(failed.to_string().contains("nothing was applied"), "{failed}");
    drop(scope);
    let value: Option<String> = redis::Commands::get(&mut redis, &key).expect("get");
    assert_eq!(value, None, "Redis kept the increment of a save whose data did not commit");
    let locks: Vec<String> = redis::Commands::keys(&mut redis, format!("sluice:lock:{key}")).expect("keys");
    assert!(locks.is_empty(), "locks left: {locks:?}");
    // The same save with a parent that exists applies both.
    f.db().execute_batch("INSERT INTO parents (id) VALUES (1)").expect("parent");
    let mut scope = host.scope();
    scope.call("probe", "kv-increment", &[s("cache"), s(&key), Val::S64(5)]).expect("queue");
    scope.call("probe", "insert", &child(1)).expect("queue");
    scope.save().expect("saved");
    let value: Option<String> = redis::Commands::get(&mut redis, &key).expect("get");
    assert_eq!(value.as_deref(), Some("5"));
    assert_eq!(f.count("children"), 1);
    let _: () = redis::Commands::del(&mut redis, &key).expect("clean up");
}

/// A journaled Redis commit (`outbox = "main"`) that its save could not
/// make, and whose keys' locks are gone by the time the relay takes it (a
/// host down longer than the locks hold), is dead with its writes unmade:
/// another save may have written the keys since, and older values must
/// not land over newer ones.
#[test]
fn a_journaled_redis_commit_whose_locks_expired_is_dead_and_unmade() {
    let Some(mut redis) = redis_server() else { return };
    let stall = crate::stall::Stall::to("127.0.0.1:6379");
    let f = Fixture::new(&["probe"]);
    let key = format!("sluice-test/{}/k", uuid::Uuid::new_v4().simple());
    f.write_manifest("probe", "[channels.main]\nreads = [\"products\"]\n[channels.cache]\nkeys = [\"sluice-test/\"]\n");
    let config = f.dir.path().join("sluice.toml");
    let cache = format!("kind = \"kv\"\nurl = \"redis://127.0.0.1:{}\"\noutbox = \"main\"", stall.port());
    let main = format!("kind = \"sql\"\nurl = \"sqlite://{}\"", f.db_path().display());
    std::fs::write(&config, format!("[channels.main]\n{main}\n\n[channels.cache]\n{cache}\n")).expect("config");
    let mut options = f.options();
    options.config = Some(config);
    let host = std::sync::Arc::new(Host::open(&options).expect("host"));
    stall.cut_on(b"the value");
    let e = call::run(&host, "probe", "kv-set", &[s("cache"), s(&key), bytes(b"the value")], Mode::Save)
        .expect_err("the commit is cut");
    assert!(stall.was_cut() && e.partially_applied(), "{e}");
    // The locks expire (here: go at once).
    let _: () = redis::cmd("DEL").arg(format!("sluice:lock:{key}")).query(&mut redis).expect("del");
    let dead = || {
        let sql = "SELECT state, coalesce(last_error, '') FROM sluice_outbox WHERE channel = 'cache'";
        f.db().query_row(sql, [], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).expect("row")
    };
    crate::support::relay_until(&host, || dead().0 == "dead", std::time::Duration::from_secs(20));
    let (_, reason) = dead();
    assert!(reason.contains("expired") && reason.contains("not made"), "{reason}");
    let held: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query(&mut redis).expect("get");
    assert_eq!(held, None, "a commit whose locks expired was made");
}
