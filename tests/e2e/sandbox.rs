//! The sandbox against hostile SQL, beside the corpus in `hostile.rs`:
//! grants enforced by SQLite itself (whatever CTEs, views or conflict
//! clauses hide), no transaction control in any statement, host-side costs
//! (time in SQLite, rows read, bytes queued) bounded by the scope's limits,
//! and one save rule. Each case checks that the error names the service and
//! the grant or limit, that the database is unchanged, and that the host
//! serves the next request at once.

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_host::call::{self, Ending, Mode};
use sluice_host::{Host, ScopeError};
use wasmtime::component::Val;

use crate::hostile::{attack, corpus, s, serves_normally};
use crate::support::Fixture;

/// The corpus with a `secrets` table (and a view over it) that no test
/// grants, and `hostile`'s manifest replaced by `manifest`.
fn with_secrets(manifest: &str) -> (Fixture, Host, String) {
    let f = corpus();
    f.db()
        .execute_batch(
            "CREATE TABLE secrets (x TEXT); INSERT INTO secrets VALUES ('s3cr3t');
             CREATE VIEW peek AS SELECT x FROM secrets;",
        )
        .expect("secrets");
    f.write_manifest("hostile", manifest);
    let host = f.host();
    assert!(host.registry().failures().is_empty(), "{:?}", host.registry().failures());
    let before = f.dump();
    (f, host, before)
}

/// `{"err":{"denied":"hostile may not WHAT on channel main; grant it in PATH: [channels.main] LINE"}}`.
fn denied(f: &Fixture, what: &str, line: &str) -> String {
    let line = line.replace('"', "\\\"");
    format!(
        r#"{{"err":{{"denied":"hostile may not {what} on channel main; grant it in {}: [channels.main] {line}"}}}}"#,
        f.manifest("hostile").display()
    )
}

const READS_AND_UPDATES: &str = "[channels.main]\nreads = [\"products\", \"stock\", \"peek\"]\n\
                                 inserts = [\"products\"]\nupdates = [\"products\"]\n";

/// CTEs that reuse a table's name, views, `WITH … DML` and `OR REPLACE`
/// hide nothing from SQLite's authorizer: the real tables are judged.
#[test]
fn sql_that_hides_a_table_is_judged_by_what_sqlite_resolves() {
    let (f, host, before) = with_secrets(READS_AND_UPDATES);
    let read_secrets = denied(&f, "read table secrets", "reads = [\"secrets\"]");
    let delete_products = denied(&f, "delete from table products", "deletes = [\"products\"]");
    let cases = [
        (
            "query",
            "WITH products AS (SELECT 1) SELECT * FROM products, (WITH x AS (SELECT * FROM secrets) SELECT * FROM x)",
            &read_secrets,
        ),
        ("query", "WITH stock AS (SELECT x FROM secrets) SELECT * FROM stock", &read_secrets),
        ("query", "SELECT * FROM peek", &read_secrets),
        (
            "execute",
            "WITH s AS (SELECT x FROM secrets) INSERT INTO products (name, price_cents) SELECT x, 1 FROM s",
            &read_secrets,
        ),
        ("execute", "UPDATE products SET name = (SELECT x FROM secrets) WHERE id = 1", &read_secrets),
        ("execute", "UPDATE OR REPLACE products SET name = 'x' WHERE id = 1", &delete_products),
        ("execute", "REPLACE INTO products (id, name, price_cents) VALUES (1, 'x', 1)", &delete_products),
        ("execute", "INSERT OR REPLACE INTO products (id, name, price_cents) VALUES (1, 'x', 1)", &delete_products),
    ];
    for (function, sql, expected) in cases {
        assert_eq!(&attack(&host, function, &[s(sql)]), expected, "{sql}");
        assert_eq!(f.dump(), before, "{sql} changed the database");
    }
    // A read that writes is refused as such, however it is dressed.
    let error = attack(&host, "query", &[s("WITH x AS (SELECT 1) DELETE FROM products WHERE id IN (SELECT * FROM x)")]);
    assert!(
        error.contains("hostile: a read must not write (this statement would delete from table products)"),
        "{error}"
    );
    // What the grant allows still works, and plain updates need no delete grant.
    let allowed =
        call::run(&host, "hostile", "query", &[s("WITH t AS (SELECT * FROM products) SELECT * FROM t")], Mode::Save)
            .expect("a granted read");
    assert_eq!(sluice_host::values::to_json(&allowed.results[0]), json!({ "ok": 1 }));
    assert_eq!(f.dump(), before);
    serves_normally(&host, &f, "after-hidden-tables");
}

