//! Several `sluice serve` hosts on one PostgreSQL database, as an operator
//! runs a fleet: idempotent requests answered once across hosts and kills,
//! and conflicted scopes kept inside the fleet (the last run of a scope
//! holds its tables on every host).
//!
//! `SLUICE_FLEET_HOSTS` (2 in `just test`), `SLUICE_FLEET_SECONDS` (4),
//! `SLUICE_FLEET_KILL_MS` (1500) and `SLUICE_FLEET_STOCK` (300) size the
//! load test; `just fleet` runs a longer one: three hosts, one killed
//! every 6 s for two minutes, with stock for every order. The figures go
//! to stderr.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::postgres::{Database, migrated};
use crate::served::Served;
use crate::support::{Fixture, text};

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

/// POSTs `body` to `path` on `served` with `key` as its Idempotency-Key:
/// the status, the `idempotent-replayed` header and the JSON body, or
/// `None` when the connection failed (the host died).
fn post_keyed(
    http: &reqwest::blocking::Client,
    base: &str,
    path: &str,
    key: &str,
    body: &Json,
) -> Option<(u16, bool, Json)> {
    let response = http.post(format!("{base}{path}")).header("Idempotency-Key", key).json(body).send().ok()?;
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    let body = response.json().unwrap_or(Json::Null);
    Some((status, replayed, body))
}

