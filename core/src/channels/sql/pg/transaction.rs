//! One save's transaction on PostgreSQL, and the statements of the
//! commands the host builds.

use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;

use super::filter::Use;
use super::values::{Cell, Param};
use super::{Handle, LOST, Pooled, checked, conn, identity, lost, quote, run_read};
use crate::bindings::{Rows, Value};
use crate::channels::ops::{Operation, Outcome};
use crate::channels::sql::check_param_count;
use crate::channels::sql::ops::SqlOp;
use crate::channels::turns::Turn;
use crate::channels::{Caller, ChannelError, Claim, Transaction};

/// One save's transaction: `SERIALIZABLE`, or a read-only snapshot.
pub(super) struct PostgresTransaction {
    pub(super) client: Option<Pooled>,
    pub(super) channel: Handle,
    pub(super) writes: bool,
    /// The save's turn (`None` for a snapshot), given back after the
    /// commit or rollback: field order is drop order.
    pub(super) _turn: Option<Turn>,
}

impl PostgresTransaction {
    fn client(&mut self) -> Result<&mut Pooled, ChannelError> {
        self.client.as_mut().ok_or_else(|| ChannelError::Unavailable("transaction already finished".into()))
    }

    /// The role of `caller` inside the transaction. Setting a role up needs
    /// a connection outside any transaction: another one from the pool.
    fn role(&mut self, caller: &Caller) -> Result<Option<String>, ChannelError> {
        let Some((service, grant)) = identity(caller) else { return Ok(None) };
        if let Some(role) = self.channel.roles.cached(service, grant) {
            return Ok(Some(role));
        }
        let left = caller.deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let mut other = self
            .channel
            .pool
            .get_timeout(left)
            .map_err(|e| ChannelError::Unavailable(format!("no PostgreSQL connection: {e}")))?;
        self.channel.roles.ensure(&mut other, service, grant).map(Some)
    }

    /// The integer primary key column of `table`, looked up once.
    fn key_of(&mut self, table: &str) -> Result<Option<String>, ChannelError> {
        if let Some(known) = self.channel.keys.lock().ok().and_then(|k| k.get(table).cloned()) {
            return Ok(known);
        }
        let client = self.client()?;
        client.host_wait(conn::HOST_WAIT);
        let rows = client.query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = to_regclass($1) AND i.indisprimary",
            &[&format!("public.{}", quote(table))],
        )?;
        let key = match rows.as_slice() {
            [row] if matches!(row.get::<_, String>(1).as_str(), "bigint" | "integer" | "smallint") => {
                Some(row.get::<_, String>(0))
            }
            _ => None,
        };
        if let Ok(mut keys) = self.channel.keys.lock() {
            keys.insert(table.to_string(), key.clone());
        }
        Ok(key)
    }
}

impl Transaction for PostgresTransaction {
    /// The claim's keys, shared ([`super::claims`]), sent with the held
    /// `BEGIN`.
    fn share(&mut self, claim: &Claim) -> Result<(), ChannelError> {
        let Some(lock) = super::claims::for_save(claim) else { return Ok(()) };
        let client = self.client()?;
        if client.begin_with(&lock) {
            return Ok(());
        }
        client.host_wait(conn::HOST_WAIT);
        client.batch_execute(&lock)
    }

