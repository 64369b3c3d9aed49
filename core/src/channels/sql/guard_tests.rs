//! The gate's unit tests: statements prepared on an in-memory SQLite
//! database under a grant, judged as the channel judges them.

use super::*;
use crate::channels::grant::ChannelGrant;

pub fn conn() -> (Connection, Gate) {
    let conn = Connection::open_in_memory().expect("memory db");
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a UNIQUE, b);
         CREATE TABLE w (k TEXT PRIMARY KEY, a UNIQUE, b) WITHOUT ROWID;
         CREATE TABLE r (id INTEGER PRIMARY KEY, a UNIQUE ON CONFLICT REPLACE);
         CREATE TABLE secrets (x);
         CREATE TABLE log (m);
         CREATE VIEW v AS SELECT x FROM secrets;
         CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log VALUES (new.a); END;
         CREATE TABLE sluice_kv (k TEXT PRIMARY KEY, v);",
    )
    .expect("schema");
    let gate = Gate::install(&conn);
    (conn, gate)
}

pub fn rules(manifest: &str, writes: bool) -> Rules {
    // The grant on `main` of a manifest's text (the manifest sits above
    // the channels).
    let table: toml::Table = toml::from_str(manifest).expect("manifest");
    let main = table.get("channels").and_then(|c| c.get("main")).cloned();
    let grant = main.map(|g| Arc::new(g.try_into::<ChannelGrant>().expect("grant")));
    Rules { grant, writes, keys: Arc::default() }
}

/// Prepares `sql` under `rules` and judges it.
pub fn check(conn: &Connection, gate: &Gate, rules: &Rules, sql: &str) -> Result<(), Denial> {
    let entered = gate.enter(Some(rules), None, None);
    match conn.prepare(sql) {
        Ok(_) => entered.judge(),
        Err(e) => Err(entered.denial().unwrap_or_else(|| Denial::Never(e.to_string()))),
    }
}

pub fn table(access: Access, table: &str) -> Denial {
    Denial::Table { access, table: table.into() }
}

#[test]
fn ctes_shadow_nothing_and_views_need_their_tables() {
    let (conn, gate) = conn();
    let read_t = rules("[channels.main]\nreads = [\"t\", \"v\"]\n", false);
    let check = |sql| check(&conn, &gate, &read_t, sql);
    assert_eq!(check("SELECT * FROM t"), Ok(()));
    assert_eq!(check("WITH secrets AS (SELECT 1) SELECT * FROM secrets"), Ok(()));
    assert_eq!(check("WITH t AS (SELECT * FROM secrets) SELECT * FROM t"), Err(table(Access::Read, "secrets")));
    assert_eq!(
        check("WITH x AS (SELECT 1) SELECT * FROM x, (WITH y AS (SELECT * FROM secrets) SELECT * FROM y)"),
        Err(table(Access::Read, "secrets"))
    );
    assert_eq!(check("SELECT * FROM v"), Err(table(Access::Read, "secrets")));
    assert_eq!(check("SELECT name FROM sqlite_master"), Err(table(Access::Read, "sqlite_master")));
}

#[test]
fn reads_never_write_and_never_control_transactions() {
    let (conn, gate) = conn();
    let all = rules("[channels.main]\nreads = \"*\"\ninserts = \"*\"\nupdates = \"*\"\ndeletes = \"*\"\n", false);
    let check = |sql| check(&conn, &gate, &all, sql);
    assert_eq!(
        check("WITH x AS (SELECT 1) DELETE FROM t WHERE id IN (SELECT * FROM x)"),
        Err(Denial::WriteInRead { access: Access::Delete, table: "t".into() })
    );
    for sql in ["BEGIN", "COMMIT", "ROLLBACK", "END", "SAVEPOINT s", "RELEASE s"] {
        assert!(matches!(check(sql), Err(Denial::Never(why)) if why.contains("transaction")), "{sql}");
    }
    assert!(matches!(check("PRAGMA user_version"), Err(Denial::Never(_))));
    // A table-valued pragma is read like a table: only "*" grants it.
    let read_t = rules("[channels.main]\nreads = [\"t\"]\n", false);
    assert_eq!(
        super::tests::check(&conn, &gate, &read_t, "SELECT * FROM pragma_table_info('t')"),
        Err(table(Access::Read, "pragma_table_info"))
    );
    assert!(matches!(check("ATTACH DATABASE ':memory:' AS x"), Err(Denial::Never(_))));
    assert!(matches!(check("SELECT last_insert_rowid()"), Err(Denial::Never(_))));
    assert_eq!(check("SELECT count(*), max(a), json_object('a', b) FROM t"), Ok(()));
}

