//! The sandbox on PostgreSQL: hostile services' SQL and the commands the
//! host builds for them, against a real server (see [`crate::postgres`]):
//! every statement under the service's role, bounded in time and size.

use wasmtime::component::Val;

use crate::postgres::Database;
use crate::support::text_value;
use crate::support::{Fixture, repo, text};

/// A host over `hostile` (with `manifest`) and `products`, on `db` with the
/// example schema, one product and a `secrets` table no grant names.
fn hostile_on(db: &Database, manifest: &str) -> (Fixture, sluice_host::Host) {
    let f = Fixture::new(&["hostile", "products"]);
    f.write_manifest("hostile", manifest);
    let config = f.dir.path().join("sluice.toml");
    std::fs::write(&config, format!("[channels.main]\nkind = \"sql\"\nurl = \"{}\"\n", db.url())).expect("config");
    let schema = repo().join("examples/schema").to_string_lossy().into_owned();
    let out = f.command().arg("--config").arg(&config).args(["migrate", &schema]).output().expect("migrate");
    assert!(out.status.success(), "{}", text(&out.stderr));
    db.client()
        .batch_execute(
            "CREATE TABLE secrets (x TEXT); INSERT INTO secrets VALUES ('s3cr3t');
             INSERT INTO products (name, price_cents) VALUES ('widget', 250);",
        )
        .expect("secrets");
    let mut options = f.options();
    options.config = Some(config);
    let host = sluice_host::Host::open(&options).expect("host");
    assert!(host.registry().failures().is_empty(), "{:?}", host.registry().failures());
    (f, host)
}

/// What `hostile.FUNCTION(sql)` is told, as one request.
fn hostile(host: &sluice_host::Host, function: &str, sql: &str) -> String {
    use sluice_host::call::{self, Ending, Mode};
    let args = [wasmtime::component::Val::String(sql.to_string())];
    match call::run(host, "hostile", function, &args, Mode::Save) {
        Err(e) => e.to_string(),
        Ok(report) => match report.ending {
            Ending::Discarded { .. } | Ending::Denied { .. } => {
                sluice_host::values::to_json(&report.results[0]).to_string()
            }
            other => format!("not stopped: {other:?}"),
        },
    }
}

/// What `hostile.query(sql)` answers (the number of rows, or the error),
/// as JSON.
fn hostile_read(host: &sluice_host::Host, sql: &str) -> String {
    use sluice_host::call::{self, Mode};
    let args = [wasmtime::component::Val::String(sql.to_string())];
    let report = call::run(host, "hostile", "query", &args, Mode::Save).expect("read");
    sluice_host::values::to_json(&report.results[0]).to_string()
}

/// On PostgreSQL a service's read or command that would run for ever is
/// cancelled by the server at its deadline (`statement_timeout`), the scope
/// ends with the deadline breached, nothing is applied, and the host serves
/// the next request.
#[test]
fn endless_statements_end_at_the_deadline_on_postgres() {
    use std::time::{Duration, Instant};
    let Some(db) = Database::new() else { return };
    let manifest = "[channels.main]\nreads = [\"products\"]\ninserts = [\"products\"]\n[limits]\ndeadline-ms = 300\n";
    let (_f, host) = hostile_on(&db, manifest);
    let before = db.dump();
    for (function, sql) in [
        ("query", "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"),
        (
            "execute",
            "INSERT INTO products (name, price_cents) \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT 'p' || i, 1 FROM n",
        ),
    ] {
        let started = Instant::now();
        let error = hostile(&host, function, sql);
        let took = started.elapsed();
        assert!(error.contains("hostile broke its limit deadline-ms"), "{sql}: {error}");
        assert!(took < Duration::from_millis(1000), "{sql}: ended {took:?} after it started");
        eprintln!("measured: endless {function} on PostgreSQL, deadline 300 ms, ended after {took:?}");
    }
    assert_eq!(db.dump(), before);
    let listed = sluice_host::call::run(&host, "products", "list", &[], sluice_host::call::Mode::Save);
    assert!(listed.is_ok_and(|r| sluice_host::values::to_json(&r.results[0]).to_string().contains("widget")));
}

