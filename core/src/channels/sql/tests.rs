//! Unit tests of the SQLite channel: statements, transactions, the pool,
//! reads and their grants.

use super::*;
use crate::bindings::Row;
use crate::channels::sql::ops::SqlOp;
use std::time::{Duration, Instant};

/// A channel on a new database file in a temp dir (kept alive by the
/// returned guard).
fn open() -> Result<(tempfile::TempDir, SqliteChannel), ChannelError> {
    let dir = tempfile::tempdir().map_err(|e| ChannelError::Unavailable(e.to_string()))?;
    let channel = SqliteChannel::open(&format!("sqlite://{}", dir.path().join("t.db").display()))?;
    Ok((dir, channel))
}

fn host() -> Caller {
    Caller::host(Instant::now() + Duration::from_secs(60))
}

fn row(pairs: &[(&str, Value)]) -> Row {
    Row {
        columns: pairs.iter().map(|(c, _)| c.to_string()).collect(),
        values: pairs.iter().map(|(_, v)| v.clone()).collect(),
    }
}

#[test]
fn statements_quote_identifiers_and_bind_values() {
    let op = Operation::Sql(SqlOp::Update {
        table: "we\"ird".into(),
        key: row(&[("id", Value::Integer(1)), ("gone", Value::Null)]),
        changes: row(&[("name", Value::Text("x'; DROP TABLE t; --".into()))]),
    });
    let (sql, params) = (apply::sql_of(&op), apply::params_of(&op));
    assert_eq!(sql, r#"UPDATE "we""ird" SET "name" = ?1 WHERE "id" = ?2 AND "gone" IS NULL"#);
    assert_eq!(params.len(), 2);
}

#[test]
fn transaction_rolls_back_when_dropped() -> Result<(), ChannelError> {
    let (_dir, channel) = open()?;
    let exec = |sql: &str| Operation::Sql(SqlOp::Execute { sql: sql.into(), params: vec![] });
    let mut tx = channel.begin()?;
    tx.apply(&exec("CREATE TABLE t (a INTEGER)"), &host())?;
    tx.commit()?;
    let mut tx = channel.begin()?;
    assert_eq!(
        tx.apply(&Operation::Sql(SqlOp::Insert { table: "t".into(), row: row(&[("a", Value::Integer(7))]) }), &host())?,
        Outcome::Inserted(1)
    );
    drop(tx);
    assert!(channel.query("SELECT a FROM t", &[], &host(), usize::MAX)?.rows.values.is_empty());
    Ok(())
}

#[test]
fn a_connection_left_in_a_transaction_is_rolled_back_before_reuse() -> Result<(), ChannelError> {
    let (_dir, channel) = open()?;
    let pooled = channel.take()?;
    pooled.conn.execute_batch("CREATE TABLE t (a); BEGIN; INSERT INTO t VALUES (1);").map_err(unavailable)?;
    give_back(&channel.pool, pooled);
    let again = channel.take()?;
    assert!(again.conn.is_autocommit(), "a pooled connection is still inside a transaction");
    give_back(&channel.pool, again);
    assert!(channel.query("SELECT a FROM t", &[], &host(), usize::MAX)?.rows.values.is_empty());
    Ok(())
}

#[test]
fn reads_refuse_writes_and_wrong_parameter_counts() -> Result<(), ChannelError> {
    let (_dir, channel) = open()?;
    assert!(matches!(channel.query("CREATE TABLE x (a)", &[], &host(), usize::MAX), Err(ChannelError::Invalid(_))));
    assert!(matches!(channel.query("SELECT ?1", &[], &host(), usize::MAX), Err(ChannelError::Invalid(_))));
    let rows = channel.query("SELECT ?1 AS a", &[Value::Integer(3)], &host(), usize::MAX)?.rows;
    assert_eq!(rows.columns, vec!["a".to_string()]);
    assert_eq!(rows.values, vec![vec![Value::Integer(3)]]);
    Ok(())
}

/// `SELECT count(*) FROM t` reads no column, and SQLite names no
/// database for it: the gate still needs the read grant on `t`, and the
/// read lists `t`, so that the save checks it.
#[test]
fn reads_of_no_column_need_the_grant_and_name_their_table() -> Result<(), ChannelError> {
    let (_dir, channel) = open()?;
    let mut tx = channel.begin()?;
    for sql in ["CREATE TABLE t (a)", "CREATE TABLE secret (b)"] {
        tx.apply(&Operation::Sql(SqlOp::Execute { sql: sql.into(), params: vec![] }), &host())?;
    }
    tx.commit()?;
    let grant: crate::channels::grant::ChannelGrant =
        toml::from_str("reads = [\"t\"]").map_err(|e| ChannelError::Invalid(e.to_string()))?;
    let caller = Caller::service("probe", Some(Arc::new(grant)), Instant::now() + Duration::from_secs(60));
    for sql in ["SELECT count(*) FROM secret", "SELECT 1 FROM secret", "SELECT EXISTS (SELECT 1 FROM secret)"] {
        let refused = channel.query(sql, &[], &caller, usize::MAX);
        assert!(matches!(refused, Err(ChannelError::Denied(Denial::Table { .. }))), "{sql}: {refused:?}");
    }
    assert_eq!(channel.query("SELECT count(*) FROM t", &[], &caller, usize::MAX)?.tables, ["t"]);
    let cte = channel.query("WITH n(i) AS (SELECT 1) SELECT count(*) FROM n", &[], &caller, usize::MAX)?;
    assert!(cte.tables.is_empty(), "{:?}", cte.tables);
    Ok(())
}
