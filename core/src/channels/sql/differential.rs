//! A differential property test of the gate: statements generated from a
//! small grammar (CTEs that reuse table names, nested subqueries, `WITH …`
//! writes, conflict clauses, `RETURNING`) run through the channel under a
//! random grant, and the channel's decision is compared with two things
//! worked out apart from the gate:
//!
//! - what SQLite's authorizer reports the statement touches, recorded by a
//!   plain callback that judges nothing, plus the rows the statement really
//!   deletes when run without any gate (which is how `OR REPLACE` shows);
//! - what the statement did when it was let through: no row may carry a
//!   value from a table the grant does not let it read, and no table may
//!   change in a way the grant does not allow.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::channels::SqlChannel as _;
use proptest::prelude::*;
use rusqlite::Connection;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

use super::SqliteChannel;
use crate::bindings::Value;
use crate::channels::grant::ChannelGrant;
use crate::channels::ops::Operation;
use crate::channels::sql::grant::{SqlGrant, Tables};
use crate::channels::sql::ops::SqlOp;
use crate::channels::{Caller, Channel, ChannelError};

const TABLES: [&str; 3] = ["t", "s", "u"];

/// Each table's rows hold values that start with its own name, so a value
/// shows where it was read from.
const SCHEMA: &str = "
    CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT UNIQUE, b TEXT);
    CREATE TABLE s (id INTEGER PRIMARY KEY, a TEXT UNIQUE, b TEXT);
    CREATE TABLE u (id INTEGER PRIMARY KEY, a TEXT UNIQUE, b TEXT);
    INSERT INTO t VALUES (1, 't-a1', 't-b1'), (2, 't-a2', 't-b2');
    INSERT INTO s VALUES (1, 's-a1', 's-b1'), (2, 's-a2', 's-b2');
    INSERT INTO u VALUES (1, 'u-a1', 'u-b1'), (2, 'u-a2', 'u-b2');";

fn table() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&TABLES[..])
}

/// A name a `FROM` may use: a table, or a CTE name (which may be a table's).
fn name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["t", "s", "u", "x", "y"][..])
}

/// A `SELECT a, b` from a name or a nested query, maybe filtered by another.
fn select() -> impl Strategy<Value = String> {
    let leaf = name().prop_map(|n| format!("SELECT a, b FROM {n}"));
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} WHERE a IN (SELECT a FROM ({b}))")),
            inner.clone().prop_map(|q| format!("SELECT a, b FROM ({q})")),
            (name(), inner.clone()).prop_map(|(n, q)| format!("WITH {n} AS ({q}) SELECT a, b FROM {n}")),
            (name(), inner).prop_map(|(n, q)| format!("SELECT a, b FROM (WITH {n} AS ({q}) SELECT a, b FROM {n})")),
        ]
    })
}

/// An optional `WITH name AS (select)` in front of a statement.
fn with() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), (name(), select()).prop_map(|(n, q)| format!("WITH {n} AS ({q}) "))]
}

fn conflict() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["", "OR REPLACE ", "OR IGNORE "][..])
}

fn returning() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["", " RETURNING a, b"][..])
}

fn statement() -> impl Strategy<Value = String> {
    prop_oneof![
        (with(), select()).prop_map(|(w, q)| format!("{w}{q}")),
        (with(), conflict(), table(), select(), returning())
            .prop_map(|(w, c, t, q, r)| format!("{w}INSERT {c}INTO {t} (a, b) SELECT a || '+', b FROM ({q}){r}")),
        (with(), conflict(), table(), select(), returning()).prop_map(|(w, c, t, q, r)| format!(
            "{w}UPDATE {c}{t} SET a = (SELECT a FROM ({q}) LIMIT 1), b = 'w' WHERE id = 2{r}"
        )),
        (with(), table(), select(), returning())
            .prop_map(|(w, t, q, r)| format!("{w}DELETE FROM {t} WHERE a IN (SELECT a FROM ({q})){r}")),
        (conflict(), table()).prop_map(|(c, t)| format!("INSERT {c}INTO {t} (id, a, b) VALUES (1, 'n', 'n')")),
        table().prop_map(|t| format!("REPLACE INTO {t} (id, a, b) VALUES (2, 'n', 'n')")),
    ]
}

fn tables() -> impl Strategy<Value = BTreeSet<&'static str>> {
    prop::sample::subsequence(&TABLES[..], 0..=3).prop_map(|v| v.into_iter().collect())
}

