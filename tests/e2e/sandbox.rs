//! The sandbox against hostile SQL, beside the corpus in `hostile.rs`:
//! grants enforced by SQLite itself (whatever CTEs, views or conflict
//! clauses hide), no transaction control in any statement, and one save
//! rule that no caller gets around. Each case checks that the error names
//! the service and the grant, that the database is unchanged, and that the
//! host serves the next request at once. `costs.rs` bounds what a scope may
//! spend in host code; `edge.rs` covers the HTTP edge.

use serde_json::json;
use sluice_host::call::{self, Ending, Mode};
use sluice_host::{Host, ScopeError};
use wasmtime::component::Val;

use crate::hostile::{attack, corpus, s, serves_normally};
use crate::support::Fixture;

/// The corpus with a `secrets` table (and a view over it) that no test
/// grants, and `hostile`'s manifest replaced by `manifest`.
pub(crate) fn with_secrets(manifest: &str) -> (Fixture, Host, String) {
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
pub(crate) fn denied(f: &Fixture, what: &str, line: &str) -> String {
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

/// `OR REPLACE` on a table with no index but its rowid: SQLite 3.50
/// overwrites the row in place, with no delete in its bytecode, so an
/// insert grant alone must not let a service replace a row that exists.
#[test]
fn an_insert_grant_does_not_overwrite_rows() {
    let (f, host, _) = with_secrets("[channels.main]\nreads = [\"notes\"]\ninserts = [\"notes\"]\n");
    f.db()
        .execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes VALUES (1, 'kept');")
        .expect("notes");
    let before = f.dump();
    let delete_notes = denied(&f, "delete from table notes", "deletes = [\"notes\"]");
    for sql in [
        "INSERT OR REPLACE INTO notes (id, body) VALUES (1, 'overwritten')",
        "REPLACE INTO notes (id, body) VALUES (1, 'overwritten')",
    ] {
        // Twice: the second comes from the connection's judged statements.
        for _ in 0..2 {
            assert_eq!(attack(&host, "execute", &[s(sql)]), delete_notes, "{sql}");
            assert_eq!(f.dump(), before, "{sql} changed the database");
        }
    }
    let added =
        call::run(&host, "hostile", "execute", &[s("INSERT INTO notes (id, body) VALUES (2, 'new')")], Mode::Save)
            .expect("a granted insert");
    assert_eq!(sluice_host::values::to_json(&added.results[0]), json!({ "ok": 1 }));
    serves_normally(&host, &f, "after-overwrite");
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

/// `raw-sql` means schema changes, never state left on the pooled
/// connection, a trigger or a host table: a temporary table named like an
/// application table (it would take the next scopes' inserts and answer
/// their reads on that connection), a trigger (its writes run under no
/// grant) and any schema action on a `sluice_` table are refused, and the
/// next scopes' inserts reach the real tables.
#[test]
fn raw_sql_leaves_nothing_on_the_connection_and_never_reaches_host_tables() {
    let manifest =
        "[channels.main]\nreads = \"*\"\ninserts = \"*\"\nupdates = \"*\"\ndeletes = \"*\"\nraw-sql = true\n";
    let (f, host, before) = with_secrets(manifest);
    for sql in [
        "CREATE TEMP TABLE products (id INTEGER PRIMARY KEY, name TEXT, price_cents INTEGER)",
        "CREATE TABLE temp.orders (id INTEGER PRIMARY KEY)",
        "CREATE TEMP VIEW products_view AS SELECT 1",
        "CREATE TRIGGER wipe AFTER INSERT ON products BEGIN DELETE FROM secrets; END",
        "CREATE TABLE sluice_planted (a)",
        "CREATE TABLE \"SLUICE_Outbox2\" (a)",
        "ALTER TABLE sluice_migrations ADD COLUMN planted",
        "DROP TABLE sluice_migrations",
    ] {
        let error = attack(&host, "execute", &[s(sql)]);
        assert!(error.contains("hostile may not") && error.contains("no grant allows it"), "{sql}: {error}");
        assert_eq!(f.dump(), before, "{sql} changed the database");
    }
    serves_normally(&host, &f, "after-temporary-objects");
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

/// A caller that skips `Scope::finish` and saves directly still cannot save
/// a scope that saw a denial.
#[test]
fn saving_a_denied_scope_directly_is_refused() {
    let (f, host, before) = with_secrets("[channels.main]\ninserts = [\"products\"]\n");
    let mut scope = host.scope();
    let queued = scope.call("hostile", "flood", &[Val::U32(1)]).expect("flood");
    assert!(matches!(&queued[0], Val::Result(Ok(_))), "{queued:?}");
    let read = scope.call("hostile", "query", &[s("SELECT * FROM secrets")]).expect("query");
    assert!(matches!(&read[0], Val::Result(Err(_))), "{read:?}");
    let error = scope.save().expect_err("a denied scope was saved");
    assert!(matches!(error, ScopeError::Denied { .. }), "{error}");
    assert!(error.to_string().contains("hostile may not read table secrets"), "{error}");
    drop(scope);
    assert_eq!(f.dump(), before);
}