/// A database with the shop migrated and `stock` widgets, and its config
/// (a request's key lapses 2 s after its host died).
fn shop(db: &Database, stock: u32) -> (Fixture, String) {
    let (f, config) = migrated(db);
    let mut toml = std::fs::read_to_string(&config).expect("config");
    toml.push_str("\n[idempotency]\nlease-seconds = 2\n");
    std::fs::write(&config, toml).expect("config");
    let config = config.to_string_lossy().into_owned();
    for args in [["products.add", "widget", "250"], ["inventory.restock", "1", &stock.to_string()]] {
        let out = f.command().args(["--config", &config, "call"]).args(args).output().expect("call");
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    (f, config)
}

fn count(db: &Database, sql: &str) -> i64 {
    db.client().query_one(sql, &[]).expect("count").get(0)
}

#[test]
fn a_repeated_request_is_answered_once_on_any_host() {
    let Some(db) = Database::new() else { return };
    let (f, config) = shop(&db, 100);
    let (a, b) = (f.serve(&["--config", &config]), f.serve(&["--config", &config]));
    let http = client();
    let order = json!({ "customer": "ann", "product-id": 1, "quantity": 2 });
    let path = "/services/orders/place";

    let (status, replayed, first) = post_keyed(&http, &a.base, path, "order-1", &order).expect("answer");
    assert_eq!((status, replayed), (200, false), "{first}");
    let (status, replayed, again) = post_keyed(&http, &b.base, path, "order-1", &order).expect("answer");
    assert_eq!((status, replayed), (200, true), "the other host answers the repeat from the stored answer: {again}");
    assert_eq!(again, first, "the repeat is told exactly what the first request was");
    assert_eq!(count(&db, "SELECT count(*) FROM orders"), 1, "the repeat placed nothing");
    assert_eq!(count(&db, "SELECT on_hand FROM stock WHERE product_id = 1"), 98);

    // The same key with another request.
    let other = json!({ "customer": "bob", "product-id": 1, "quantity": 2 });
    let (status, _, body) = post_keyed(&http, &b.base, path, "order-1", &other).expect("answer");
    assert_eq!((status, body["kind"].as_str()), (422, Some("idempotency-key")), "{body}");
    let (status, _, body) =
        post_keyed(&http, &a.base, "/services/inventory/restock", "order-1", &json!({"product-id": 1, "quantity": 1}))
            .expect("answer");
    assert_eq!(status, 422, "another route under the same key: {body}");
    // A key that is no key.
    let (status, _, body) = post_keyed(&http, &a.base, path, &"k".repeat(300), &order).expect("answer");
    assert_eq!((status, body["kind"].as_str()), (400, Some("arguments")), "{body}");
    assert_eq!(count(&db, "SELECT count(*) FROM orders"), 1);

    // The CLI shares the keys: the same call is answered from the row.
    let out = f
        .command()
        .args(["--config", &config, "call", "--idempotency-key", "order-1", "orders.place", "ann", "1", "2"])
        .output()
        .expect("call");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ran nothing"), "{}", text(&out.stdout));
    let out = f
        .command()
        .args(["--config", &config, "call", "--idempotency-key", "order-1", "orders.place", "bob", "1", "2"])
        .output()
        .expect("call");
    assert!(!out.status.success() && text(&out.stderr).contains("other arguments"), "{}", text(&out.stderr));
    // A request that did not save gives its key back: the same key runs
    // again (here: out of stock, then restocked).
    let big = json!({ "customer": "cy", "product-id": 1, "quantity": 500 });
    let (status, _, body) = post_keyed(&http, &a.base, path, "order-2", &big).expect("answer");
    assert_eq!(status, 422, "{body}");
    let (status, _, body) = post_keyed(
        &http,
        &a.base,
        "/services/inventory/restock",
        "restock-1",
        &json!({"product-id": 1, "quantity": 500}),
    )
    .expect("answer");
    assert_eq!(status, 200, "{body}");
    let (status, replayed, body) = post_keyed(&http, &b.base, path, "order-2", &big).expect("answer");
    assert_eq!((status, replayed), (200, false), "a key whose request saved nothing runs again: {body}");
    assert_eq!(count(&db, "SELECT count(*) FROM orders"), 2);
    assert_eq!(count(&db, "SELECT count(*) FROM sluice_requests WHERE state = 'done'"), 3);
}

/// What the load saw.
#[derive(Default, Debug)]
#[allow(dead_code)] // printed
struct Figures {
    hosts: usize,
    kills: usize,
    orders_sent: usize,
    answered: usize,
    placed: usize,
    out_of_stock: usize,
    conflicts: usize,
    other: usize,
    resent_after_a_kill: usize,
    replayed: usize,
    slowest_ms: u128,
}

/// A load on a fleet: 16 clients each placing orders of one widget
/// against the stock, every order with its own Idempotency-Key,
/// spread over the hosts; a client whose host died (connection reset)
/// sends the same order with the same key to another host until it is
/// answered. One host is killed with SIGKILL every `SLUICE_FLEET_KILL_MS`
/// and started again. At the end:
/// - every key was answered, and each placed order exists once (its
///   customer is its key): no retried request did its work twice;
/// - no more orders were placed than there was stock (and, when it ran
///   out, it is 0);
/// - conflicts answered to clients are at most 1% of the orders that
///   could be placed.
#[test]
fn orders_on_a_fleet_under_kills_are_placed_once_and_conflicts_stay_inside() {
    let Some(db) = Database::new() else { return };
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (hosts, seconds, kill_ms) =
        (env("SLUICE_FLEET_HOSTS", 2) as usize, env("SLUICE_FLEET_SECONDS", 4), env("SLUICE_FLEET_KILL_MS", 1500));
    let stock = env("SLUICE_FLEET_STOCK", 300) as usize;
    let (f, config) = shop(&db, stock as u32);
    let served: Vec<Arc<RwLock<Served>>> =
        (0..hosts).map(|_| Arc::new(RwLock::new(f.serve(&["--config", &config])))).collect();
    let bases: Arc<Vec<RwLock<String>>> =
        Arc::new(served.iter().map(|s| RwLock::new(s.read().expect("host").base.clone())).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let figures = Arc::new(Mutex::new(Figures { hosts, ..Figures::default() }));
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..16)
        .map(|client| {
            let (bases, stop, figures, next) =
                (Arc::clone(&bases), Arc::clone(&stop), Arc::clone(&figures), Arc::clone(&next));
            std::thread::spawn(move || {
                let http =
                    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
                let mut answers = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let key = format!("order-{n}");
                    let order = json!({ "customer": key, "product-id": 1, "quantity": 1 });
                    let started = Instant::now();
                    let mut host = (client + n) % bases.len();
                    let mut resent = 0;
                    let answer = loop {
                        let base = bases[host].read().expect("base").clone();
                        match post_keyed(&http, &base, "/services/orders/place", &key, &order) {
                            // The first try's host died holding the key:
                            // wait for its lease to lapse, as told.
                            Some((409, _, body)) if body["kind"] == "in-progress" => {
                                std::thread::sleep(Duration::from_millis(200));
                                continue;
                            }
                            Some(answer) => break answer,
                            None => {}
                        }
                        resent += 1;
                        assert!(started.elapsed() < Duration::from_secs(60), "order {key} unanswered for a minute");
                        host = (host + 1) % bases.len();
                        std::thread::sleep(Duration::from_millis(20));
                    };
                    let mut figures = figures.lock().expect("figures");
                    figures.orders_sent += 1;
                    figures.answered += 1;
                    figures.resent_after_a_kill += usize::from(resent > 0);
                    figures.replayed += usize::from(answer.1);
                    figures.slowest_ms = figures.slowest_ms.max(started.elapsed().as_millis());
                    match (answer.0, &answer.2) {
                        (200, _) => figures.placed += 1,
                        (422, body) if body["value"] == json!({ "out-of-stock": 0 }) => figures.out_of_stock += 1,
                        (409, _) => figures.conflicts += 1,
                        _ => figures.other += 1,
                    }
                    drop(figures);
                    answers.insert(key, answer);
                }
                answers
            })
        })
        .collect();
    // Kills: one host at a time, started again on the same database.
    let started = Instant::now();
    let mut victim = 0;
    let mut killed_logs = String::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(kill_ms));
        if hosts < 2 {
            continue;
        }
        let mut host = served[victim].write().expect("host");
        killed_logs.push_str(&host.log());
        *host = f.serve(&["--config", &config]); // the old one is dropped: SIGKILL
        *bases[victim].write().expect("base") = host.base.clone();
        figures.lock().expect("figures").kills += 1;
        victim = (victim + 1) % hosts;
    }
    stop.store(true, Ordering::Relaxed);
    let mut answers = BTreeMap::new();
    for c in clients {
        answers.extend(c.join().expect("client"));
    }
    let figures = Arc::try_unwrap(figures).expect("figures").into_inner().expect("figures");
    eprintln!("fleet: {figures:#?}");
    let logs: String = killed_logs + &served.iter().map(|s| s.read().expect("host").log()).collect::<String>();
    for line in logs.lines().filter(|l| l.contains("conflict") || l.contains("holds nothing")) {
        eprintln!("fleet: {line}");
    }

    let placed_keys: Vec<&String> = answers.iter().filter(|(_, a)| a.0 == 200).map(|(k, _)| k).collect();
    let doubled =
        count(&db, "SELECT count(*) FROM (SELECT customer FROM orders GROUP BY customer HAVING count(*) > 1) d");
    assert_eq!(doubled, 0, "an order retried after a kill was placed twice");
    assert_eq!(
        count(&db, "SELECT count(*) FROM orders") as usize,
        placed_keys.len(),
        "every placed order was answered 200, once"
    );
    assert_eq!(figures.other, 0, "answers other than 200, 409 and out-of-stock: {figures:?}\n{logs}");
    assert!(figures.placed <= stock);
    if figures.placed == stock {
        assert_eq!(count(&db, "SELECT on_hand FROM stock WHERE product_id = 1"), 0);
    }
    assert!(figures.answered >= 100, "too little load to judge: {figures:?}");
    // Out-of-stock answers read and save nothing: the share is of the
    // orders that could still be placed.
    assert!(
        figures.conflicts * 100 <= figures.placed + figures.conflicts,
        "more than 1% of the orders were answered with a conflict: {figures:?}\n{logs}"
    );
    if hosts > 1 {
        assert!(
            figures.kills > 0 && figures.resent_after_a_kill > 0,
            "no request was cut by a kill: the test proves nothing: {figures:?}"
        );
    }
}

