//! The `sql` kind on a real PostgreSQL server (127.0.0.1:5432, database
//! `test`, trust auth): each test makes a database of its own and drops it
//! after. Without a server they skip with a message; in CI
//! (SLUICE_REQUIRE_TOOLS=1) they fail instead.

use postgres::{Client, NoTls};

use crate::support::{Fixture, repo, skip_without, text};

/// The server the tests use.
const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// A database of one test's own, dropped when it goes, with a host user of
/// its own that is no superuser: `LOGIN CREATEROLE`, owner of the database
/// (so of its schema `public`), as docs/channels.md tells an operator to
/// make it.
pub(crate) struct Database {
    name: String,
}

impl Database {
    /// A new empty database, or `None` (after saying why) without a server.
    pub(crate) fn new() -> Option<Database> {
        let mut admin = match Client::connect(&format!("{SERVER}/test"), NoTls) {
            Ok(client) => client,
            Err(e) => {
                skip_without(&format!("skipping: no PostgreSQL at {SERVER}/test ({e})"));
                return None;
            }
        };
        let name = format!("sluice_test_{}", uuid::Uuid::new_v4().simple());
        admin.batch_execute(&format!("CREATE ROLE {name} LOGIN CREATEROLE NOSUPERUSER")).expect("the host user");
        admin.batch_execute(&format!("CREATE DATABASE {name} OWNER {name}")).expect("the test database");
        Some(Database { name })
    }

    /// The URL the host connects with: as the database's own user.
    pub(crate) fn url(&self) -> String {
        format!("postgres://{}@127.0.0.1:5432/{}", self.name, self.name)
    }

    /// A superuser's connection to the database, for the test's own looks.
    pub(crate) fn client(&self) -> Client {
        Client::connect(&format!("{SERVER}/{}", self.name), NoTls).expect("connect to the test database")
    }

    /// Every example table's rows in id order, as text: equal dumps mean
    /// equal data.
    pub(crate) fn dump(&self) -> String {
        let mut client = self.client();
        let mut out = String::new();
        for (table, key) in EXAMPLE_TABLES {
            out.push_str(&format!("== {table}\n"));
            for row in client.query(&format!("SELECT * FROM {table} ORDER BY {key}"), &[]).expect("select") {
                let cells: Vec<String> = (0..row.len()).map(|i| cell(&row, i)).collect();
                out.push_str(&cells.join("|"));
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&format!("{SERVER}/test"), NoTls) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
            let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS {}", self.name));
        }
    }
}

/// The example tables and their order.
const EXAMPLE_TABLES: [(&str, &str); 5] =
    [("clearings", "id"), ("order_events", "id"), ("orders", "id"), ("products", "id"), ("stock", "product_id")];

fn cell(row: &postgres::Row, i: usize) -> String {
    if let Ok(Some(n)) = row.try_get::<_, Option<i64>>(i) {
        return n.to_string();
    }
    row.try_get::<_, Option<String>>(i).ok().flatten().unwrap_or_else(|| "NULL".into())
}