/// A service without a manifest reads nothing, whatever the SQL.
#[test]
fn without_a_manifest_nothing_is_read() {
    let (f, host, before) = with_secrets("");
    for sql in ["SELECT * FROM secrets", "WITH s AS (SELECT * FROM secrets) SELECT * FROM s"] {
        assert_eq!(attack(&host, "query", &[s(sql)]), denied(&f, "read table secrets", "reads = [\"secrets\"]"));
    }
    assert_eq!(f.dump(), before);
    serves_normally(&host, &f, "after-no-manifest");
}

/// No statement controls the transaction, with or without `raw-sql`, in a
/// read or a command; and a refused `BEGIN` leaves no pooled connection
/// inside a transaction, so the next save works.
#[test]
fn no_statement_controls_the_transaction() {
    let manifest =
        "[channels.main]\nreads = \"*\"\ninserts = \"*\"\nupdates = \"*\"\ndeletes = \"*\"\nraw-sql = true\n";
    let (f, host, before) = with_secrets(manifest);
    for sql in ["BEGIN", "BEGIN IMMEDIATE", "COMMIT", "END", "ROLLBACK", "SAVEPOINT s", "RELEASE s", "ROLLBACK TO s"] {
        for function in ["execute", "query"] {
            let error = attack(&host, function, &[s(sql)]);
            assert!(error.contains("hostile may not control the transaction"), "{function} {sql}: {error}");
            assert!(error.ends_with("on channel main; no grant allows it\"}}"), "{function} {sql}: {error}");
        }
        assert_eq!(f.dump(), before, "{sql} changed the database");
    }
    for sql in
        ["ATTACH DATABASE '/tmp/sluice-evil.db' AS evil", "PRAGMA journal_mode = off", "SELECT load_extension('x')"]
    {
        let error = attack(&host, "execute", &[s(sql)]);
        assert!(error.contains("no grant allows it"), "{sql}: {error}");
    }
    assert!(!std::path::Path::new("/tmp/sluice-evil.db").exists());
    assert_eq!(f.dump(), before);
    serves_normally(&host, &f, "after-transaction-control");
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
    }
    assert_eq!(f.dump(), before);
    let started = Instant::now();
    serves_normally(&host, &f, "after-endless-read");
    assert!(started.elapsed() < Duration::from_secs(1));
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
    assert_eq!(f.dump(), before);
    let started = Instant::now();
    serves_normally(&host, &f, "after-endless-write");
    assert!(started.elapsed() < Duration::from_secs(1));
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

/// A denial in an `on-save` hook stops the save even when the hook carries
/// on: no caller can save a scope that saw a denial.
#[test]
fn a_denial_in_on_save_stops_the_save() {
    let f = Fixture::new(&["probe", "products"]);
    f.migrate();
    call::run(&f.host(), "products", "add", &[s("widget"), Val::S64(250)], Mode::Save).expect("seed");
    f.write_manifest("probe", "[channels.main]\ninserts = [\"stock\"]\n");
    let host = f.host();
    let before = f.dump();
    let mut scope = host.scope();
    scope.call("probe", "set-mode", &[s("ignore-denial-on-save")]).expect("set mode");
    let row = [s("main"), s("stock"), Val::List(vec![s("product_id"), s("on_hand")])];
    let values = Val::List(vec![
        Val::Variant("integer".into(), Some(Box::new(Val::S64(1)))),
        Val::Variant("integer".into(), Some(Box::new(Val::S64(5)))),
    ]);
    let results =
        scope.call("probe", "insert", &[row[0].clone(), row[1].clone(), row[2].clone(), values]).expect("insert");
    assert!(matches!(&results[0], Val::Result(Ok(_))), "{results:?}");
    let error = scope.save().expect_err("saved after a denial in on-save");
    assert!(matches!(error, ScopeError::Denied { .. }), "{error}");
    let error = error.to_string();
    assert!(error.contains("probe may not insert into table products"), "{error}");
    assert!(error.contains("nothing was applied"), "{error}");
    drop(scope);
    assert_eq!(f.dump(), before);
    let report = call::run(&host, "products", "list", &[], Mode::Save).expect("list");
    assert!(matches!(report.ending, Ending::Saved(_)));
}