    fn apply(&mut self, op: &Operation, caller: &Caller) -> Result<Outcome, ChannelError> {
        if op.kind() != crate::channels::sql::KIND {
            return Err(crate::channels::wrong_kind(crate::channels::sql::KIND, op.kind(), &op.describe()));
        }
        if !self.writes {
            return Err(ChannelError::Invalid("a snapshot applies no command".into()));
        }
        if let Operation::Sql(SqlOp::Execute { sql, params }) = op {
            let checked = checked(sql, caller, Use::Command)?;
            let role = self.role(caller)?;
            let generation = self.channel.generation();
            let client = self.client()?;
            let changed = execute(client, generation, &checked.sql, params.iter(), role.as_deref(), caller);
            if let Err(e) = &changed {
                self.channel.failed(e, caller);
            } else if checked.schema {
                self.channel.schema_changed();
            }
            return Ok(Outcome::Affected(changed?));
        }
        // The host builds the statement; it runs under the service's role
        // all the same, so PostgreSQL is its gate as for the service's own
        // SQL ([`super::roles`]).
        let role = self.role(caller)?;
        let key = match op {
            Operation::Sql(SqlOp::Insert { table, .. }) => self.key_of(table)?,
            _ => None,
        };
        let (sql, params) = statement(op, key.as_deref());
        let generation = self.channel.generation();
        let client = self.client()?;
        if let Some(key) = key {
            let inserted = returning(client, generation, &sql, params, role.as_deref(), caller);
            if let Err(e) = &inserted {
                self.channel.failed(e, caller);
            }
            let Cell(id) = inserted?.try_get(0).map_err(|e| ChannelError::Invalid(format!("column {key}: {e}")))?;
            return Ok(Outcome::Inserted(if let Value::Integer(id) = id { id } else { 0 }));
        }
        let changed = execute(client, generation, &sql, params.into_iter(), role.as_deref(), caller);
        if let Err(e) = &changed {
            self.channel.failed(e, caller);
        }
        let changed = changed?;
        Ok(match op {
            Operation::Sql(SqlOp::Insert { .. }) => Outcome::Inserted(0),
            _ => Outcome::Affected(changed),
        })
    }

    fn digest(&mut self, sql: &str, params: &[Value], caller: &Caller, max_bytes: usize) -> Result<u64, ChannelError> {
        let checked = checked(sql, caller, Use::Read)?;
        let role = self.role(caller)?;
        let generation = self.channel.generation();
        let client = self.client()?;
        let read = run_read(client, generation, &checked, role.as_deref(), params, caller, max_bytes, false);
        if let Err(e) = &read {
            self.channel.failed(e, caller);
        }
        Ok(read?.digest)
    }

    fn rows(&mut self, sql: &str, params: &[Value], caller: &Caller) -> Result<Rows, ChannelError> {
        let checked = checked(sql, caller, Use::Read)?;
        let role = self.role(caller)?;
        let generation = self.channel.generation();
        let client = self.client()?;
        let read = run_read(client, generation, &checked, role.as_deref(), params, caller, usize::MAX, true);
        if let Err(e) = &read {
            self.channel.failed(e, caller);
        }
        Ok(read?.rows)
    }

    /// Checks the constraints the schema defers to the commit (`DEFERRABLE
    /// INITIALLY DEFERRED` foreign keys) now, before any channel of the
    /// save commits: a violation then applies nothing anywhere, where at
    /// `COMMIT` it would come after a Redis channel had committed. What
    /// can still refuse the `COMMIT` itself is a serialization failure
    /// (docs/channels.md, Commit order).
    fn prepare(&mut self) -> Result<(), ChannelError> {
        let client = self.client()?;
        if client.untouched() {
            return Ok(());
        }
        client.host_wait(conn::HOST_WAIT);
        client.batch_execute("SET CONSTRAINTS ALL IMMEDIATE")
    }

    /// A `COMMIT` the server did not answer (it stopped answering, or the
    /// connection broke while it was on its way) may have applied or not:
    /// that is [`ChannelError::Unknown`], never "nothing applied".
    fn commit(mut self: Box<Self>) -> Result<(), ChannelError> {
        let mut client =
            self.client.take().ok_or_else(|| ChannelError::Unavailable("transaction already finished".into()))?;
        if client.is_closed() {
            return Err(ChannelError::Unavailable(format!("PostgreSQL: {LOST} before the commit")));
        }
        match client.end("COMMIT") {
            Err(e) if client.stalled() || lost(&e) => Err(ChannelError::Unknown(e.to_string())),
            ended => ended,
        }
    }
}