/// The same example tables dumped from a SQLite fixture, in the same form.
fn sqlite_dump(f: &Fixture) -> String {
    let conn = f.db();
    let mut out = String::new();
    for (table, key) in EXAMPLE_TABLES {
        out.push_str(&format!("== {table}\n"));
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY {key}")).expect("select");
        let width = stmt.column_count();
        let rows: Vec<String> = stmt
            .query_map([], |r| {
                let cells: Vec<String> = (0..width)
                    .map(|i| match r.get_ref(i) {
                        Ok(rusqlite::types::ValueRef::Integer(n)) => n.to_string(),
                        Ok(rusqlite::types::ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
                        _ => "NULL".into(),
                    })
                    .collect();
                Ok(cells.join("|"))
            })
            .and_then(|rows| rows.collect())
            .expect("rows");
        for row in rows {
            out.push_str(&row);
            out.push('\n');
        }
    }
    out
}

/// A fixture with the example services and a `sluice.toml` pointing
/// channel `main` at `db`.
fn fixture_on(db: &Database) -> (Fixture, std::path::PathBuf) {
    let f = Fixture::new(&["orders", "products", "inventory"]);
    let config = f.dir.path().join("sluice.toml");
    std::fs::write(&config, format!("[channels.main]\nkind = \"sql\"\nurl = \"{}\"\n", db.url())).expect("config");
    (f, config)
}

/// [`fixture_on`] with the example schema applied.
pub(crate) fn migrated(db: &Database) -> (Fixture, std::path::PathBuf) {
    let (f, config) = fixture_on(db);
    let schema = repo().join("examples/schema").to_string_lossy().into_owned();
    let out = f.command().arg("--config").arg(&config).args(["migrate", &schema]).output().expect("migrate");
    assert!(out.status.success(), "{}", text(&out.stderr));
    (f, config)
}

/// The README's scenario, one `sluice` command per step; each step's
/// output with scope ids taken out.
fn scenario(f: &Fixture, config: Option<&std::path::Path>) -> Vec<String> {
    let schema = repo().join("examples/schema").to_string_lossy().into_owned();
    let steps: [&[&str]; 9] = [
        &["migrate", &schema],
        &["call", "products.add", "widget", "250"],
        &["call", "products.add", "gadget", "1200"],
        &["call", "inventory.restock", "1", "10"],
        &["call", "inventory.restock", "1", "5"],
        &["call", "orders.place", "ann", "1", "3"],
        &["call", "orders.place", "bob", "1", "30"],
        &["call", "orders.do-clearing", "1"],
        &["call", "products.list"],
    ];
    steps
        .iter()
        .map(|args| {
            let mut command = f.command();
            if let Some(config) = config {
                command.arg("--config").arg(config);
            }
            let out = command.args(args.iter()).output().expect("run sluice");
            let stdout = text(&out.stdout);
            let words: Vec<&str> =
                stdout.split_whitespace().map(|w| if w.starts_with("scope-") { "scope-ID" } else { w }).collect();
            format!("exit {:?}: {}", out.status.code(), words.join(" "))
        })
        .collect()
}

/// The example services run unchanged on PostgreSQL: the README's scenario
/// gives the same answers, and leaves the same data, as on SQLite.
#[test]
fn the_example_scenario_is_the_same_on_sqlite_and_postgres() {
    let Some(db) = Database::new() else { return };
    let lite = Fixture::new(&["orders", "products", "inventory"]);
    let on_sqlite = scenario(&lite, None);
    let (f, config) = fixture_on(&db);
    let on_postgres = scenario(&f, Some(&config));
    assert!(on_sqlite[0].starts_with("exit Some(0): applied 0001_products.sql"), "{}", on_sqlite[0]);
    assert!(on_sqlite[5].contains("inserted row 1"), "{}", on_sqlite[5]);
    assert!(on_sqlite[6].starts_with("exit Some(2)"), "{}", on_sqlite[6]);
    for (step, (lite, pg)) in on_sqlite.iter().zip(&on_postgres).enumerate() {
        assert_eq!(lite, pg, "step {step} differs");
    }
    let data = sqlite_dump(&lite);
    assert!(data.contains("== stock\n1|12\n"), "{data}");
    assert_eq!(data, db.dump());
}

/// PostgreSQL itself enforces a service's grant: its SQL runs as a role
/// holding exactly the manifest's tables; a read or a command on any other
/// table is refused, names the missing grant, and nothing is applied.
#[test]
fn postgres_roles_hold_exactly_the_grant() {
    let Some(db) = Database::new() else { return };
    let (f, config) = migrated(&db);
    let mut client = db.client();
    client.batch_execute("CREATE TABLE secret (v TEXT); INSERT INTO secret VALUES ('hidden')").expect("secret");
    // inventory may read and write stock only: a read of products is
    // refused by the filter, naming the grant; its role has no privilege on
    // products or secret either.
    let out = f.command().arg("--config").arg(&config).args(["call", "inventory.level", "1"]).output().expect("call");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let role: String = client
        .query_one("SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'sluice_inventory_%'", &[])
        .expect("inventory has a role")
        .get(0);
    let privileges: Vec<(String, String)> = client
        .query(
            "SELECT table_name::text, privilege_type::text FROM information_schema.role_table_grants \
             WHERE grantee = $1 ORDER BY 1, 2",
            &[&role],
        )
        .expect("privileges")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(String, String)> =
        ["INSERT", "SELECT", "UPDATE"].iter().map(|p| ("stock".to_string(), p.to_string())).collect();
    assert_eq!(privileges, expected);
    // As that role, PostgreSQL refuses the secret table whatever the SQL.
    let mut tx = client.transaction().expect("begin");
    tx.batch_execute(&format!("SET LOCAL ROLE \"{role}\"")).expect("set role");
    let refused = tx.query("SELECT v FROM secret", &[]).expect_err("the role reads no secret");
    assert_eq!(refused.code().map(|c| c.code()), Some("42501"), "{refused}");
}

/// A migration already applied whose file changed is refused by name on
/// PostgreSQL too.
#[test]
fn an_edited_migration_is_refused_on_postgres() {
    let Some(db) = Database::new() else { return };
    let (f, config) = fixture_on(&db);
    let dir = f.dir.path().join("migrations");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("0001_t.sql"), "CREATE TABLE t (a BIGINT);").expect("write");
    let migrate = || {
        f.command().arg("--config").arg(&config).args(["migrate", &dir.to_string_lossy()]).output().expect("migrate")
    };
    let out = migrate();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("applied 0001_t.sql"));
    assert!(text(&migrate().stdout).contains("already applied 0001_t.sql"));
    std::fs::write(dir.join("0001_t.sql"), "CREATE TABLE t (a BIGINT, b TEXT);").expect("write");
    let out = migrate();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("migration 0001_t.sql was applied with checksum"), "{}", text(&out.stderr));
}

