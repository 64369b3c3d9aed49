//! What a hostile scope may cost in host code, each bounded by its limits:
//! time in SQLite (reads, and commands at save), time in WASI waits, the
//! rows a read returns, the bytes a scope queues, and the time SQLite takes
//! to judge a statement. Each case checks how soon after its limit the scope
//! ended, that nothing was applied, and that the host serves the next
//! request at once; over HTTP also that no core stays busy and memory does
//! not grow by what was asked for. The timings print as `measured: …`
//! (`cargo test … costs -- --nocapture`).

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_host::call::{self, Ending, Mode};
use sluice_host::{Host, ScopeError};
use wasmtime::component::Val;

use crate::hostile::{attack, corpus, s, serves_normally};
use crate::sandbox::{denied, with_secrets};
use crate::support::Fixture;

/// The same host serves a normal request, and within a second.
fn serves_at_once(host: &Host, f: &Fixture, name: &str) {
    let started = Instant::now();
    serves_normally(host, f, name);
    assert!(started.elapsed() < Duration::from_secs(1), "the next request took {:?}", started.elapsed());
}

/// How long after `limit` a scope that breaks it took to end, at most.
const SLACK: Duration = Duration::from_millis(700);

/// A read that would run forever (a recursive CTE, a cross join) is
/// interrupted at the calling function's deadline, with no grant needed.
#[test]
fn an_endless_read_ends_at_the_deadline() {
    let manifest = "[channels.main]\nreads = [\"products\"]\n[limits]\ndeadline-ms = 300\n";
    let (f, host, before) = with_secrets(manifest);
    for sql in [
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 100000) \
         SELECT count(*) FROM n a, n b, n c",
    ] {
        let started = Instant::now();
        let error = attack(&host, "query", &[s(sql)]);
        let took = started.elapsed();
        assert!(error.contains("hostile broke its limit deadline-ms: still running after 300 ms"), "{sql}: {error}");
        assert!(took < Duration::from_millis(300) + SLACK, "{sql}: ended {took:?} after it started");
        eprintln!("measured: endless read, deadline 300 ms, ended after {took:?}: {sql}");
    }
    assert_eq!(f.dump(), before);
    serves_at_once(&host, &f, "after-endless-read");
}

/// A command that would write forever is interrupted at save, by the
/// deadline of the service that queued it, and nothing is applied.
#[test]
fn an_endless_write_at_save_ends_at_the_deadline() {
    let manifest = "[channels.main]\nreads = [\"products\"]\ninserts = [\"products\"]\n[limits]\ndeadline-ms = 300\n";
    let (f, host, before) = with_secrets(manifest);
    let sql = "INSERT INTO products (name, price_cents) \
               WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT 'p' || i, 1 FROM n";
    let started = Instant::now();
    let error = match call::run(&host, "hostile", "execute", &[s(sql)], Mode::Save) {
        Err(error) => error,
        Ok(report) => panic!("the endless insert was not stopped at save: {:?}", report.ending),
    };
    let took = started.elapsed();
    assert!(matches!(error, ScopeError::Failed { .. }), "{error}");
    let error = error.to_string();
    assert!(error.contains("hostile broke its limit deadline-ms"), "{error}");
    assert!(error.contains("still running 300 ms into the save"), "{error}");
    assert!(took < Duration::from_millis(300) + SLACK, "ended {took:?} after it started");
    eprintln!("measured: endless write at save, deadline 300 ms, ended after {took:?}");
    assert_eq!(f.dump(), before);
    serves_at_once(&host, &f, "after-endless-write");
}

/// The scope's whole queue is bounded in bytes, whatever each service's
/// own command limits allow.
#[test]
fn the_queue_of_a_scope_is_bounded_in_bytes() {
    let f = corpus();
    let mut options = f.options();
    options.runtime.scope_queued_bytes = 64 << 10;
    let host = Host::open(&options).expect("host");
    let before = f.dump();
    let error = attack(&host, "flood", &[Val::U32(100_000)]);
    assert!(error.contains("hostile broke its limit scope-queued-bytes"), "{error}");
    assert!(error.contains("over the host's limit of 64.0 KiB for one scope"), "{error}");
    assert_eq!(f.dump(), before);
    serves_normally(&host, &f, "after-queue-bytes");
}