/// The CPU time the process `pid` has used, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// The peak resident memory of the process `pid`, in KiB, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
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
    let pid = served.pid();
    let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n";
    let started = Instant::now();
    let (status, body) = served.post("/services/hostile/query", &json!({ "sql": endless }));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["limit"], "deadline-ms", "{body}");
    assert!(started.elapsed() < Duration::from_millis(300) + SLACK, "{:?}", started.elapsed());
    // No thread keeps a core busy once the answer is out.
    let cpu = cpu_time(pid);
    std::thread::sleep(Duration::from_millis(1000));
    let idle = cpu_time(pid).saturating_sub(cpu);
    assert!(idle < Duration::from_millis(150), "the server used {idle:?} of CPU while idle");
    // 2 GiB asked for, 1 MiB allowed.
    let rss = peak_rss_kib(pid);
    let huge = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 2097152) \
                SELECT zeroblob(1024) FROM n";
    let (status, body) = served.post("/services/hostile/query", &json!({ "sql": huge }));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["limit"], "result-bytes", "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("reading stopped there"), "{body}");
    let grown = peak_rss_kib(pid).saturating_sub(rss);
    assert!(grown < 64 << 10, "the server's peak memory grew by {grown} KiB");
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
    let report = call::run(&host, "probe", "sleep", &[Val::U32(10)], Mode::Save).expect("a short sleep");
    assert!(matches!(report.ending, Ending::Saved(_)));

    let served = f.serve(&["--max-concurrent", "1"]);
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body) = served.post("/services/probe/sleep", &json!({ "ms": 60_000 }));
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["limit"], "deadline-ms", "{body}");
        assert!(started.elapsed() < Duration::from_millis(300) + SLACK, "{:?}", started.elapsed());
    }
    let (status, body) = served.post("/services/probe/sleep", &json!({ "ms": 1 }));
    assert_eq!(status, 200, "{body}");
}