/// The README example under load on PostgreSQL: 150 in stock, 200
/// concurrent orders of one unit each over HTTP. Saves are serializable
/// transactions: those that lose to a concurrent save are conflicts and run
/// again, so exactly 150 are placed, 50 are told `out-of-stock`, the stock
/// ends at 0 and every placed order has its event.
#[test]
fn two_hundred_concurrent_orders_for_150_units_place_exactly_150_on_postgres() {
    use serde_json::json;
    use std::sync::Arc;
    const STOCK: usize = 150;
    const ORDERS: usize = 200;
    let Some(db) = Database::new() else { return };
    let (f, config) = migrated(&db);
    let config = config.to_string_lossy().into_owned();
    let served = Arc::new(f.serve(&["--config", &config]));
    let (status, body) = served.post("/services/products/add", &json!({ "name": "widget", "price-cents": 250 }));
    assert_eq!(status, 200, "{body}");
    let (status, body) = served.post("/services/inventory/restock", &json!({ "product-id": 1, "quantity": STOCK }));
    assert_eq!(status, 200, "{body}");

    let answers = crate::serializable::all_at_once(&served, ORDERS, "/services/orders/place");

    let placed = answers.iter().filter(|(status, _)| *status == 200).count();
    let out_of_stock =
        answers.iter().filter(|(status, body)| *status == 422 && body["value"] == json!({ "out-of-stock": 0 })).count();
    let others: Vec<_> = answers.iter().filter(|(status, _)| *status != 200 && *status != 422).collect();
    assert!(others.is_empty(), "answers other than 200 and 422: {others:?}");
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, body)| *status == 422 && body["value"] != json!({ "out-of-stock": 0 }))
        .collect();
    assert_eq!((placed, out_of_stock), (STOCK, ORDERS - STOCK), "other refusals: {refused:?}");
    let mut client = db.client();
    let count = |client: &mut Client, sql: &str| client.query_one(sql, &[]).expect("count").get::<_, i64>(0);
    assert_eq!(count(&mut client, "SELECT on_hand FROM stock WHERE product_id = 1"), 0);
    assert_eq!(count(&mut client, "SELECT count(*) FROM orders"), STOCK as i64);
    assert_eq!(count(&mut client, "SELECT count(*) FROM order_events"), STOCK as i64);
    let retried: u64 = answers.iter().filter_map(|(_, body)| body["ending"]["attempt"].as_u64()).map(|a| a - 1).sum();
    assert!(retried > 0, "200 orders at once on one row ran without a single conflict: the test proves nothing");
}

/// A `kv` channel kept in a table of a PostgreSQL channel behaves as on
/// SQLite and Redis.
#[test]
fn kv_semantics_in_a_postgres_table() {
    let Some(db) = Database::new() else { return };
    let f = Fixture::new(&["probe"]);
    let config = f.dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[channels.main]\nkind = \"sql\"\nurl = \"{}\"\n\n[channels.kv]\nkind = \"kv\"\nurl = \"sql:main\"\n",
            db.url()
        ),
    )
    .expect("config");
    let mut options = f.options();
    options.config = Some(config);
    let host = sluice_host::Host::open(&options).expect("host");
    crate::kv::semantics(&host, "kv", "t/");
    let rows: i64 =
        db.client().query_one("SELECT count(*) FROM sluice_kv WHERE space = 'kv'", &[]).expect("count").get(0);
    assert!(rows > 0);
}

/// Many scopes using a service's PostgreSQL role for the first time at
/// once (its role not yet set up) all get their answer: the role is set up
/// once, not raced by every scope.
#[test]
fn a_role_first_used_by_many_scopes_at_once_is_set_up_once() {
    use std::sync::{Arc, Barrier};
    let Some(db) = Database::new() else { return };
    let (f, config) = migrated(&db);
    // A service name of this run's own: its role does not exist yet.
    let service = format!("products-{}", uuid::Uuid::new_v4().simple());
    f.add_component_as("products", &service);
    let mut options = f.options();
    options.config = Some(config);
    let host = Arc::new(sluice_host::Host::open(&options).expect("host"));
    const SCOPES: usize = 48;
    let start = Arc::new(Barrier::new(SCOPES));
    let threads: Vec<_> = (0..SCOPES)
        .map(|_| {
            let (host, start, service) = (Arc::clone(&host), Arc::clone(&start), service.clone());
            std::thread::spawn(move || {
                start.wait();
                let report = sluice_host::call::run(&host, &service, "list", &[], sluice_host::call::Mode::Save)
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(sluice_host::values::to_json(&report.results[0]).to_string())
            })
        })
        .collect();
    let answers: Vec<Result<String, String>> = threads.into_iter().map(|t| t.join().expect("thread")).collect();
    let wrong: Vec<_> = answers.iter().filter(|a| a.as_deref() != Ok(r#"{"ok":[]}"#)).collect();
    drop(host);
    drop(db);
    // The role is the cluster's: remove it with the database it served.
    let plain: String = service.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(40).collect();
    let mut admin = Client::connect(&format!("{SERVER}/test"), NoTls).expect("connect");
    for row in admin
        .query("SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1", &[&format!("sluice_{plain}_%")])
        .expect("roles")
    {
        admin.batch_execute(&format!("DROP ROLE \"{}\"", row.get::<_, String>(0))).expect("drop the role");
    }
    assert!(wrong.is_empty(), "{} of {SCOPES} scopes failed: {wrong:?}", wrong.len());
}