/// The grant check's cost is bounded: SQLite refuses a statement over
/// 64 KiB before preparing it, and prepares one of 64 KiB full of CTE names
/// that shadow each other (SQLite's cost grows faster than the length for
/// that shape) in well under a second, refusing it for the table it really
/// reads. A 1 MiB one, within `command-bytes`, is refused as too long.
#[test]
fn huge_statements_are_judged_quickly() {
    let (f, host, before) = with_secrets("[channels.main]\nreads = [\"products\"]\n");
    let ctes = |bytes: usize| {
        let mut sql = String::from("WITH products AS (SELECT x FROM secrets)");
        let mut n = 0;
        while sql.len() < bytes - 200 {
            sql.push_str(&format!(", c{n} AS (SELECT * FROM products)"));
            n += 1;
        }
        sql.push_str(&format!(" SELECT * FROM c{}", n - 1));
        sql
    };
    let started = Instant::now();
    let error = attack(&host, "query", &[s(&ctes(64 << 10))]);
    let took = started.elapsed();
    assert_eq!(error, denied(&f, "read table secrets", "reads = [\"secrets\"]"));
    assert!(took < Duration::from_secs(1), "64 KiB of CTEs took {took:?}");
    eprintln!("measured: 64 KiB of shadowing CTEs judged in {took:?}");
    let started = Instant::now();
    let error = attack(&host, "query", &[s(&ctes(1 << 20))]);
    assert!(error.contains("bytes of SQL; at most 65536 are accepted"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(f.dump(), before);
}

/// Over HTTP: a stuck read costs its request a 503 at the deadline and no
/// core after it; a read of far more than `result-bytes` stops while
/// reading, so the server's memory does not grow by what was asked for.
#[test]
fn served_reads_end_at_their_limits_and_leave_nothing_running() {
    let manifest = "[channels.main]\nreads = [\"products\"]\n[limits]\ndeadline-ms = 300\nresult-bytes = 1048576\n\
                    [http]\nexpose = [\"query\"]\n";
    let (f, _host, before) = with_secrets(manifest);
    let served = f.serve(&[]);
    let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n";
    let started = Instant::now();
    let (status, body) = served.post("/services/hostile/query", &json!({ "sql": endless }));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["limit"], "deadline-ms", "{body}");
    assert!(started.elapsed() < Duration::from_millis(300) + SLACK, "{:?}", started.elapsed());
    // No thread keeps a core busy once the answer is out.
    let cpu = served.cpu_time();
    std::thread::sleep(Duration::from_millis(1000));
    let idle = served.cpu_time().saturating_sub(cpu);
    assert!(idle < Duration::from_millis(150), "the server used {idle:?} of CPU while idle");
    eprintln!("measured: served endless read, deadline 300 ms; CPU in the idle second after: {idle:?}");
    // 2 GiB asked for, 1 MiB allowed.
    let rss = served.peak_rss_kib();
    let huge = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 2097152) \
                SELECT zeroblob(1024) FROM n";
    let (status, body) = served.post("/services/hostile/query", &json!({ "sql": huge }));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["limit"], "result-bytes", "{body}");
    assert!(body["detail"].as_str().unwrap_or("").contains("reading stopped there"), "{body}");
    let grown = served.peak_rss_kib().saturating_sub(rss);
    assert!(grown < 64 << 10, "the server's peak memory grew by {grown} KiB");
    eprintln!("measured: 2 GiB read against 1 MiB result-bytes: peak RSS {rss} KiB before, grew by {grown} KiB");
    // The next request is served at once.
    let started = Instant::now();
    let (status, body) = served.post("/services/products/list", &json!({}));
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(f.dump(), before);
}