impl Drop for PostgresTransaction {
    fn drop(&mut self) {
        // A connection that failed to roll back goes back to the pool too
        // (r2d2 cannot be told otherwise); the pool checks every connection
        // before handing it out again, and drops a broken one.
        if let Some(mut client) = self.client.take() {
            let _ = client.end("ROLLBACK");
        }
    }
}

/// Runs `sql` with `params` in the open transaction as `role`: the number
/// of rows it changed.
fn execute<'a>(
    client: &mut conn::Conn,
    generation: u64,
    sql: &str,
    params: impl Iterator<Item = &'a Value>,
    role: Option<&str>,
    caller: &Caller,
) -> Result<u64, ChannelError> {
    client.enter(role, caller)?;
    let stmt = client.prepared(sql, generation)?;
    let bound: Vec<Param<'_>> = params.map(Param).collect();
    check_param_count(stmt.params().len(), bound.len())?;
    let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    client.execute(&stmt, &refs)
}

/// Runs the host's insert `sql` (`… RETURNING key`) in the open
/// transaction as `role`: the row it returned.
fn returning(
    client: &mut conn::Conn,
    generation: u64,
    sql: &str,
    params: Vec<&Value>,
    role: Option<&str>,
    caller: &Caller,
) -> Result<tokio_postgres::Row, ChannelError> {
    client.enter(role, caller)?;
    let stmt = client.prepared(sql, generation)?;
    let bound: Vec<Param<'_>> = params.into_iter().map(Param).collect();
    let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    client.query_one(&stmt, &refs)
}

/// The SQL and parameters of a command the host builds: identifiers
/// quoted, the table in schema `public` (an unqualified name could resolve
/// to a catalog of `pg_catalog`, which the search path puts first), values
/// bound; an insert returns `key` when the table has one.
fn statement<'a>(op: &'a Operation, key: Option<&str>) -> (String, Vec<&'a Value>) {
    let mut params: Vec<&Value> = Vec::new();
    let sql = match op {
        Operation::Sql(SqlOp::Insert { table, row }) => {
            let marks: Vec<String> = row.values.iter().map(|v| mark(&mut params, v)).collect();
            let returning = key.map(|k| format!(" RETURNING {}", quote(k))).unwrap_or_default();
            let columns: Vec<String> = row.columns.iter().map(|c| quote(c)).collect();
            format!(
                "INSERT INTO public.{} ({}) VALUES ({}){returning}",
                quote(table),
                columns.join(", "),
                marks.join(", ")
            )
        }
        Operation::Sql(SqlOp::Update { table, key, changes }) => {
            let set: Vec<String> = changes
                .columns
                .iter()
                .zip(&changes.values)
                .map(|(c, v)| format!("{} = {}", quote(c), mark(&mut params, v)))
                .collect();
            let filter = where_clause(key, &mut params);
            format!("UPDATE public.{} SET {} WHERE {filter}", quote(table), set.join(", "))
        }
        Operation::Sql(SqlOp::Delete { table, key }) => {
            let filter = where_clause(key, &mut params);
            format!("DELETE FROM public.{} WHERE {filter}", quote(table))
        }
        Operation::Sql(SqlOp::Execute { sql, params: p }) => {
            params.extend(p.iter());
            sql.clone()
        }
        // Commands of the other kinds: refused by `apply` before it builds
        // a statement.
        _ => String::new(),
    };
    (sql, params)
}

/// Binds `value` as the next parameter and returns its mark, `$N`.
fn mark<'a>(params: &mut Vec<&'a Value>, value: &'a Value) -> String {
    params.push(value);
    format!("${}", params.len())
}

/// `"a" = $1 AND "b" IS NULL` for a key row.
fn where_clause<'a>(key: &'a crate::bindings::Row, params: &mut Vec<&'a Value>) -> String {
    key.columns
        .iter()
        .zip(&key.values)
        .map(|(c, v)| match v {
            Value::Null => format!("{} IS NULL", quote(c)),
            v => format!("{} = {}", quote(c), mark(params, v)),
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}
