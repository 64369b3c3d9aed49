//! A save's commands applied on SQLite, in runs: the commands one service
//! queued one after another with the same statement (the same SQL text for
//! `to.execute`; the same table, columns and key shape for the others) run
//! on one prepared statement, under one gate, judged once. Each command is
//! still bound, stepped and counted on its own, so its outcome and its
//! failure are its own.

use std::borrow::Cow;

use rusqlite::params_from_iter;

use super::guard::Entered;
use super::{Pooled, authorized, check_param_count, ran};
use crate::bindings::{Row, Value};
use crate::channels::ops::{Operation, Outcome};
use crate::channels::sql::ops::SqlOp;
use crate::channels::{Caller, ChannelError, wrong_kind};

/// How many commands of a run run between two looks at the deadline. The
/// progress handler interrupts a statement that runs long; this stops a long
/// run of short ones, which may each end before the handler is called.
const COMMANDS_PER_CHECK: usize = 64;

/// Fails with [`ChannelError::Timeout`] when the run's deadline has passed
/// (or its scope was cancelled), looking every [`COMMANDS_PER_CHECK`]
/// commands, the first included.
fn in_time(taken: usize, entered: &Entered<'_>) -> Result<(), ChannelError> {
    if taken.is_multiple_of(COMMANDS_PER_CHECK) && entered.overdue() {
        return Err(ChannelError::Timeout);
    }
    Ok(())
}

/// Applies `ops` in order under `caller`'s grant and deadline, pushing each
/// outcome; see [`crate::channels::Transaction::apply_run`].
pub(super) fn apply_run(
    pooled: &Pooled,
    ops: &[&Operation],
    caller: &Caller,
    outcomes: &mut Vec<Outcome>,
) -> Result<(), ChannelError> {
    let mut rest = ops;
    while let Some(first) = rest.first() {
        let taken = match first {
            Operation::Sql(SqlOp::Execute { sql, .. }) => executes(pooled, sql, rest, caller, outcomes)?,
            op if op.kind() == crate::channels::sql::KIND => built(pooled, rest, caller, outcomes)?,
            op => return Err(wrong_kind(crate::channels::sql::KIND, op.kind(), &op.describe())),
        };
        rest = &rest[taken..];
    }
    Ok(())
}

/// Runs the leading commands of `ops` that execute `sql`, the service's
/// own SQL, which SQLite checks against its grant once for the run.
/// Returns how many ran. A statement that changes the schema runs alone:
/// the next one is judged against the schema it made.
fn executes(
    pooled: &Pooled,
    sql: &str,
    ops: &[&Operation],
    caller: &Caller,
    outcomes: &mut Vec<Outcome>,
) -> Result<usize, ChannelError> {
    let (mut stmt, entered) = authorized(pooled, sql, caller, true)?;
    let alone = entered.judged().changes_schema();
    if alone {
        pooled.keys_fresh.set(false);
    }
    // A statement with result columns (`RETURNING`) is stepped to the end,
    // its rows passed over rather than refused; one without is executed.
    let returns_rows = stmt.column_count() > 0;
    let expected = stmt.parameter_count();
    let mut taken = 0;
    for op in ops {
        let Operation::Sql(SqlOp::Execute { sql: next, params }) = op else { break };
        if next != sql || (alone && taken == 1) {
            break;
        }
        in_time(taken, &entered)?;
        check_param_count(expected, params.len())?;
        // The rows changed are SQLite's count either way.
        let changed = if returns_rows {
            let mut rows = stmt.query(params_from_iter(params)).map_err(|e| ran(e, &entered))?;
            while rows.next().map_err(|e| ran(e, &entered))?.is_some() {}
            drop(rows);
            pooled.conn.changes()
        } else {
            execute(&mut stmt, params).map_err(|e| ran(e, &entered))? as u64
        };
        outcomes.push(Outcome::Affected(changed));
        taken += 1;
    }
    Ok(taken)
}

/// Runs the leading commands of `ops` whose statement the host builds the
/// same as the first's. Their table and operation were checked when they
/// were queued; SQLite judges the statement against the caller's grant
/// all the same, as it does the service's own SQL: the engine is the gate
/// for every statement run on a service's behalf (a table of the engine's
/// own, which `"*"` does not cover, is refused there too). Returns how
/// many ran.
fn built(
    pooled: &Pooled,
    ops: &[&Operation],
    caller: &Caller,
    outcomes: &mut Vec<Outcome>,
) -> Result<usize, ChannelError> {
    let Some(first) = ops.first() else { return Ok(0) };
    let (mut stmt, entered) = authorized(pooled, &sql_of(first), caller, true)?;
    let expected = stmt.parameter_count();
    let mut taken = 0;
    for op in ops {
        if taken > 0 && !same_statement(first, op) {
            break;
        }
        in_time(taken, &entered)?;
        let params = params_of(op);
        check_param_count(expected, params.len())?;
        let changed = execute(&mut stmt, params).map_err(|e| ran(e, &entered))?;
        outcomes.push(match op {
            Operation::Sql(SqlOp::Insert { .. }) => Outcome::Inserted(pooled.conn.last_insert_rowid()),
            _ => Outcome::Affected(changed as u64),
        });
        taken += 1;
    }
    Ok(taken)
}