/// A guest that sleeps (a WASI wait, in host code) is stopped at its
/// deadline like one that loops: over the CLI's path and over HTTP, where
/// the scopes that waited do not hold the server's only turn.
#[test]
fn a_wasi_sleep_ends_at_the_deadline() {
    let f = Fixture::new(&["probe"]);
    f.write_manifest("probe", "[limits]\ndeadline-ms = 300\n[http]\nexpose = [\"sleep\"]\n");
    let host = f.host();
    let started = Instant::now();
    let error =
        call::run(&host, "probe", "sleep", &[Val::U32(60_000)], Mode::Save).expect_err("slept past the deadline");
    let took = started.elapsed();
    assert!(error.to_string().contains("probe broke its limit deadline-ms: still running after 300 ms"), "{error}");
    assert!(took < Duration::from_millis(300) + SLACK, "ended {took:?} after it started");
    eprintln!("measured: 60 s WASI sleep, deadline 300 ms, ended after {took:?}");
    let report = call::run(&host, "probe", "sleep", &[Val::U32(10)], Mode::Save).expect("a short sleep");
    assert!(matches!(report.ending, Ending::Saved(_)));

    let served = f.serve(&["--max-concurrent", "1"]);
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body) = served.post("/services/probe/sleep", &json!({ "ms": 60_000 }));
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["limit"], "deadline-ms", "{body}");
        assert!(started.elapsed() < Duration::from_millis(300) + SLACK, "{:?}", started.elapsed());
    }
    let (status, body) = served.post("/services/probe/sleep", &json!({ "ms": 1 }));
    assert_eq!(status, 200, "{body}");
}

/// A client that hangs up cancels its scope: a read stuck in SQLite and a
/// guest asleep in WASI both stop at once, long before their deadlines, so
/// no core stays busy and the server's only turn is free again.
#[test]
fn a_client_that_hangs_up_cancels_its_scope() {
    let f = Fixture::new(&["hostile", "probe", "products"]);
    f.migrate();
    let served = f.serve(&["--max-concurrent", "1"]);
    let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n";
    let body = json!({ "sql": endless }).to_string();
    let stream = served.raw_post("/services/hostile/query", &body, body.len());
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);
    served.wait_for("the cancelled read", |s| s.log().contains("hostile was cancelled: the client went away"));
    let cpu = served.cpu_time();
    std::thread::sleep(Duration::from_millis(1000));
    let idle = served.cpu_time().saturating_sub(cpu);
    assert!(idle < Duration::from_millis(150), "the server used {idle:?} of CPU after the client left");
    eprintln!("measured: client hung up during an endless read; CPU in the idle second after: {idle:?}");

    let body = json!({ "ms": 60_000 }).to_string();
    let stream = served.raw_post("/services/probe/sleep", &body, body.len());
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);
    let started = Instant::now();
    let (status, body) = served.post("/services/products/list", &json!({}));
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(1), "the turn came back after {:?}", started.elapsed());
    assert!(served.log().contains("probe was cancelled: the client went away"), "{}", served.log());
}

/// SQLite builds no value longer than 64 MiB on a service's behalf: a
/// `zeroblob` of 1 GB is refused at once, and the memory it asked for is
/// never allocated.
#[test]
fn a_huge_value_is_refused_by_sqlite() {
    let (f, host, before) = with_secrets("[channels.main]\nreads = [\"products\"]\n");
    for sql in [
        "SELECT length(zeroblob(1000000000))",
        "SELECT length(randomblob(1000000000))",
        "SELECT length(replace(hex(zeroblob(20000000)), '0', 'xx'))",
    ] {
        let error = attack(&host, "query", &[s(sql)]);
        assert!(error.contains("hostile on main") && error.contains("too big"), "{sql}: {error}");
    }
    assert_eq!(f.dump(), before);
    serves_at_once(&host, &f, "after-huge-value");
}
