//! Serializable scopes: reads checked at save, conflicts run again from the
//! start, commands that state how many rows they change, `on-save` refusing
//! with a business error, relaxed reads, and the README example under load.

use std::sync::{Arc, Barrier};

use serde_json::{Value as Json, json};
use sluice_host::scope::Scope;
use sluice_host::{Host, ScopeError};
use wasmtime::component::Val;

use crate::support::s;
use crate::support::{Fixture, product};

/// `probe.query("main", sql, [])`.
fn query(sql: &str) -> Vec<Val> {
    vec![s("main"), s(sql), Val::List(vec![])]
}

/// A host over the probe and the example schema, with its runtime options
/// changed by `configure`.
fn probe_host(configure: impl FnOnce(&mut sluice_host::runtime::RuntimeOptions)) -> (Fixture, Host) {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let mut options = f.options();
    configure(&mut options.runtime);
    let host = Host::open(&options).expect("host");
    (f, host)
}

/// Saves a new product in a scope of its own: a change another scope's
/// reads of `products` see.
fn another_save(host: &Host, name: &str) {
    let mut other = host.scope();
    other.call("probe", "insert", &product(name, 7)).expect("insert");
    other.save().expect("the other scope saves");
}

/// The first run of a scope reads `products` and queues an insert; before it
/// saves, another scope adds a product. Returns the report (or error) of the
/// save and how many times the scope's work ran, with `counter()`'s answer
/// in each run (a fresh instance answers 1).
fn read_then_conflict(host: &Host) -> (Result<sluice_host::scope::SaveReport, ScopeError>, Vec<u32>) {
    let mut counters = Vec::new();
    let saved = host.scope().run(|scope: &mut Scope| {
        let counted = scope.call("probe", "counter", &[])?;
        counters.push(match counted.first() {
            Some(Val::U32(n)) => *n,
            other => panic!("counter returned {other:?}"),
        });
        scope.call("probe", "query", &query("SELECT count(*) AS n FROM products"))?;
        scope.call("probe", "insert", &product("mine", 5))?;
        if counters.len() == 1 {
            another_save(host, "theirs");
        }
        scope.save()
    });
    (saved, counters)
}

#[test]
fn a_changed_read_is_a_conflict_and_the_scope_runs_again_applying_once() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let host = f.host();
    let (saved, counters) = read_then_conflict(&host);
    let report = saved.expect("the second run saves");
    // Run twice, each time in a fresh instance; saved by the second.
    assert_eq!(counters, [1, 1]);
    assert_eq!(report.attempt, 2);
    assert_eq!(report.reads_checked, 1);
    assert_eq!(report.conflicts.len(), 1);
    let reason = &report.conflicts[0].reason;
    assert!(reason.contains("SELECT count(*) AS n FROM products") && reason.contains("probe.query"), "{reason}");
    assert!(reason.contains("returned other rows at save"), "{reason}");
    // The second run's insert is applied once; the first run's never.
    assert_eq!(report.applied.len(), 1);
    let mine: i64 =
        f.db().query_row("SELECT count(*) FROM products WHERE name = 'mine'", [], |r| r.get(0)).expect("count");
    assert_eq!(mine, 1);
    assert_eq!(f.count("products"), 2);
}

#[test]
fn relaxed_reads_and_read_committed_hosts_do_not_check() {
    // The manifest relaxes reads of products: the same interleaving saves
    // on the first run.
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let manifest = std::fs::read_to_string(f.manifest("probe")).expect("manifest");
    f.write_manifest("probe", &manifest.replace("deletes = \"*\"", "deletes = \"*\"\nrelaxed-reads = [\"products\"]"));
    let (saved, counters) = read_then_conflict(&f.host());
    let report = saved.expect("saved");
    assert_eq!((counters.len(), report.attempt, report.reads_checked), (1, 1, 0));

    // A host that does not check reads saves on the first run too.
    let (_f, host) = probe_host(|options| options.isolation = sluice_host::reads::Isolation::ReadCommitted);
    let (saved, counters) = read_then_conflict(&host);
    assert_eq!((counters.len(), saved.expect("saved").attempt), (1, 1));
}