#[test]
fn writes_need_the_grant_sqlite_reports() {
    let (conn, gate) = conn();
    let writer = rules("[channels.main]\nreads = [\"t\"]\ninserts = [\"t\", \"log\"]\nupdates = [\"t\"]\n", true);
    let check = |sql| check(&conn, &gate, &writer, sql);
    assert_eq!(check("INSERT INTO t (a) VALUES (1)"), Ok(()));
    assert_eq!(check("UPDATE t SET b = 2 WHERE id = 1"), Ok(()));
    assert_eq!(check("INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 2"), Ok(()));
    assert_eq!(check("DELETE FROM t"), Err(table(Access::Delete, "t")));
    assert_eq!(check("INSERT INTO log SELECT x FROM secrets"), Err(table(Access::Read, "secrets")));
    assert_eq!(check("INSERT INTO secrets VALUES (1)"), Err(table(Access::Insert, "secrets")));
    assert!(matches!(check("CREATE TABLE z (a)"), Err(Denial::Schema(_))));
    let raw = rules("[channels.main]\nraw-sql = true\n", true);
    assert_eq!(super::tests::check(&conn, &gate, &raw, "CREATE TABLE z (a)"), Ok(()));
    assert!(matches!(super::tests::check(&conn, &gate, &raw, "PRAGMA journal_mode = off"), Err(Denial::Never(_))));
}

/// `raw-sql` means schema changes and nothing more: no temporary
/// object (it would stay on the pooled connection and shadow tables
/// for the next scope, the host's statements included), no trigger
/// (its writes would run under no grant), and no schema action on a
/// host table. A rename runs SQLite's `sqlite_rename_table()`, which no
/// service may call, so no rename can give a table a host table's name.
#[test]
fn raw_sql_changes_the_schema_but_never_the_connection_triggers_or_host_tables() {
    let (conn, gate) = conn();
    let raw = rules("[channels.main]\nraw-sql = true\n", true);
    let check = |sql| check(&conn, &gate, &raw, sql);
    for sql in [
        "CREATE TEMP TABLE products (id, name)",
        "CREATE TABLE temp.x (a)",
        "CREATE TEMP VIEW tv AS SELECT 1",
        "CREATE TEMP TRIGGER tt AFTER INSERT ON t BEGIN DELETE FROM secrets; END",
        "CREATE TRIGGER t2 AFTER INSERT ON t BEGIN DELETE FROM secrets; END",
        "CREATE TABLE sluice_x (a)",
        "CREATE TABLE \"SLUICE_X\" (a)",
        "ALTER TABLE sluice_kv ADD COLUMN planted",
        "ALTER TABLE t RENAME TO sluice_outbox",
        "ALTER TABLE t RENAME TO [Sluice_Outbox]",
        "CREATE INDEX i ON sluice_kv (v)",
        "DROP TABLE sluice_kv",
        "CREATE VIEW sluice_v AS SELECT 1",
    ] {
        assert!(matches!(check(sql), Err(Denial::Never(_))), "{sql}: {:?}", check(sql));
    }
    for sql in
        ["CREATE TABLE z (a)", "ALTER TABLE t ADD COLUMN c", "CREATE VIEW v2 AS SELECT a FROM t", "DROP TRIGGER tr"]
    {
        assert_eq!(check(sql), Ok(()), "{sql}");
    }
}

#[test]
fn a_statement_past_its_deadline_is_interrupted() {
    let (conn, gate) = conn();
    let _entered = gate.enter(None, Some(Instant::now()), None);
    let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n";
    let err = conn.query_row(endless, [], |r| r.get::<_, i64>(0)).expect_err("interrupted");
    assert_eq!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::OperationInterrupted), "{err}");
}
