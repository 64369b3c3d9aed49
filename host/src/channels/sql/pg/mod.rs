//! The `sql` channel kind on PostgreSQL.
//!
//! - Connections come from an `r2d2` pool, as the user the channel's URL
//!   names (the host's role).
//! - A service's own SQL (its reads, its `execute` commands, its kept reads
//!   run again at save) passes the statement filter ([`filter`]) and then
//!   runs under `SET LOCAL ROLE` to the service's role ([`roles`]), whose
//!   privileges are exactly its grant: PostgreSQL enforces it.
//! - Every such statement runs with `statement_timeout` set to what is left
//!   of its caller's deadline; reads run in `READ ONLY` transactions.
//! - A save is one `SERIALIZABLE` transaction: a concurrent save that
//!   changed what it read, or a deadlock, is a [`ChannelError::Conflict`]
//!   and the scope runs again (`[scopes] retries`).
//! - The commands the host builds (insert, update, delete) run as the host,
//!   as on SQLite: their table and operation were checked against the grant
//!   when they were queued. An insert returns the new row's integer primary
//!   key (`RETURNING`), or 0 for a table without one.

mod filter;
mod migrate;
mod roles;
mod values;

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator as _;
use postgres::types::ToSql;
use postgres::{Client, NoTls};
use r2d2_postgres::PostgresConnectionManager;

use super::{check_param_count, quote};
use crate::bindings::{Rows, Value};
use crate::channels::turns::{Turn, Turns};
use crate::channels::{Caller, Channel, ChannelError, Denial, Reading, Transaction};
use crate::channels::{DIGEST_ROW as ROW, digest_value};
use crate::command::{Kind, Operation, Outcome};
use crate::manifest::ChannelGrant;
use filter::Use;
use values::{Cell, Param};

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;
type Pooled = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

/// Connections a channel opens at most.
const POOL_SIZE: u32 = 16;
/// How long the host waits for a connection at start-up, or for its own
/// statements (migrations, role set-up).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A PostgreSQL database used as a `sql` channel.
pub struct PostgresChannel {
    pool: Pool,
    /// Saves at once: half the pool, so that reads always find a
    /// connection while saves hold theirs (a save's `on-save` hooks read
    /// through another connection).
    turns: Arc<Turns>,
    roles: Arc<roles::Roles>,
    /// Each table's integer primary key column (`None` without one), for an
    /// insert's `RETURNING`.
    keys: Arc<Mutex<HashMap<String, Option<String>>>>,
}

impl PostgresChannel {
    /// Connects to the database a `postgres://` URL names, checking at once
    /// that it answers.
    pub fn open(url: &str) -> Result<Self, ChannelError> {
        let config: postgres::Config =
            url.parse().map_err(|e| ChannelError::Invalid(format!("url {}: {e}", redact(url))))?;
        let manager = PostgresConnectionManager::new(config, NoTls);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            .build(manager)
            .map_err(|e| ChannelError::Unavailable(format!("cannot connect to {}: {e}", redact(url))))?;
        Ok(PostgresChannel {
            pool,
            turns: Turns::new(POOL_SIZE as usize / 2),
            roles: Arc::default(),
            keys: Arc::default(),
        })
    }

    /// A pooled connection, waiting no longer than `deadline`.
    fn take(&self, deadline: Instant) -> Result<Pooled, ChannelError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ChannelError::Timeout);
        }
        self.pool.get_timeout(left).map_err(|e| ChannelError::Unavailable(format!("no PostgreSQL connection: {e}")))
    }

    /// The role `caller` runs its SQL as (`None` for the host), set up on
    /// `client` if needed; `client` must be outside a transaction.
    fn role(&self, client: &mut Client, caller: &Caller) -> Result<Option<String>, ChannelError> {
        let Some((service, grant)) = identity(caller) else { return Ok(None) };
        self.roles.ensure(client, service, grant).map(Some)
    }
}

/// The service a caller is and its grant (an empty one when it has none);
/// `None` for the host.
fn identity(caller: &Caller) -> Option<(&str, &ChannelGrant)> {
    static NOTHING: std::sync::OnceLock<ChannelGrant> = std::sync::OnceLock::new();
    if caller.host {
        return None;
    }
    let grant = caller.grant.as_deref().unwrap_or_else(|| NOTHING.get_or_init(ChannelGrant::default));
    Some((caller.service.as_deref().unwrap_or("unknown"), grant))
}