/// Executes `stmt` (which returns no rows) with `params`, their count
/// already checked against its own, and returns the rows it changed. Each
/// parameter is bound at its index, so every binding of the command before
/// is replaced.
fn execute<'p>(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl IntoIterator<Item = &'p Value>,
) -> rusqlite::Result<usize> {
    for (index, value) in params.into_iter().enumerate() {
        stmt.raw_bind_parameter(index + 1, value)?;
    }
    stmt.raw_execute()
}

/// The SQL text of the statement that applies `op`. Identifiers are
/// quoted, and every value is bound as a parameter ([`params_of`]), never
/// spliced into the text. Commands of the other kinds have none:
/// [`apply_run`] refuses them before it builds one.
pub(super) fn sql_of(op: &Operation) -> Cow<'_, str> {
    match op {
        Operation::Sql(SqlOp::Insert { table, row }) => {
            let marks: Vec<String> = (1..=row.values.len()).map(|i| format!("?{i}")).collect();
            let columns: Vec<String> = row.columns.iter().map(|c| quote(c)).collect();
            Cow::Owned(format!("INSERT INTO {} ({}) VALUES ({})", quote(table), columns.join(", "), marks.join(", ")))
        }
        Operation::Sql(SqlOp::Update { table, key, changes }) => {
            let set: Vec<String> = (changes.columns.iter().zip(&changes.values).enumerate())
                .map(|(i, (c, _))| format!("{} = ?{}", quote(c), i + 1))
                .collect();
            let filter = where_clause(key, set.len());
            Cow::Owned(format!("UPDATE {} SET {} WHERE {filter}", quote(table), set.join(", ")))
        }
        Operation::Sql(SqlOp::Delete { table, key }) => {
            Cow::Owned(format!("DELETE FROM {} WHERE {}", quote(table), where_clause(key, 0)))
        }
        // The guest's text as it is: no copy per command.
        Operation::Sql(SqlOp::Execute { sql, .. }) => Cow::Borrowed(sql.as_str()),
        _ => Cow::Borrowed(""),
    }
}

/// The values bound to `op`'s statement, in the order of its `?N` marks:
/// an update's changes, then its key's values that are not null (a null key
/// value is matched with `IS NULL`, not bound).
pub(super) fn params_of(op: &Operation) -> Vec<&Value> {
    // As the text pairs them: a column with its value.
    fn paired(row: &Row) -> impl Iterator<Item = &Value> {
        row.columns.iter().zip(&row.values).map(|(_, v)| v)
    }
    fn key_values(key: &Row) -> impl Iterator<Item = &Value> {
        paired(key).filter(|v| !matches!(v, Value::Null))
    }
    match op {
        Operation::Sql(SqlOp::Insert { row, .. }) => row.values.iter().collect(),
        Operation::Sql(SqlOp::Update { key, changes, .. }) => paired(changes).chain(key_values(key)).collect(),
        Operation::Sql(SqlOp::Delete { key, .. }) => key_values(key).collect(),
        Operation::Sql(SqlOp::Execute { params, .. }) => params.iter().collect(),
        _ => Vec::new(),
    }
}

/// Whether `a` and `b` build the same SQL text ([`sql_of`]), so that one
/// prepared statement runs both.
fn same_statement(a: &Operation, b: &Operation) -> bool {
    match (a, b) {
        (Operation::Sql(SqlOp::Insert { table: t, row: r }), Operation::Sql(SqlOp::Insert { table: u, row: s })) => {
            t == u && r.columns == s.columns && r.values.len() == s.values.len()
        }
        (
            Operation::Sql(SqlOp::Update { table: t, key: k, changes: c }),
            Operation::Sql(SqlOp::Update { table: u, key: l, changes: d }),
        ) => t == u && c.columns == d.columns && c.values.len() == d.values.len() && same_key(k, l),
        (Operation::Sql(SqlOp::Delete { table: t, key: k }), Operation::Sql(SqlOp::Delete { table: u, key: l })) => {
            t == u && same_key(k, l)
        }
        _ => false,
    }
}

/// Whether two keys give the same `WHERE` clause: the same columns, null
/// in the same places.
fn same_key(a: &Row, b: &Row) -> bool {
    a.columns == b.columns
        && a.values.len() == b.values.len()
        && a.values.iter().zip(&b.values).all(|(x, y)| matches!(x, Value::Null) == matches!(y, Value::Null))
}