fn grant() -> impl Strategy<Value = ChannelGrant> {
    let set = |names: BTreeSet<&str>| {
        if names.is_empty() { Tables::None } else { Tables::Some(names.iter().map(|n| n.to_string()).collect()) }
    };
    (tables(), tables(), tables(), tables()).prop_map(move |(r, i, u, d)| ChannelGrant {
        sql: SqlGrant {
            reads: set(r),
            inserts: set(i),
            updates: set(u),
            deletes: set(d),
            raw_sql: false,
            relaxed_reads: Tables::None,
        },
        ..ChannelGrant::default()
    })
}

/// A database with [`SCHEMA`] and a channel on it.
fn fresh() -> (tempfile::TempDir, SqliteChannel) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("d.db");
    Connection::open(&path).and_then(|c| c.execute_batch(SCHEMA)).expect("schema");
    let channel = SqliteChannel::open(&format!("sqlite://{}", path.display())).expect("channel");
    (dir, channel)
}

/// Every table's rows by id.
type Snapshot = BTreeMap<&'static str, BTreeMap<i64, (Option<String>, Option<String>)>>;

fn snapshot(channel: &SqliteChannel) -> Snapshot {
    let conn = Connection::open(channel.path()).expect("open");
    TABLES
        .iter()
        .map(|t| {
            let mut stmt = conn.prepare(&format!("SELECT id, a, b FROM {t}")).expect("select");
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
                .and_then(|rows| rows.collect())
                .expect("rows");
            (*t, rows)
        })
        .collect()
}