/// The HTTP edge is closed by default: a function is a route only when its
/// manifest exposes it, while calls between services in a scope need no
/// exposure. `inventory.reserve` takes stock for an order; nobody may call
/// it directly.
#[test]
fn only_exposed_functions_are_routes() {
    let f = Fixture::new(&["orders", "products", "inventory"]);
    f.migrate();
    let served = f.serve(&[]);
    let (status, body) = served.post("/services/products/add", &json!({ "name": "widget", "price-cents": 250 }));
    assert_eq!(status, 200, "{body}");
    let (status, body) = served.post("/services/inventory/restock", &json!({ "product-id": 1, "quantity": 10 }));
    assert_eq!(status, 200, "{body}");
    let before = f.dump();
    let (status, body) = served.post("/services/inventory/reserve", &json!({ "product-id": 1, "quantity": 10 }));
    assert_eq!(status, 404, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("inventory.reserve is not exposed over HTTP; expose it in "), "{message}");
    assert!(message.ends_with(r#"inventory.toml: [http] expose = ["reserve"]"#), "{message}");
    assert_eq!(f.dump(), before, "a refused route changed the database");
    // Inside a scope, orders still calls it.
    let (status, body) =
        served.post("/services/orders/place", &json!({ "customer": "ann", "product-id": 1, "quantity": 3 }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(f.db().query_row("SELECT on_hand FROM stock", [], |r| r.get::<_, i64>(0)).expect("stock"), 7);
    let (_, openapi) = served.get_json("/openapi.json");
    let paths = openapi["paths"].as_object().expect("paths");
    assert!(paths.contains_key("/services/inventory/restock") && paths.contains_key("/services/orders/place"));
    assert!(!paths.contains_key("/services/inventory/reserve"), "{:?}", paths.keys().collect::<Vec<_>>());
    // A service without a manifest has no route at all.
    f.write_manifest("products", "");
    served.wait_for("the reload", |s| s.log().contains("changed products"));
    let (status, _) = served.post("/services/products/list", &json!({}));
    assert_eq!(status, 404);
}

/// Sends a request head that promises a 100-byte body, then 10 bytes of it,
/// and leaves the connection open.
fn stall(served: &crate::served::Served, path: &str) -> std::net::TcpStream {
    use std::io::Write as _;
    let address = served.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(b"{\"name\": ")).expect("send");
    stream
}

/// A client that stalls halfway through its body gets 408 once the read
/// timeout passes, one that stalls in its head is disconnected; and on
/// SIGTERM the drain ends at its deadline, whatever the clients do.
#[test]
fn stalled_clients_time_out_and_do_not_hold_the_shutdown() {
    use std::io::Read as _;
    let f = Fixture::new(&["products"]);
    f.migrate();
    let served = f.serve(&["--read-timeout-ms", "300"]);
    let mut stream = stall(&served, "/services/products/add");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let started = Instant::now();
    let mut answer = vec![0; 4096];
    let read = stream.read(&mut answer).expect("an answer before 5 s");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("the request body stopped arriving"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(f.count("products"), 0);
    // Half a request head, then nothing: the server hangs up.
    let mut head = std::net::TcpStream::connect(served.base.trim_start_matches("http://")).expect("connect");
    std::io::Write::write_all(&mut head, b"POST /services/products/add HTTP/1.1\r\nhost: x\r\n").expect("send");
    head.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let started = Instant::now();
    let mut reply = vec![0; 1024];
    let closed = head.read(&mut reply);
    assert!(matches!(closed, Ok(0) | Err(_)) || reply.starts_with(b"HTTP/1.1 408"), "{closed:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    drop(served);

    let mut served = f.serve(&["--read-timeout-ms", "60000", "--drain-seconds", "1"]);
    let _stalled = stall(&served, "/services/products/add");
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    served.terminate();
    let status = served.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "exited {:?} after SIGTERM", started.elapsed());
    assert!(served.log().contains("requests were still in flight 1 s after the signal"), "{}", served.log());
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
    let started = Instant::now();
    let error = attack(&host, "query", &[s(&ctes(1 << 20))]);
    assert!(error.contains("bytes of SQL; at most 65536 are accepted"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(f.dump(), before);
}

/// Sends a whole `POST path` with `body` and returns the open connection.
fn send(served: &crate::served::Served, path: &str, body: &str) -> std::net::TcpStream {
    use std::io::Write as _;
    let address = served.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    stream
}

/// A client that hangs up cancels its scope: a read stuck in SQLite and a
/// guest asleep in WASI both stop at once, long before their deadlines, so
/// no core stays busy and the server's only turn is free again.
#[test]
fn a_client_that_hangs_up_cancels_its_scope() {
    let f = Fixture::new(&["hostile", "probe", "products"]);
    f.migrate();
    let served = f.serve(&["--max-concurrent", "1"]);
    let pid = served.pid();
    let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n";
    let stream = send(&served, "/services/hostile/query", &json!({ "sql": endless }).to_string());
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);
    served.wait_for("the cancelled read", |s| s.log().contains("hostile was cancelled: the client went away"));
    let cpu = cpu_time(pid);
    std::thread::sleep(Duration::from_millis(1000));
    let idle = cpu_time(pid).saturating_sub(cpu);
    assert!(idle < Duration::from_millis(150), "the server used {idle:?} of CPU after the client left");

    let stream = send(&served, "/services/probe/sleep", &json!({ "ms": 60_000 }).to_string());
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);
    let started = Instant::now();
    let (status, body) = served.post("/services/products/list", &json!({}));
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(1), "the turn came back after {:?}", started.elapsed());
    assert!(served.log().contains("probe was cancelled: the client went away"), "{}", served.log());
}