#[test]
fn a_conflict_that_remains_names_the_command_after_every_retry() {
    let (_f, host) = probe_host(|options| options.retries = 2);
    let mut runs = 0;
    let saved = host.scope().run(|scope| {
        runs += 1;
        let queued = scope.call(
            "probe",
            "execute-all",
            &[s("main"), Val::List(vec![s("UPDATE products SET price_cents = 9 WHERE name = 'nobody'")])],
        )?;
        let Some(Val::Result(Ok(Some(tickets)))) = queued.first() else { panic!("execute-all: {queued:?}") };
        let Val::List(tickets) = tickets.as_ref() else { panic!("{tickets:?}") };
        let expected = scope.call("probe", "expect", &[tickets[0].clone(), Val::U64(1)])?;
        assert_eq!(expected, [Val::Result(Ok(None))]);
        scope.save()
    });
    let Err(ScopeError::Conflict { service, reason, attempts, earlier }) = saved else {
        panic!("expected a conflict, got {saved:?}")
    };
    assert_eq!((runs, attempts, earlier.len()), (3, 3, 2));
    assert_eq!(service, "probe");
    assert!(reason.contains("#1 probe.execute-all on main") && reason.contains("expects 1 row(s)"), "{reason}");
    assert!(reason.contains("changed 0 row(s) where it expected 1"), "{reason}");
    let message = ScopeError::Conflict { service, reason, attempts, earlier }.to_string();
    assert!(message.starts_with("conflict after 3 attempt(s): ") && message.ends_with("nothing was applied"));
}

#[test]
fn expect_refuses_inserts_and_tickets_that_are_not_the_callers() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let host = f.host();
    let mut scope = host.scope();
    let inserted = scope.call("probe", "insert", &product("lamp", 5)).expect("insert");
    let Some(Val::Result(Ok(Some(ticket)))) = inserted.first() else { panic!("{inserted:?}") };
    let invalid = |answer: Vec<Val>| match answer.first() {
        Some(Val::Result(Err(Some(e)))) => format!("{e:?}"),
        other => panic!("expected an error, got {other:?}"),
    };
    let on_insert = invalid(scope.call("probe", "expect", &[(**ticket).clone(), Val::U64(1)]).expect("call"));
    assert!(on_insert.contains("is an insert, which always adds one row"), "{on_insert}");
    let unknown = invalid(scope.call("probe", "expect", &[Val::U64(99), Val::U64(1)]).expect("call"));
    assert!(unknown.contains("no command with ticket 99 queued by probe"), "{unknown}");
    // Neither refusal is a denial: the scope still saves.
    scope.save().expect("save");
    assert_eq!(f.count("products"), 1);
}

#[test]
fn a_read_that_cannot_be_checked_again_is_refused_unless_relaxed() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let host = f.host();
    let mut scope = host.scope();
    let answer = scope.call("probe", "query", &query("SELECT name, random() AS r FROM products")).expect("call");
    let Some(Val::Result(Err(Some(e)))) = answer.first() else { panic!("{answer:?}") };
    let e = format!("{e:?}");
    assert!(
        e.contains("random() or reads the clock") && e.contains("relaxed-reads = [") && e.contains("products"),
        "{e}"
    );
    // Reading the clock over no table, or a date of a column, is fine.
    for sql in ["SELECT random() AS r, datetime('now') AS t", "SELECT date(name) AS d FROM products"] {
        let answer = scope.call("probe", "query", &query(sql)).expect("call");
        assert!(matches!(answer.first(), Some(Val::Result(Ok(_)))), "{sql}: {answer:?}");
    }
}