/// What the statement touches, as SQLite's authorizer reports it with no
/// gate, and the rows it deletes when run ungated on a copy: `(access,
/// table)` pairs, with reads of real tables only (a CTE's rows belong to
/// no database).
fn expected(sql: &str, writes: bool) -> Option<BTreeSet<(&'static str, String)>> {
    let conn = Connection::open_in_memory().expect("memory");
    conn.execute_batch(SCHEMA).expect("schema");
    let before: Vec<BTreeSet<i64>> = TABLES.iter().map(|t| ids(&conn, t)).collect();
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let sink = Arc::clone(&seen);
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        let entry = match ctx.action {
            AuthAction::Read { table_name, .. } if ctx.database_name.is_some() => Some(("read", table_name)),
            AuthAction::Insert { table_name } => Some(("insert", table_name)),
            AuthAction::Update { table_name, .. } => Some(("update", table_name)),
            AuthAction::Delete { table_name } => Some(("delete", table_name)),
            _ => None,
        };
        if let Some((access, table)) = entry {
            sink.lock().expect("record").insert((access, table.to_string()));
        }
        Authorization::Allow
    }));
    let prepared = conn.prepare(sql).map(drop);
    conn.authorizer(None::<fn(AuthContext<'_>) -> Authorization>);
    if prepared.is_err() {
        return None;
    }
    let mut touched = seen.lock().expect("record").clone();
    // `OR REPLACE` may delete rows of the table it writes, whether or not
    // this run happened to: the grammar says where it is.
    if sql.contains("REPLACE") {
        let written: Vec<String> =
            touched.iter().filter(|(a, _)| *a == "insert" || *a == "update").map(|(_, t)| t.clone()).collect();
        touched.extend(written.into_iter().map(|t| ("replace", t)));
    }
    if writes {
        // Run it: rows that vanish from a table were deleted.
        let mut stmt = conn.prepare(sql).expect("prepare");
        let mut rows = stmt.raw_query();
        while let Ok(Some(_)) = rows.next() {}
        drop(rows);
        for (t, before) in TABLES.iter().zip(before) {
            if before.difference(&ids(&conn, t)).next().is_some() && !touched.contains(&("delete", t.to_string())) {
                touched.insert(("replace", t.to_string()));
            }
        }
    }
    Some(touched)
}

fn ids(conn: &Connection, table: &str) -> BTreeSet<i64> {
    let mut stmt = conn.prepare(&format!("SELECT id FROM {table}")).expect("ids");
    stmt.query_map([], |r| r.get(0)).and_then(|rows| rows.collect()).expect("ids")
}

/// Whether `grant` allows everything in `touched`; an update or delete
/// reads its own table with its write grant, and the rows `OR REPLACE`
/// deletes (`replace`) need the delete grant.
fn allows(grant: &ChannelGrant, touched: &BTreeSet<(&str, String)>, writes: bool) -> bool {
    let targets: BTreeSet<&str> =
        touched.iter().filter(|(a, _)| *a == "update" || *a == "delete").map(|(_, t)| t.as_str()).collect();
    touched.iter().all(|(access, t)| match *access {
        "read" => grant.sql.reads.allows(t) || targets.contains(t.as_str()),
        "insert" => writes && grant.sql.inserts.allows(t),
        "update" => writes && grant.sql.updates.allows(t),
        _ => writes && grant.sql.deletes.allows(t),
    })
}

/// The first value that names a table the grant does not let it read.
fn leak<'a>(grant: &ChannelGrant, values: impl Iterator<Item = &'a str>) -> Option<String> {
    values
        .into_iter()
        .find(|v| TABLES.iter().any(|t| v.starts_with(&format!("{t}-")) && !grant.sql.reads.allows(t)))
        .map(str::to_string)
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// As a read (`from.query`): allowed exactly when SQLite reports only
    /// granted reads and no write, and then no row leaks an ungranted table.
    #[test]
    fn reads_agree_with_what_sqlite_reports(sql in statement(), grant in grant()) {
        let Some(touched) = expected(&sql, false) else { return Ok(()) };
        let (_dir, channel) = fresh();
        let caller = Caller::service("probe", Some(Arc::new(grant.clone())), deadline());
        let decided = channel.query(&sql, &[], &caller, usize::MAX);
        let writes = touched.iter().any(|(a, _)| *a != "read");
        let expect = !writes && allows(&grant, &touched, false);
        match &decided {
            Ok(rows) => {
                prop_assert!(expect, "{sql}: allowed, but SQLite reports {touched:?}");
                let texts = rows.rows.values.iter().flatten().filter_map(|v| match v { Value::Text(t) => Some(t.as_str()), _ => None });
                prop_assert_eq!(leak(&grant, texts), None, "{}", sql);
            }
            Err(ChannelError::Denied(_)) => prop_assert!(!expect, "{sql}: denied, but SQLite reports {touched:?}"),
            Err(ChannelError::Invalid(_)) => prop_assert!(writes, "{sql}: invalid: {decided:?}"),
            Err(e) => prop_assert!(false, "{sql}: {e}"),
        }
    }

    /// As a command (`to.execute`, applied at save): allowed exactly when
    /// SQLite reports only granted accesses (rows it deletes included), and
    /// then every change is granted and carries no ungranted value.
    #[test]
    fn commands_agree_with_what_sqlite_reports(sql in statement(), grant in grant()) {
        let Some(touched) = expected(&sql, true) else { return Ok(()) };
        let (_dir, channel) = fresh();
        let before = snapshot(&channel);
        let caller = Caller::service("probe", Some(Arc::new(grant.clone())), deadline());
        let decided = channel.check(&sql, &caller).and_then(|()| {
            let mut tx = channel.begin()?;
            tx.apply(&Operation::Sql(SqlOp::Execute { sql: sql.clone(), params: vec![] }), &caller)?;
            tx.commit()
        });
        let expect = allows(&grant, &touched, true);
        match &decided {
            Ok(()) => {
                prop_assert!(expect, "{sql}: allowed, but SQLite reports {touched:?}");
                let after = snapshot(&channel);
                for t in TABLES {
                    let (was, now) = (&before[t], &after[t]);
                    let gone = was.keys().any(|id| !now.contains_key(id));
                    let added = now.keys().any(|id| !was.contains_key(id));
                    let changed = now.iter().any(|(id, row)| was.get(id).is_some_and(|old| old != row));
                    prop_assert!(!gone || grant.sql.deletes.allows(t), "{sql}: deleted from {t}");
                    prop_assert!(!added || grant.sql.inserts.allows(t), "{sql}: inserted into {t}");
                    // A row replaced under the same id is a delete and an insert.
                    let replaced = grant.sql.deletes.allows(t) && grant.sql.inserts.allows(t);
                    prop_assert!(!changed || grant.sql.updates.allows(t) || replaced, "{sql}: updated {t}");
                    let new = now.iter().filter(|(id, row)| was.get(id) != Some(row)).flat_map(|(_, (a, b))| [a.as_deref(), b.as_deref()]).flatten();
                    let foreign = new.filter(|v| !v.starts_with(&format!("{t}-")));
                    prop_assert_eq!(leak(&grant, foreign), None, "{}", sql);
                }
            }
            Err(ChannelError::Denied(_)) => prop_assert!(!expect, "{sql}: denied, but SQLite reports {touched:?}"),
            // A constraint the statement breaks, with or without a gate.
            Err(ChannelError::Constraint(_)) => {}
            Err(e) => prop_assert!(false, "{sql}: {e}"),
        }
    }
}