/// The `WHERE` clause matching `key`, its marks numbered after the `before`
/// values bound ahead of it.
fn where_clause(key: &Row, before: usize) -> String {
    let mut bound = before;
    key.columns
        .iter()
        .zip(&key.values)
        .map(|(c, v)| match v {
            Value::Null => format!("{} IS NULL", quote(c)),
            _ => {
                bound += 1;
                format!("{} = ?{bound}", quote(c))
            }
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Quotes an SQL identifier: `a"b` becomes `"a""b"` (both dialects).
pub(super) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use crate::channels::SqlChannel as _;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::channels::sql::SqliteChannel;
    use crate::channels::{Channel, Transaction};

    fn row(columns: &[&str], values: Vec<Value>) -> Row {
        Row { columns: columns.iter().map(|c| c.to_string()).collect(), values }
    }

    /// Each table's rows: the table, the row id, the values quoted.
    type Left = Vec<(String, i64, String)>;

    /// Commands of every shape: tables, columns, and null keys in
    /// different places.
    fn commands() -> Vec<Operation> {
        let (one, none) = (Value::Integer(1), Value::Null);
        let mut ops = Vec::new();
        for table in ["t", "u"] {
            let t = table.to_string();
            ops.push(Operation::Sql(SqlOp::Insert {
                table: t.clone(),
                row: row(&["a", "b"], vec![one.clone(), none.clone()]),
            }));
            ops.push(Operation::Sql(SqlOp::Insert {
                table: t.clone(),
                row: row(&["a", "b"], vec![none.clone(), one.clone()]),
            }));
            ops.push(Operation::Sql(SqlOp::Insert {
                table: t.clone(),
                row: row(&["b", "a"], vec![one.clone(), one.clone()]),
            }));
            ops.push(Operation::Sql(SqlOp::Insert { table: t.clone(), row: row(&["a"], vec![one.clone()]) }));
            for key in [[one.clone(), none.clone()], [none.clone(), one.clone()], [one.clone(), one.clone()]] {
                ops.push(Operation::Sql(SqlOp::Delete { table: t.clone(), key: row(&["a", "b"], key.to_vec()) }));
                for changes in [row(&["b"], vec![one.clone()]), row(&["a"], vec![none.clone()])] {
                    ops.push(Operation::Sql(SqlOp::Update {
                        table: t.clone(),
                        key: row(&["a", "b"], key.to_vec()),
                        changes,
                    }));
                }
            }
            ops.push(Operation::Sql(SqlOp::Delete { table: t.clone(), key: row(&["a"], vec![one.clone()]) }));
            // Rows left for the comparison to see.
            ops.push(Operation::Sql(SqlOp::Insert { table: t.clone(), row: row(&["b"], vec![Value::Integer(2)]) }));
        }
        ops.push(Operation::Sql(SqlOp::Execute { sql: "DELETE FROM t".into(), params: vec![] }));
        ops
    }

    /// Two commands share a prepared statement exactly when the host would
    /// build them the same text.
    #[test]
    fn same_statement_is_same_text() {
        let ops = commands();
        for a in &ops {
            for b in &ops {
                let (same, text) = (same_statement(a, b), sql_of(a) == sql_of(b));
                // Execute runs are matched by their text in `executes`.
                if !matches!(a, Operation::Sql(SqlOp::Execute { .. })) {
                    assert_eq!(same, text, "{} / {}", sql_of(a), sql_of(b));
                }
            }
        }
    }

    /// Applied in runs, the commands do what they do one by one: the same
    /// outcomes and the same rows. Each command comes twice in a row, so
    /// runs form, and the row ids and counts of every second one depend on
    /// the first.
    #[test]
    fn runs_do_what_single_commands_do() -> Result<(), ChannelError> {
        let ops: Vec<Operation> = commands().into_iter().flat_map(|op| [op.clone(), op]).collect();
        let run: Vec<&Operation> = ops.iter().collect();
        let one_by_one = applied(|tx, host| run.iter().map(|op| tx.apply(op, host)).collect())?;
        let in_runs = applied(|tx, host| {
            let mut outcomes = Vec::new();
            tx.apply_run(&run, host, &mut outcomes)?;
            Ok(outcomes)
        })?;
        assert_eq!(one_by_one, in_runs);
        assert_eq!(in_runs.0.len(), ops.len());
        assert!(in_runs.1.len() > 1, "the commands left rows to compare: {:?}", in_runs.1);
        Ok(())
    }

    /// A `to.execute` counts the rows it changed whether its statement
    /// returns rows (stepped to the end) or not (executed), binds each
    /// command's own parameters, and refuses a wrong parameter count.
    #[test]
    fn executes_count_their_rows_with_or_without_returning() -> Result<(), ChannelError> {
        let exec = |sql: &str, params: Vec<Value>| Operation::Sql(SqlOp::Execute { sql: sql.into(), params });
        let ops = [
            exec("INSERT INTO t (a, b) VALUES (?1, ?2)", vec![Value::Integer(1), Value::Integer(10)]),
            exec("INSERT INTO t (a, b) VALUES (?1, ?2)", vec![Value::Integer(2), Value::Integer(20)]),
            exec("INSERT INTO t (a, b) VALUES (?1, ?2)", vec![Value::Integer(3), Value::Null]),
            exec("UPDATE t SET b = 0 WHERE a >= ?1 RETURNING a", vec![Value::Integer(2)]),
            exec("UPDATE t SET b = 0 WHERE a >= ?1 RETURNING a", vec![Value::Integer(3)]),
            exec("DELETE FROM t WHERE a <= ?1", vec![Value::Integer(1)]),
        ];
        let run: Vec<&Operation> = ops.iter().collect();
        let (outcomes, left) = applied(|tx, host| {
            let mut outcomes = Vec::new();
            tx.apply_run(&run, host, &mut outcomes)?;
            Ok(outcomes)
        })?;
        let counts: Vec<Outcome> = [1, 1, 1, 2, 1, 1].into_iter().map(Outcome::Affected).collect();
        assert_eq!(outcomes, counts);
        let rows = |rows: &[(i64, &str)]| rows.iter().map(|&(id, v)| ("t".to_string(), id, v.to_string())).collect();
        let expected: Left = rows(&[(2, "2,0"), (3, "3,0")]);
        assert_eq!(left, expected);

        let wrong = exec("INSERT INTO t (a) VALUES (?1)", vec![Value::Integer(1), Value::Integer(2)]);
        let refused = applied(|tx, host| {
            let mut outcomes = Vec::new();
            tx.apply_run(&[&ops[0], &wrong], host, &mut outcomes).map(|()| outcomes)
        });
        match refused {
            Err(ChannelError::Invalid(why)) => assert!(why.contains("takes 1 parameter(s) but 2"), "{why}"),
            other => panic!("a wrong parameter count was not refused: {other:?}"),
        }
        Ok(())
    }

    /// A run stops at its deadline even when each of its statements is too
    /// short for the progress handler to be called: no command of a run
    /// whose deadline has passed is applied.
    #[test]
    fn a_run_stops_at_its_deadline() -> Result<(), ChannelError> {
        let insert = Operation::Sql(SqlOp::Insert { table: "t".into(), row: row(&["a"], vec![Value::Integer(1)]) });
        let execute = Operation::Sql(SqlOp::Execute { sql: "INSERT INTO t (a) VALUES (1)".into(), params: vec![] });
        for op in [insert, execute] {
            let run = vec![&op; 1000];
            let late = applied(|tx, _| {
                let mut outcomes = Vec::new();
                let past = Caller::host(Instant::now());
                match tx.apply_run(&run, &past, &mut outcomes) {
                    Err(ChannelError::Timeout) => Ok(outcomes),
                    other => panic!("{}: {other:?} after {} outcome(s)", op.describe(), outcomes.len()),
                }
            })?;
            assert_eq!(late, (Vec::new(), Vec::new()), "{}", op.describe());
        }
        Ok(())
    }

    /// The outcomes of `apply` on a new database with tables `t` and `u`,
    /// and the rows left in them.
    fn applied(
        apply: impl FnOnce(&mut dyn Transaction, &Caller) -> Result<Vec<Outcome>, ChannelError>,
    ) -> Result<(Vec<Outcome>, Left), ChannelError> {
        let dir = tempfile::tempdir().map_err(|e| ChannelError::Unavailable(e.to_string()))?;
        let channel = SqliteChannel::open(&format!("sqlite://{}", dir.path().join("t.db").display()))?;
        let host = Caller::host(Instant::now() + Duration::from_secs(60));
        let mut tx = channel.begin()?;
        for sql in ["CREATE TABLE t (a, b)", "CREATE TABLE u (a, b)"] {
            tx.apply(&Operation::Sql(SqlOp::Execute { sql: sql.into(), params: vec![] }), &host)?;
        }
        let outcomes = apply(tx.as_mut(), &host)?;
        tx.commit()?;
        let sql = "SELECT 't', rowid, quote(a) || ',' || quote(b) FROM t UNION ALL SELECT 'u', rowid, quote(a) || ',' || quote(b) FROM u ORDER BY 1, 2";
        let rows = channel.query(sql, &[], &host, usize::MAX)?.rows.values;
        let rows = rows
            .into_iter()
            .map(|r| match r.as_slice() {
                [Value::Text(t), Value::Integer(id), Value::Text(v)] => (t.clone(), *id, v.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        Ok((outcomes, rows))
    }
}