impl Channel for PostgresChannel {
    fn query(&self, sql: &str, params: &[Value], caller: &Caller, max_bytes: usize) -> Result<Reading, ChannelError> {
        let checked = checked(sql, caller, Use::Read)?;
        let mut client = self.take(caller.deadline)?;
        let role = self.role(&mut client, caller)?;
        let read =
            run_read(&mut client, "BEGIN READ ONLY; ", &checked, role.as_deref(), params, caller, max_bytes, true);
        let ended = client.batch_execute("ROLLBACK").map_err(pg_error);
        if let (Err(ChannelError::Denied(_)), Some(service)) = (&read, caller.service.as_deref()) {
            self.roles.forget(service);
        }
        let read = read?;
        ended?;
        Ok(read)
    }

    fn check(&self, sql: &str, caller: &Caller) -> Result<(), ChannelError> {
        checked(sql, caller, Use::Command).map(drop)
    }

    fn begin(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        self.start(self.turns.one()?)
    }

    /// Every turn of this host at saving on the channel (see
    /// [`crate::channels::turns`]): the last run's save can then lose only
    /// to another process.
    fn hold(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        self.start(self.turns.all()?)
    }

    /// `READ COMMITTED`, outside the turns: the outbox's claims (`FOR
    /// UPDATE SKIP LOCKED`) and marks.
    fn begin_host(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        let mut client = self.take(Instant::now() + CONNECT_TIMEOUT)?;
        client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED").map_err(pg_error)?;
        Ok(Box::new(PostgresTransaction { client: Some(client), channel: self.handle(), writes: true, _turn: None }))
    }

    /// One consistent snapshot that takes no locks.
    fn snapshot(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        let mut client = self.take(Instant::now() + CONNECT_TIMEOUT)?;
        client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").map_err(pg_error)?;
        Ok(Box::new(PostgresTransaction { client: Some(client), channel: self.handle(), writes: false, _turn: None }))
    }

    fn dialect(&self) -> &'static str {
        "postgres"
    }

    fn migrate(&self, migrations: &[(String, String)]) -> Result<Vec<(String, bool)>, ChannelError> {
        let mut client = self.take(Instant::now() + CONNECT_TIMEOUT)?;
        let report = migrate::apply(&mut client, migrations);
        self.roles.schema_changed();
        if let Ok(mut keys) = self.keys.lock() {
            keys.clear();
        }
        report
    }
}

impl PostgresChannel {
    /// A serializable transaction for a save, in `turn`.
    fn start(&self, turn: Turn) -> Result<Box<dyn Transaction>, ChannelError> {
        let mut client = self.take(Instant::now() + CONNECT_TIMEOUT)?;
        client.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE").map_err(pg_error)?;
        Ok(Box::new(PostgresTransaction {
            client: Some(client),
            channel: self.handle(),
            writes: true,
            _turn: Some(turn),
        }))
    }

    /// What a transaction needs of its channel.
    fn handle(&self) -> Handle {
        Handle { roles: Arc::clone(&self.roles), keys: Arc::clone(&self.keys), pool: self.pool.clone() }
    }
}

/// The parts of a channel a transaction uses.
struct Handle {
    roles: Arc<roles::Roles>,
    keys: Arc<Mutex<HashMap<String, Option<String>>>>,
    pool: Pool,
}

/// A service's statement through the filter; the host's own as it is.
fn checked(sql: &str, caller: &Caller, usage: Use) -> Result<filter::Checked, ChannelError> {
    if caller.host {
        let (sql, _) = filter::rewrite_parameters(sql)?;
        return Ok(filter::Checked { sql, ..Default::default() });
    }
    filter::check(sql, caller.grant.as_deref(), usage)
}

/// Sets the role and the statement timeout (what is left of the caller's
/// deadline) for the next statement of the transaction, in one round trip
/// with `begin` (`BEGIN …;` to open it here, or empty).
fn enter(client: &mut Client, begin: &str, role: Option<&str>, caller: &Caller) -> Result<(), ChannelError> {
    if caller.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
        return Err(ChannelError::Timeout);
    }
    let left = caller.deadline.saturating_duration_since(Instant::now()).as_millis();
    if left == 0 {
        return Err(ChannelError::Timeout);
    }
    let role = role.unwrap_or("NONE");
    client
        .batch_execute(&format!("{begin}SET LOCAL ROLE {role}; SET LOCAL statement_timeout = {left}"))
        .map_err(pg_error)
}