/// `probe.tick` every second, on three hosts of one database, one of them
/// killed and started again, then every host stopped for a while: each
/// tick's scope saved once (no tick twice in `ticks`), ticks went on
/// through the kill, and the ticks missed while every host was down were
/// skipped, not run in a burst on restart.
#[test]
fn a_schedule_runs_once_per_tick_across_hosts_and_kills() {
    let Some(db) = Database::new() else { return };
    // Made as the host's user (the database's owner), as a migration would.
    db.client()
        .batch_execute(
            "CREATE TABLE ticks (id BIGINT GENERATED ALWAYS AS IDENTITY, at_ms BIGINT NOT NULL); \
             DO $$ BEGIN EXECUTE format('ALTER TABLE ticks OWNER TO %I', current_database()); END $$",
        )
        .expect("table");
    let f = Fixture::new(&["probe"]);
    f.write_manifest(
        "probe",
        "[channels.main]\ninserts = [\"ticks\"]\n\n[[schedule]]\nfunction = \"tick\"\nevery = \"1s\"\n",
    );
    let config = f.dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!("[channels.main]\nkind = \"sql\"\nurl = \"{}\"\n\n[schedules]\nlease-seconds = 2\n", db.url()),
    )
    .expect("config");
    let config = config.to_string_lossy().into_owned();
    let ticks = |db: &Database| -> Vec<i64> {
        db.client()
            .query("SELECT at_ms FROM ticks ORDER BY at_ms", &[])
            .expect("ticks")
            .iter()
            .map(|r| r.get(0))
            .collect()
    };

    let a = f.serve(&["--config", &config]);
    let b = f.serve(&["--config", &config]);
    let c = f.serve(&["--config", &config]);
    std::thread::sleep(Duration::from_millis(2500));
    drop(a); // SIGKILL
    std::thread::sleep(Duration::from_millis(2500));
    let a = f.serve(&["--config", &config]);
    std::thread::sleep(Duration::from_millis(2000));
    let logs = b.log() + &c.log();
    drop((a, b, c));
    let before = ticks(&db);
    let Some(&down_at) = before.last() else { panic!("no tick ran:\n{logs}") };
    std::thread::sleep(Duration::from_millis(4000));
    let d = f.serve(&["--config", &config]);
    std::thread::sleep(Duration::from_millis(1500));
    let log = d.log();
    drop(d);

    let all = ticks(&db);
    let mut distinct = all.clone();
    distinct.dedup();
    assert_eq!(distinct, all, "a tick ran twice: {all:?}\n{log}");
    assert!(all.iter().all(|t| t % 1000 == 0), "ticks fall on whole seconds: {all:?}");
    assert!(before.len() >= 5, "ticks stopped while one host was killed: {before:?}");
    let after: Vec<i64> = all.iter().copied().filter(|t| *t > down_at).collect();
    assert!(!after.is_empty(), "no tick after the restart: {all:?}\n{log}");
    // The first tick after the restart is the latest one due then: the
    // three or four that fell while every host was down were skipped.
    assert!(after[0] - down_at >= 3000, "the missed ticks were run: {all:?}");

    // A schedule of a function the service does not export: the service
    // does not load, and says why.
    f.write_manifest("probe", "[[schedule]]\nfunction = \"nope\"\nevery = \"1m\"\n");
    let out = f.command().args(["--config", &config, "list"]).output().expect("list");
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(said.contains("[[schedule]] names function \"nope\", which it does not export"), "{said}");
}