/// Each pooled connection keeps its prepared statements. A schema changed
/// under them by someone else (an operator's `ALTER TABLE` that changes
/// what `SELECT *` returns and the type `RETURNING id` gives) costs a
/// prepare again, never a failed request: a read runs again at once, and a
/// save whose statement went stale is a conflict, so its scope runs again.
#[test]
fn statements_prepared_before_a_schema_change_are_prepared_again_on_postgres() {
    use sluice_host::call::{self, Ending, Mode};
    use wasmtime::component::Val;
    let Some(db) = Database::new() else { return };
    let (_f, host) = hostile_on(&db, "[channels.main]\nreads = [\"products\"]\ninserts = [\"products\"]\n");
    let read = || hostile_read(&host, "SELECT * FROM products");
    let add = |name: &str| {
        let args = [Val::String(name.into()), Val::S64(100)];
        let report = call::run(&host, "products", "add", &args, Mode::Save).expect("add");
        let Ending::Saved(saved) = &report.ending else { panic!("{name} was not saved: {:?}", report.ending) };
        eprintln!("measured: products.add({name}) saved on attempt {}", saved.attempt);
    };
    for _ in 0..3 {
        assert_eq!(read(), r#"{"ok":1}"#);
    }
    add("first");
    add("second");
    db.client()
        .batch_execute("ALTER TABLE products ADD COLUMN note TEXT; ALTER TABLE products ALTER COLUMN id TYPE BIGINT")
        .expect("alter products");
    add("third");
    assert_eq!(read(), r#"{"ok":4}"#);
    // A service's own statement whose rows change shape (`RETURNING *`),
    // prepared at save.
    let insert = || {
        let sql = "INSERT INTO products (name, price_cents) SELECT 'p' || count(*), 1 FROM products RETURNING *";
        let report = call::run(&host, "hostile", "execute", &[Val::String(sql.into())], Mode::Save).expect("insert");
        let Ending::Saved(saved) = &report.ending else { panic!("the insert was not saved: {:?}", report.ending) };
        saved.attempt
    };
    assert_eq!((insert(), insert()), (1, 1));
    db.client().batch_execute("ALTER TABLE products DROP COLUMN note").expect("alter products again");
    eprintln!("measured: the insert after the second change saved on attempt {}", insert());
    assert_eq!(read(), r#"{"ok":7}"#);
    let names: Vec<String> = db
        .client()
        .query("SELECT name FROM products ORDER BY id", &[])
        .expect("names")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(names, ["widget", "first", "second", "third", "p4", "p5", "p6"]);
}

/// The pool does not spend a round trip checking each connection it hands
/// out: it asks the client whether the connection closed. When the server
/// ends every connection of the host (as a restart does), the next read
/// runs again on a new connection, and saves after that find new ones too.
#[test]
fn connections_the_server_ended_are_replaced_on_postgres() {
    use sluice_host::call::{self, Ending, Mode};
    use wasmtime::component::Val;
    let Some(db) = Database::new() else { return };
    let (_f, host) = hostile_on(&db, "[channels.main]\nreads = [\"products\"]\n");
    let read = || hostile_read(&host, "SELECT name FROM products");
    assert_eq!(read(), r#"{"ok":1}"#);
    let add = |name: &str| {
        let args = [Val::String(name.into()), Val::S64(100)];
        let report = call::run(&host, "products", "add", &args, Mode::Save).expect("add");
        assert!(matches!(report.ending, Ending::Saved(_)), "{name}: {:?}", report.ending);
    };
    add("before");
    let end_all = || {
        let ended: i64 = db
            .client()
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .expect("terminate")
            .get(0);
        assert!(ended > 0, "the host held no connection: the test proves nothing");
    };
    // At once: the read meets a connection the client may not know is closed.
    end_all();
    assert_eq!(read(), r#"{"ok":2}"#);
    // After the client has seen the close: the pool replaces it on the take.
    end_all();
    std::thread::sleep(std::time::Duration::from_millis(300));
    add("after");
    assert_eq!(read(), r#"{"ok":3}"#);
}

/// On PostgreSQL no service SQL leaves its role or reaches what its grant
/// does not name: role changes, session settings, the catalogs and
/// ungranted tables are refused with the grant named, and nothing is
/// applied.
#[test]
fn a_service_cannot_leave_its_role_on_postgres() {
    let Some(db) = Database::new() else { return };
    let manifest = "[channels.main]\nreads = [\"products\"]\ninserts = [\"products\"]\n";
    let (_f, host) = hostile_on(&db, manifest);
    let before = db.dump();
    for (function, sql) in [
        ("query", "SELECT x FROM secrets"),
        ("query", "SELECT (SELECT x FROM secrets LIMIT 1) FROM products"),
        ("query", "SELECT set_config('role', 'postgres', false)"),
        ("query", "SELECT current_setting('is_superuser')"),
        ("query", "SELECT rolname FROM pg_roles"),
        ("query", "SELECT * FROM pg_catalog.pg_authid"),
        ("query", "SELECT * FROM set_config('role', 'postgres', false)"),
        ("execute", "RESET ROLE"),
        ("execute", "SET ROLE postgres"),
        ("execute", "SET SESSION AUTHORIZATION postgres"),
        ("execute", "INSERT INTO products (name, price_cents) SELECT x, 1 FROM secrets"),
        ("execute", "UPDATE secrets SET x = 'gone'"),
        ("execute", "COPY secrets TO STDOUT"),
        ("execute", "CREATE TABLE mine (a int)"),
        ("execute", "GRANT SELECT ON secrets TO PUBLIC"),
    ] {
        let error = hostile(&host, function, sql);
        assert!(error.contains("denied") || error.contains("invalid"), "{sql}: {error}");
        assert!(!error.contains("s3cr3t"), "{sql}: {error}");
        eprintln!("refused: {sql}: {error}");
    }
    assert_eq!(db.dump(), before);
    let secrets: String = db.client().query_one("SELECT x FROM secrets", &[]).expect("secrets").get(0);
    assert_eq!(secrets, "s3cr3t");
}

/// `probe.FUNCTION(main, table, columns, values)` (its `insert` or
/// `delete`) as one request: the outcome's JSON, or the refusal.
fn probe_command(host: &sluice_host::Host, function: &str, table: &str, columns: &[&str], values: Vec<Val>) -> String {
    use sluice_host::call::{self, Ending, Mode};
    let s = |v: &str| Val::String(v.to_string());
    let args = [s("main"), s(table), Val::List(columns.iter().map(|c| s(c)).collect()), Val::List(values)];
    match call::run(host, "probe", function, &args, Mode::Save) {
        Err(e) => e.to_string(),
        Ok(report) => match report.ending {
            Ending::Saved(saved) => format!("saved: {}", saved.applied.len()),
            _ => sluice_host::values::to_json(&report.results[0]).to_string(),
        },
    }
}

fn integer(i: i64) -> Val {
    Val::Variant("integer".into(), Some(Box::new(Val::S64(i))))
}

/// The inserts, updates and deletes the host builds for a service run
/// under the service's role, as its own SQL does: a trigger of the schema
/// sees the service's role as `current_user`, not the host's. And `"*"`
/// is the application's tables: a delete from a catalog or a host table is
/// refused, whatever the grant says.
#[test]
fn commands_the_host_builds_run_as_the_service_on_postgres() {
    let Some(db) = Database::new() else { return };
    let f = Fixture::new(&["probe"]);
    let config = f.dir.path().join("sluice.toml");
    std::fs::write(&config, format!("[channels.main]\nkind = \"sql\"\nurl = \"{}\"\n", db.url())).expect("config");
    let schema = repo().join("examples/schema").to_string_lossy().into_owned();
    let out = f.command().arg("--config").arg(&config).args(["migrate", &schema]).output().expect("migrate");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // An operator's trigger, made as the migrations are, as the host user.
    let mut owner = postgres::Client::connect(&db.url(), postgres::NoTls).expect("connect as the host user");
    owner
        .batch_execute(
            "CREATE TABLE audit (who TEXT NOT NULL, what TEXT NOT NULL);
             GRANT INSERT ON audit TO PUBLIC;
             CREATE FUNCTION record_who() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN INSERT INTO audit VALUES (current_user, TG_OP); RETURN NULL; END $$;
             CREATE TRIGGER who AFTER INSERT OR DELETE ON products FOR EACH ROW EXECUTE FUNCTION record_who();",
        )
        .expect("the audit trigger");
    let mut options = f.options();
    options.config = Some(config);
    let host = sluice_host::Host::open(&options).expect("host");

    let inserted =
        probe_command(&host, "insert", "products", &["name", "price_cents"], vec![text_value("w"), integer(5)]);
    assert_eq!(inserted, "saved: 1");
    let deleted = probe_command(&host, "delete", "products", &["name"], vec![text_value("w")]);
    assert_eq!(deleted, "saved: 1");
    let seen: Vec<(String, String)> = owner
        .query("SELECT who, what FROM audit ORDER BY what DESC", &[])
        .expect("audit")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (who, what) in &seen {
        assert!(who.starts_with("sluice_probe_"), "{what} ran as {who}, not as the service's role");
    }

    let before = db.dump();
    for (table, column, whose) in [
        ("pg_sequence", "seqrelid", "the database engine's own catalog"),
        ("pg_authid", "rolname", "the database engine's own catalog"),
        ("sluice_migrations", "name", "the host's own (sluice_…)"),
    ] {
        let refused = probe_command(&host, "delete", table, &[column], vec![text_value("x")]);
        assert!(refused.contains(&format!("may not delete from table {table}")), "{table}: {refused}");
        assert!(refused.contains(&format!("no grant allows it ({table} is {whose})")), "{table}: {refused}");
    }
    assert_eq!(db.dump(), before);
    let migrations: i64 = owner.query_one("SELECT count(*) FROM sluice_migrations", &[]).expect("migrations").get(0);
    assert_eq!(migrations, 4, "the example migrations, untouched");
}

/// A read of one value larger than the service may read is refused by
/// the server before the value is sent: the host never holds it.
#[test]
fn a_value_over_the_read_limit_is_never_sent_on_postgres() {
    use std::time::Instant;
    let Some(db) = Database::new() else { return };
    let manifest = "[channels.main]\nreads = [\"products\"]\n[limits]\nresult-bytes = 65536\n";
    let (_f, host) = hostile_on(&db, manifest);
    let started = Instant::now();
    for sql in [
        "SELECT repeat('x', 400000000)",
        "SELECT name, repeat(name, 100000) AS padding FROM products",
        "SELECT repeat('y', 70000)::bytea",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000) SELECT array_agg(i) FROM n",
        "SELECT to_jsonb(repeat('j', 70000))",
    ] {
        let args = [Val::String(sql.to_string())];
        let refused = sluice_host::call::run(&host, "hostile", "query", &args, sluice_host::call::Mode::Save)
            .expect_err("read past result-bytes");
        let message = refused.to_string();
        assert!(message.contains("limits.result-bytes"), "{sql}: {message}");
    }
    // Under the limit, and with what the wrapping must keep: order, names,
    // types, parameters.
    let fits = hostile_read(&host, "SELECT name, price_cents FROM products ORDER BY name DESC");
    assert_eq!(fits, r#"{"ok":1}"#);
    assert!(started.elapsed().as_secs() < 30, "the refusals took {:?}", started.elapsed());
}