/// Runs a checked read in the open transaction as `role`; see
/// [`crate::channels::Channel::query`]. `keep` false only digests.
#[expect(clippy::too_many_arguments, reason = "one read's parts, passed as they are")]
fn run_read(
    client: &mut Client,
    begin: &str,
    checked: &filter::Checked,
    role: Option<&str>,
    params: &[Value],
    caller: &Caller,
    max_bytes: usize,
    keep: bool,
) -> Result<Reading, ChannelError> {
    enter(client, begin, role, caller)?;
    let stmt = client.prepare(&checked.sql).map_err(pg_error)?;
    check_param_count(stmt.params().len(), params.len())?;
    let columns: Vec<String> = stmt.columns().iter().map(|c| c.name().to_string()).collect();
    let mut digest = crate::channels::digester();
    columns.hash(&mut digest);
    let mut bytes = columns.iter().map(String::len).sum::<usize>();
    let bound: Vec<Param<'_>> = params.iter().map(Param).collect();
    let mut rows = client.query_raw(&stmt, bound.iter().map(|p| p as &dyn ToSql)).map_err(pg_error)?;
    let mut values = Vec::new();
    while let Some(row) = rows.next().map_err(pg_error)? {
        let mut out = Vec::with_capacity(if keep { columns.len() } else { 0 });
        bytes += 8;
        digest.write_u8(ROW);
        for (i, column) in columns.iter().enumerate() {
            let Cell(value) = row.try_get(i).map_err(|e| ChannelError::Invalid(format!("column {column}: {e}")))?;
            bytes += digest_value(&mut digest, &value);
            if keep {
                out.push(value);
            }
        }
        if bytes > max_bytes {
            return Err(ChannelError::TooLarge { bytes });
        }
        if keep {
            values.push(out);
        }
    }
    Ok(Reading {
        rows: Rows { columns, values },
        digest: digest.finish(),
        tables: checked.reads.clone(),
        volatile: checked.volatile,
        recheck: None,
    })
}

/// One save's transaction: `SERIALIZABLE`, or a read-only snapshot.
struct PostgresTransaction {
    client: Option<Pooled>,
    channel: Handle,
    writes: bool,
    /// The save's turn (`None` for a snapshot), given back after the
    /// commit or rollback: field order is drop order.
    _turn: Option<Turn>,
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
        let rows = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_index i \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = to_regclass($1) AND i.indisprimary",
                &[&format!("public.{}", quote(table))],
            )
            .map_err(pg_error)?;
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
    fn apply(&mut self, op: &Operation, caller: &Caller) -> Result<Outcome, ChannelError> {
        if op.kind() != Kind::Sql {
            return Err(crate::channels::wrong_kind(Kind::Sql, op.kind(), &op.describe()));
        }
        if !self.writes {
            return Err(ChannelError::Invalid("a snapshot applies no command".into()));
        }
        if let Operation::Execute { sql, params } = op {
            let checked = checked(sql, caller, Use::Command)?;
            let role = self.role(caller)?;
            let client = self.client()?;
            enter(client, "", role.as_deref(), caller)?;
            let stmt = client.prepare(&checked.sql).map_err(pg_error)?;
            check_param_count(stmt.params().len(), params.len())?;
            let bound: Vec<Param<'_>> = params.iter().map(Param).collect();
            let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let changed = client.execute(&stmt, &refs).map_err(pg_error);
            // A table granted since the role was set up (made by another
            // service's raw SQL): set the role up again on its next use.
            if let (Err(ChannelError::Denied(_)), Some(service)) = (&changed, caller.service.as_deref()) {
                self.channel.roles.forget(service);
            }
            return Ok(Outcome::Affected(changed?));
        }
        let key = match op {
            Operation::Insert { table, .. } => self.key_of(table)?,
            _ => None,
        };
        let (sql, params) = statement(op, key.as_deref());
        let client = self.client()?;
        enter(client, "", None, caller)?;
        let bound: Vec<Param<'_>> = params.into_iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        if let Some(key) = key {
            let row = client.query_one(sql.as_str(), &refs).map_err(pg_error)?;
            let Cell(id) = row.try_get(0).map_err(|e| ChannelError::Invalid(format!("column {key}: {e}")))?;
            return Ok(Outcome::Inserted(if let Value::Integer(id) = id { id } else { 0 }));
        }
        let changed = client.execute(sql.as_str(), &refs).map_err(pg_error)?;
        Ok(match op {
            Operation::Insert { .. } => Outcome::Inserted(0),
            _ => Outcome::Affected(changed),
        })
    }

    fn digest(&mut self, sql: &str, params: &[Value], caller: &Caller, max_bytes: usize) -> Result<u64, ChannelError> {
        let checked = checked(sql, caller, Use::Read)?;
        let role = self.role(caller)?;
        let client = self.client()?;
        Ok(run_read(client, "", &checked, role.as_deref(), params, caller, max_bytes, false)?.digest)
    }

    fn rows(&mut self, sql: &str, params: &[Value], caller: &Caller) -> Result<Rows, ChannelError> {
        let checked = checked(sql, caller, Use::Read)?;
        let role = self.role(caller)?;
        let client = self.client()?;
        Ok(run_read(client, "", &checked, role.as_deref(), params, caller, usize::MAX, true)?.rows)
    }

    fn commit(mut self: Box<Self>) -> Result<(), ChannelError> {
        let mut client =
            self.client.take().ok_or_else(|| ChannelError::Unavailable("transaction already finished".into()))?;
        client.batch_execute("COMMIT").map_err(pg_error)
    }
}