#[test]
fn on_save_refuses_with_a_value_and_nothing_is_applied() {
    let f = Fixture::new(&["probe", "products"]);
    f.migrate();
    let host = f.host();
    let before = f.dump();
    let mut scope = host.scope();
    scope.call("probe", "refuse-save", &[s("refused")]).expect("queue");
    match scope.save() {
        Err(ScopeError::Refused { service, code, message }) => {
            assert_eq!(
                (service.as_str(), code.as_str(), message.as_str()),
                ("probe", "probe-refused", "round 1 is refused")
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(f.dump(), before);

    // Over HTTP: 422 with the value, and the server goes on.
    let served = f.serve(&[]);
    let (status, body) = served.post("/services/probe/refuse-save", &json!({ "name": "refused" }));
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["kind"], "service-error");
    assert_eq!(body["value"], json!({ "code": "probe-refused", "message": "round 1 is refused" }));
    assert_eq!(f.dump(), before);
    let (status, body) = served.post("/services/products/add", &json!({ "name": "widget", "price-cents": 250 }));
    assert_eq!(status, 200, "{body}");
}

/// Units of product 1 in stock now.
fn on_hand(f: &Fixture) -> i64 {
    f.db().query_row("SELECT on_hand FROM stock WHERE product_id = 1", [], |r| r.get(0)).expect("stock of product 1")
}

/// `n` orders of one unit of product 1, each from its own client thread,
/// sent together to `path`; the answers.
pub(crate) fn all_at_once(served: &Arc<crate::served::Served>, n: usize, path: &'static str) -> Vec<(u16, Json)> {
    let start = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (served, start) = (Arc::clone(served), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                let order = json!({ "customer": format!("c{i}"), "product-id": 1, "quantity": 1 });
                served.post(path, &order)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("client thread")).collect()
}

/// The README example under load: 150 in stock, 200 concurrent orders of
/// one unit each, over HTTP. Exactly 150 are placed, 50 are told
/// `out-of-stock`, and the stock ends at 0.
#[test]
fn two_hundred_concurrent_orders_for_150_units_place_exactly_150() {
    const STOCK: usize = 150;
    const ORDERS: usize = 200;
    let f = Fixture::new(&["products", "inventory", "orders"]);
    f.migrate();
    let served = Arc::new(f.serve(&[]));
    let (status, body) = served.post("/services/products/add", &json!({ "name": "widget", "price-cents": 250 }));
    assert_eq!(status, 200, "{body}");
    let (status, body) = served.post("/services/inventory/restock", &json!({ "product-id": 1, "quantity": STOCK }));
    assert_eq!(status, 200, "{body}");

    let answers = all_at_once(&served, ORDERS, "/services/orders/place");

    let placed = answers.iter().filter(|(status, _)| *status == 200).count();
    let out_of_stock =
        answers.iter().filter(|(status, body)| *status == 422 && body["value"] == json!({ "out-of-stock": 0 })).count();
    let others: Vec<_> = answers.iter().filter(|(status, _)| *status != 200 && *status != 422).collect();
    assert!(others.is_empty(), "answers other than 200 and 422: {others:?}");
    assert_eq!((placed, out_of_stock), (STOCK, ORDERS - STOCK));
    let on_hand = on_hand(&f);
    assert_eq!(on_hand, 0);
    assert_eq!(f.count("orders"), STOCK as i64);
    assert_eq!(f.count("order_events"), STOCK as i64);

    // Conflicts and retries are counted, by service.
    let retried: usize =
        answers.iter().filter_map(|(_, body)| body["ending"]["attempt"].as_u64()).map(|a| a as usize - 1).sum();
    let (_, metrics) = served.get("/metrics");
    let line = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    };
    assert_eq!(line("sluice_retries_total{service=\"orders\"}"), retried, "{metrics}");
    assert!(retried > 0, "200 orders at once on one row ran without a single conflict: the test proves nothing");
    assert!(line("sluice_conflicts_total{service=\"inventory\"}") >= retried, "{metrics}");
}

/// The reads a scope keeps for its save count against the host's cap on
/// what one scope holds: a service cannot grow the host's memory by
/// reading. The same read with the same rows is kept once.
#[test]
fn kept_reads_are_bounded_by_the_scope_cap() {
    let (_f, host) = probe_host(|options| options.scope_queued_bytes = 4096);
    let mut scope = host.scope();
    for _ in 0..1000 {
        scope.call("probe", "query", &query("SELECT name FROM products WHERE id = 1")).expect("the same read");
    }
    let mut breached = None;
    for i in 0..1000 {
        let sql = format!("SELECT name FROM products WHERE id = {i}");
        if let Err(e) = scope.call("probe", "query", &query(&sql)) {
            breached = Some((i, e));
            break;
        }
    }
    let Some((i, ScopeError::Failed { cause, reason, .. })) = breached else { panic!("no breach: {breached:?}") };
    assert!(i > 10 && i < 200, "breached after {i} reads");
    assert!(
        matches!(&cause, sluice_host::scope::Cause::Limit { limit, .. } if limit == "scope-queued-bytes"),
        "{cause:?}"
    );
    assert!(reason.contains("kept a read of"), "{reason}");
    drop(scope);
    let mut next = host.scope();
    next.call("probe", "insert", &product("after", 1)).expect("insert");
    next.save().expect("the host goes on");
}

/// The same through a mounted `wasi:http` component (`api`, which calls
/// `orders`): a conflicted scope runs the handler again with the same
/// request, and only the saved run's response is sent.
#[test]
fn concurrent_orders_through_a_wasi_http_component_sell_the_stock_once() {
    const STOCK: usize = 40;
    const ORDERS: usize = 60;
    let f = Fixture::new(&["products", "inventory", "orders", "api"]);
    f.migrate();
    let served = Arc::new(f.serve(&[]));
    assert_eq!(served.post("/services/products/add", &json!({ "name": "widget", "price-cents": 250 })).0, 200);
    assert_eq!(served.post("/services/inventory/restock", &json!({ "product-id": 1, "quantity": STOCK })).0, 200);
    let answers = all_at_once(&served, ORDERS, "/shop/orders");
    let placed = answers.iter().filter(|(status, _)| *status == 201).count();
    let out_of_stock = answers
        .iter()
        .filter(|(status, body)| {
            *status == 409 && body["error"].as_str().is_some_and(|e| e.starts_with("out of stock"))
        })
        .count();
    assert_eq!((placed, out_of_stock), (STOCK, ORDERS - STOCK), "{answers:?}");
    let on_hand = on_hand(&f);
    assert_eq!((on_hand, f.count("orders")), (0, STOCK as i64));
    let (_, metrics) = served.get("/metrics");
    assert!(!metrics.contains("sluice_retries_total{service=\"api\"} 0"), "no run was retried: {metrics}");
}

/// Whether another connection may take the database's write lock now.
fn can_write(f: &Fixture) -> bool {
    let conn = f.db();
    conn.busy_timeout(std::time::Duration::ZERO).expect("busy timeout");
    conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK").is_ok()
}

/// The last run holds its channels from its start; when it fails (here a
/// trap), the hold ends with it: the next save does not wait.
#[test]
fn a_last_run_that_fails_releases_its_channels() {
    let (f, host) = probe_host(|options| options.retries = 1);
    let mut runs = 0;
    let ran = host.scope().run(|scope| {
        runs += 1;
        scope.call("probe", "query", &query("SELECT name FROM products"))?;
        scope.call("probe", "insert", &product("mine", 5))?;
        if runs == 1 {
            another_save(&host, "theirs");
        } else {
            assert!(!can_write(&f), "the last run does not hold the database");
            scope.call("probe", "fail", &[s("the last run traps")])?;
        }
        scope.save()
    });
    assert!(matches!(&ran, Err(ScopeError::Failed { reason, .. }) if reason.contains("the last run traps")), "{ran:?}");
    assert_eq!(runs, 2);
    assert!(can_write(&f), "the failed last run still holds the database");
    let started = std::time::Instant::now();
    another_save(&host, "next");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "the next save waited {:?}", started.elapsed());
    assert_eq!(f.count("products"), 2, "theirs and next; nothing of the failed scope");
}