impl Drop for PostgresTransaction {
    fn drop(&mut self) {
        // A connection that failed to roll back goes back to the pool too
        // (r2d2 cannot be told otherwise); the pool checks every connection
        // before handing it out again, and drops a broken one.
        if let Some(mut client) = self.client.take() {
            let _ = client.batch_execute("ROLLBACK");
        }
    }
}

/// The SQL and parameters of a command the host builds: identifiers
/// quoted, values bound; an insert returns `key` when the table has one.
fn statement<'a>(op: &'a Operation, key: Option<&str>) -> (String, Vec<&'a Value>) {
    let mut params: Vec<&Value> = Vec::new();
    let sql = match op {
        Operation::Insert { table, row } => {
            let marks: Vec<String> = row.values.iter().map(|v| mark(&mut params, v)).collect();
            let returning = key.map(|k| format!(" RETURNING {}", quote(k))).unwrap_or_default();
            let columns: Vec<String> = row.columns.iter().map(|c| quote(c)).collect();
            format!("INSERT INTO {} ({}) VALUES ({}){returning}", quote(table), columns.join(", "), marks.join(", "))
        }
        Operation::Update { table, key, changes } => {
            let set: Vec<String> = changes
                .columns
                .iter()
                .zip(&changes.values)
                .map(|(c, v)| format!("{} = {}", quote(c), mark(&mut params, v)))
                .collect();
            let filter = where_clause(key, &mut params);
            format!("UPDATE {} SET {} WHERE {filter}", quote(table), set.join(", "))
        }
        Operation::Delete { table, key } => {
            let filter = where_clause(key, &mut params);
            format!("DELETE FROM {} WHERE {filter}", quote(table))
        }
        Operation::Execute { sql, params: p } => {
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

/// What a PostgreSQL failure means (by its SQLSTATE class): a conflict
/// with a concurrent transaction, the deadline, a refusal of the role, a
/// constraint of the data, a server that is unreachable or failing, or
/// else a statement that cannot run.
fn pg_error(e: postgres::Error) -> ChannelError {
    let Some(code) = e.code() else {
        return ChannelError::Unavailable(format!("PostgreSQL: {e}"));
    };
    let message = e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_string());
    match code.code() {
        "40001" | "40P01" => ChannelError::Conflict(format!("PostgreSQL: {message}")),
        "57014" => ChannelError::Timeout,
        "42501" => ChannelError::Denied(Denial::Never(format!("do what PostgreSQL refused its role ({message})"))),
        "25006" => ChannelError::Invalid("a read must not write; queue writes with `to` so they apply at save".into()),
        c if c.starts_with("23") => ChannelError::Constraint(message),
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57") || c.starts_with("58") => {
            ChannelError::Unavailable(format!("PostgreSQL: {message}"))
        }
        _ => ChannelError::Invalid(message),
    }
}

/// The URL without its password, for errors.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