/// A scope that queued nothing checks its reads in a snapshot: it waits for
/// no save (here another connection holds the write lock throughout), and a
/// read that changed is still a conflict.
#[test]
fn a_read_only_scope_checks_its_reads_without_the_write_lock() {
    let (f, host) = probe_host(|_| {});
    let mut scope = host.scope();
    scope.call("probe", "query", &query("SELECT name FROM products")).expect("read 1");
    scope.call("probe", "query", &query("SELECT count(*) AS n FROM products")).expect("read 2");
    let holder = f.db();
    holder.execute_batch("BEGIN IMMEDIATE").expect("hold the write lock");
    let started = std::time::Instant::now();
    let report = scope.save().expect("a read-only scope saves while another holds the database");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "it waited {:?}", started.elapsed());
    assert_eq!((report.reads_checked, report.applied.len()), (2, 0));
    holder.execute_batch("ROLLBACK").expect("release");

    let mut runs = 0;
    let ran = host.scope().run(|scope| {
        runs += 1;
        scope.call("probe", "query", &query("SELECT name FROM products"))?;
        scope.call("probe", "query", &query("SELECT count(*) AS n FROM products"))?;
        if runs == 1 {
            another_save(&host, "theirs");
        }
        scope.save()
    });
    assert_eq!((runs, ran.expect("the second run saves").attempt), (2, 2));
}
