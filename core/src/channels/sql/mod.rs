//! The `sql` channel kind on SQLite: reads, transactions for save, and
//! migrations. Connections are pooled per channel and reused across scopes.
//! Every connection carries a [`guard::Gate`]: SQLite itself enforces a
//! service's grants on its raw SQL and interrupts a statement at its
//! caller's deadline.

pub mod answers;
mod apply;
#[cfg(test)]
mod differential;
mod functions;
pub mod grant;
mod guard;
mod implied;
pub mod migrate;
pub mod ops;
mod pg;
mod read;
mod statements;
pub mod ticks;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::limits::Limit;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};

use super::turns::{Turn, Turns, WAIT as BUSY_TIMEOUT};
use super::{Caller, Channel, ChannelError, Denial, Reading, SqlChannel, Transaction};
use crate::bindings::Value;
use crate::channels::ops::{Kind, Operation, Outcome};
use crate::channels::sql::grant::Access;
use crate::channels::sql::ops::SqlOp;
use apply::quote;
use guard::{Gate, Rules};
use implied::Keys;
use read::read;
use statements::{Prepared, Verdicts};

pub use pg::PostgresChannel;

/// The `sql` kind.
pub const KIND: Kind = Kind::named("sql");

/// Checks, as it is queued, that `caller` may queue `op` on a `sql`
/// channel (both engines): `insert`, `update` and `delete` by the table
/// grant, since the host builds their statements and the table and
/// operation are all they do; `execute` by the engine, which prepares the
/// service's own statement under its grant ([`SqlChannel::check`]).
fn check_command(channel: &dyn SqlChannel, op: &Operation, caller: &Caller) -> Result<(), ChannelError> {
    let Operation::Sql(op) = op else { return Err(super::wrong_kind(KIND, op.kind(), &op.describe())) };
    if let SqlOp::Execute { sql, .. } = op {
        return channel.check(sql, caller);
    }
    check_table_grant(op, caller).map_err(ChannelError::Denied)
}

/// Whether `caller`'s grant allows the table and operation of an
/// `insert`, `update` or `delete` (an `execute` is the engine's to judge).
pub fn check_table_grant(op: &SqlOp, caller: &Caller) -> Result<(), Denial> {
    let (access, table) = match op {
        SqlOp::Insert { table, .. } => (Access::Insert, table),
        SqlOp::Update { table, .. } => (Access::Update, table),
        SqlOp::Delete { table, .. } => (Access::Delete, table),
        SqlOp::Execute { .. } => return Ok(()),
    };
    // `Tables::allows` compares without regard to case.
    if caller.host || caller.grant.as_deref().is_some_and(|g| g.sql.tables(access).allows(table)) {
        return Ok(());
    }
    Err(Denial::Table { access, table: table.to_lowercase() })
}

/// Idle connections kept per channel.
const POOL_SIZE: usize = 8;
/// The longest string or blob SQLite builds on any connection: a bound on
/// what one `zeroblob`, `randomblob` or `replace` can allocate. No larger value
/// could be read back within the host's cap on result bytes.
const MAX_VALUE_BYTES: i32 = 64 << 20;

/// The longest SQL text a service's statement may have. SQLite prepares a
/// statement in time that grows faster than its length for some shapes (a
/// `WITH` of thousands of names takes seconds at 1 MiB), and the deadline
/// cannot interrupt a prepare, so the text is capped before SQLite sees it.
const MAX_SQL_BYTES: usize = 64 << 10;

/// A SQLite database file used as a `sql` channel.
pub struct SqliteChannel {
    path: PathBuf,
    pool: Arc<Mutex<Vec<Pooled>>>,
    /// One save at a time within this process: SQLite has one writer.
    turns: Arc<Turns>,
}

/// A connection, the gate installed on it, and the foreign keys of the
/// schema it last saw (with that schema's version).
struct Pooled {
    conn: Connection,
    gate: Gate,
    keys: RefCell<Option<(i64, Arc<Keys>)>>,
    /// Whether `keys` is known to hold inside the transaction open now:
    /// only this connection's own statements change the schema inside a
    /// transaction, so the version is read once per transaction and again
    /// after a statement that changed the schema.
    keys_fresh: std::cell::Cell<bool>,
    /// Service statements judged on this connection ([`statements`]).
    verdicts: RefCell<Verdicts>,
}

impl Pooled {
    /// The schema's foreign keys, read again whenever the schema changed.
    fn keys(&self) -> Result<Arc<Keys>, ChannelError> {
        let in_transaction = !self.conn.is_autocommit();
        if in_transaction
            && self.keys_fresh.get()
            && let Some((_, keys)) = self.keys.borrow().as_ref()
        {
            return Ok(Arc::clone(keys));
        }
        self.keys_fresh.set(in_transaction);
        let version: i64 = self
            .conn
            .prepare_cached("PRAGMA schema_version")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(unavailable)?;
        let mut cached = self.keys.borrow_mut();
        if let Some((seen, keys)) = cached.as_ref()
            && *seen == version
        {
            return Ok(Arc::clone(keys));
        }
        let keys = Arc::new(Keys::load(&self.conn).map_err(unavailable)?);
        *cached = Some((version, Arc::clone(&keys)));
        Ok(keys)
    }
}

impl SqliteChannel {
    /// Opens (creating if needed) the database named by a `sqlite://PATH` url.
    pub fn open(url: &str) -> Result<Self, ChannelError> {
        let path = url.strip_prefix("sqlite://").ok_or_else(|| {
            ChannelError::Invalid(format!(
                "url {url:?} is not supported; use sqlite://PATH (e.g. sqlite://data/app.db) or postgres://USER@HOST:PORT/DATABASE"
            ))
        })?;
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| ChannelError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let channel = SqliteChannel { path, pool: Arc::default(), turns: Turns::new(1) };
        // Open one connection now, so a bad path fails at start-up, not on
        // the first request; it also switches the file to WAL once.
        let pooled = channel.connect()?;
        pooled.conn.pragma_update(None, "journal_mode", "wal").map_err(unavailable)?;
        give_back(&channel.pool, pooled);
        Ok(channel)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn connect(&self) -> Result<Pooled, ChannelError> {
        let conn = Connection::open(&self.path)
            .map_err(|e| ChannelError::Unavailable(format!("cannot open {}: {e}", self.path.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
        conn.pragma_update(None, "foreign_keys", "on").map_err(unavailable)?;
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES).map_err(unavailable)?;
        conn.set_prepared_statement_cache_capacity(statements::STATEMENT_CACHE);
        let gate = Gate::install(&conn);
        Ok(Pooled {
            conn,
            gate,
            keys: RefCell::default(),
            keys_fresh: std::cell::Cell::new(false),
            verdicts: RefCell::default(),
        })
    }

    fn take(&self) -> Result<Pooled, ChannelError> {
        let pooled = self.pool.lock().ok().and_then(|mut pool| pool.pop());
        match pooled {
            Some(conn) => {
                conn.keys_fresh.set(false);
                Ok(conn)
            }
            None => self.connect(),
        }
    }
}

/// A `sql` channel's section of `sluice.toml`.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SqlConfig {
    /// Where the database is: `sqlite://data/app.db`, or
    /// `postgres://user@host:5432/db` (`postgresql://` too).
    pub url: String,
}

impl super::KindConfig for SqlConfig {
    /// A relative SQLite file is taken relative to `base`.
    fn resolve(&mut self, base: &Path) {
        if let Some(rest) = self.url.strip_prefix("sqlite://") {
            let file = PathBuf::from(rest);
            if file.is_relative() {
                self.url = format!("sqlite://{}", base.join(file).display());
            }
        }
    }

    /// Opens the database, on PostgreSQL or SQLite as the URL says.
    fn open(&self, _: &mut super::Opening<'_>) -> Result<Arc<dyn Channel>, ChannelError> {
        let url = &self.url;
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Arc::new(PostgresChannel::open(url)?));
        }
        Ok(Arc::new(SqliteChannel::open(url)?))
    }
}

impl SqlChannel for SqliteChannel {
    /// See [`SqlChannel::migrate`] and [`migrate::apply`].
    fn migrate(&self, migrations: &[(String, String)]) -> Result<Vec<(String, bool)>, ChannelError> {
        let mut pooled = self.take()?;
        let report = migrate::apply(&mut pooled.conn, migrations)?;
        give_back(&self.pool, pooled);
        Ok(report)
    }

    fn dialect(&self) -> &'static str {
        "sqlite"
    }

    fn query(&self, sql: &str, params: &[Value], caller: &Caller, max_bytes: usize) -> Result<Reading, ChannelError> {
        let pooled = self.take()?;
        let rows = read(&pooled, sql, params, caller, max_bytes, true);
        give_back(&self.pool, pooled);
        rows
    }

    fn check(&self, sql: &str, caller: &Caller) -> Result<(), ChannelError> {
        let pooled = self.take()?;
        let checked = authorized(&pooled, sql, caller, true).map(drop);
        give_back(&self.pool, pooled);
        checked
    }
}

impl Channel for SqliteChannel {
    fn kind(&self) -> Kind {
        crate::channels::sql::KIND
    }

    fn sql(&self) -> Option<&dyn SqlChannel> {
        Some(self)
    }

    fn check_command(&self, op: &Operation, caller: &Caller) -> Result<(), ChannelError> {
        check_command(self, op, caller)
    }

    fn begin(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        let turn = self.turns.one()?;
        let pooled = self.take()?;
        // IMMEDIATE takes the write lock now, so a save never fails halfway
        // through because another writer got there first.
        pooled.conn.execute_batch("BEGIN IMMEDIATE").map_err(unavailable)?;
        Ok(Box::new(SqliteTransaction { pooled: Some(pooled), pool: Arc::clone(&self.pool), turn: Some(turn) }))
    }

    /// A deferred transaction: its first read fixes the WAL snapshot every
    /// later read sees, and it takes no write lock, so it waits for no save.
    fn snapshot(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        let pooled = self.take()?;
        pooled.conn.execute_batch("BEGIN DEFERRED").map_err(unavailable)?;
        Ok(Box::new(SqliteTransaction { pooled: Some(pooled), pool: Arc::clone(&self.pool), turn: None }))
    }
}

/// Prepares a service's `sql` under its grant (`writes` false for a read)
/// and returns the statement with the gate still applied, or why SQLite
/// refused it. An insert or update that would delete rows (`OR REPLACE`)
/// needs the delete grant on the tables it writes. A statement this
/// connection judged before under the same rules is taken from the
/// statement cache without being judged again ([`statements`]); the host's
/// own statements are always cached.
fn authorized<'c>(
    pooled: &'c Pooled,
    sql: &str,
    caller: &Caller,
    writes: bool,
) -> Result<(Prepared<'c>, guard::Entered<'c>), ChannelError> {
    if caller.host {
        let entered = pooled.gate.enter(None, Some(caller.deadline), caller.cancel.clone());
        let stmt = pooled.conn.prepare_cached(sql).map_err(prepare_failed)?;
        return Ok((Prepared::Cached(stmt), entered));
    }
    if sql.len() > MAX_SQL_BYTES {
        return Err(ChannelError::Invalid(format!(
            "the statement is {} bytes of SQL; at most {MAX_SQL_BYTES} are accepted (bind values as parameters)",
            sql.len()
        )));
    }
    // Foreign keys are checked only when a statement writes; a read needs
    // no schema lookup (which costs a read of the database header) unless
    // SQLite reports a read it names no database for.
    let mut keys = if writes { Some(pooled.keys()?) } else { None };
    let kept = pooled.verdicts.borrow().find(sql, &caller.grant, writes, &keys).cloned();
    if let Some(judged) = kept {
        let rules = Rules { grant: caller.grant.clone(), writes, keys: keys.clone().unwrap_or_else(no_keys) };
        let entered = pooled.gate.enter_judged(&rules, Some(caller.deadline), caller.cancel.clone(), &judged);
        return match pooled.conn.prepare_cached(sql) {
            Ok(stmt) => Ok((Prepared::Cached(stmt), entered)),
            Err(e) => Err(entered.denial().map_or_else(|| prepare_failed(e), ChannelError::Denied)),
        };
    }
    // Reads are kept without the keys they may have loaded below.
    let verdict_keys = keys.clone();
    loop {
        let rules = Rules { grant: caller.grant.clone(), writes, keys: keys.clone().unwrap_or_else(no_keys) };
        let entered = pooled.gate.enter(Some(&rules), Some(caller.deadline), caller.cancel.clone());
        let stmt = match pooled.conn.prepare(sql) {
            Ok(stmt) => stmt,
            Err(e) => return Err(entered.denial().map_or_else(|| prepare_failed(e), ChannelError::Denied)),
        };
        // `SELECT count(*) FROM t` reads no column: SQLite names no
        // database, and only the schema tells the table from a CTE. The
        // schema is read with the gate open, then the statement prepared
        // again.
        if entered.unresolved() {
            let Some(schema) = &keys else {
                drop((stmt, entered));
                keys = Some(pooled.keys()?);
                continue;
            };
            entered.resolve(&schema.tables);
        }
        entered.judge().map_err(ChannelError::Denied)?;
        let (stmt, entered) = finish_write_check(pooled, sql, caller, writes, stmt, entered)?;
        pooled.verdicts.borrow_mut().keep(sql, &caller.grant, writes, &verdict_keys, entered.judged());
        return Ok((Prepared::Fresh(stmt), entered));
    }
}

/// The foreign keys a read is judged with: none (reads are not checked
/// against them), shared rather than made for every read.
fn no_keys() -> Arc<Keys> {
    static NONE: std::sync::LazyLock<Arc<Keys>> = std::sync::LazyLock::new(Arc::default);
    Arc::clone(&NONE)
}

/// Why SQLite would not prepare a statement, when no grant refused it.
fn prepare_failed(e: rusqlite::Error) -> ChannelError {
    match e {
        rusqlite::Error::MultipleStatement => {
            ChannelError::Invalid("the sql holds more than one statement; pass one per call".into())
        }
        e => invalid(e),
    }
}

/// The rest of [`authorized`] once the statement is judged: an insert or
/// update that would delete rows needs the delete grant.
fn finish_write_check<'c>(
    pooled: &'c Pooled,
    sql: &str,
    caller: &Caller,
    writes: bool,
    stmt: rusqlite::Statement<'c>,
    entered: guard::Entered<'c>,
) -> Result<(rusqlite::Statement<'c>, guard::Entered<'c>), ChannelError> {
    if writes && !caller.host && !stmt.readonly() {
        let written = entered.written();
        if !written.is_empty() && implied::deletes_rows(&pooled.conn, sql).map_err(invalid)? {
            let granted = |t: &String| caller.grant.as_ref().is_some_and(|g| g.sql.deletes.allows(t));
            if let Some(table) = written.into_iter().find(|t| !granted(t)) {
                return Err(ChannelError::Denied(Denial::Table { access: Access::Delete, table }));
            }
        }
    }
    Ok((stmt, entered))
}

/// A failure while a statement ran: its deadline, a denial made when SQLite
/// prepared it again, or what the database said.
fn ran(e: rusqlite::Error, entered: &guard::Entered<'_>) -> ChannelError {
    if entered.overdue() && e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) {
        return ChannelError::Timeout;
    }
    match entered.denial() {
        Some(denial) => ChannelError::Denied(denial),
        None => classify(e),
    }
}

struct SqliteTransaction {
    pooled: Option<Pooled>,
    pool: Arc<Mutex<Vec<Pooled>>>,
    // Dropped after the commit or rollback: field order is drop order.
    /// `None` for a snapshot, which writes nothing.
    turn: Option<Turn>,
}

impl Transaction for SqliteTransaction {
    fn apply(&mut self, op: &Operation, caller: &Caller) -> Result<Outcome, ChannelError> {
        let mut outcomes = Vec::with_capacity(1);
        self.apply_run(&[op], caller, &mut outcomes)?;
        outcomes.pop().ok_or_else(|| ChannelError::Invalid("no command was applied".into()))
    }

    fn apply_run(
        &mut self,
        ops: &[&Operation],
        caller: &Caller,
        outcomes: &mut Vec<Outcome>,
    ) -> Result<(), ChannelError> {
        let pooled =
            self.pooled.as_ref().ok_or_else(|| ChannelError::Unavailable("transaction already finished".into()))?;
        if self.turn.is_none() {
            return Err(ChannelError::Invalid("a snapshot applies no command".into()));
        }
        apply::apply_run(pooled, ops, caller, outcomes)
    }

    fn digest(&mut self, sql: &str, params: &[Value], caller: &Caller, max_bytes: usize) -> Result<u64, ChannelError> {
        let pooled =
            self.pooled.as_ref().ok_or_else(|| ChannelError::Unavailable("transaction already finished".into()))?;
        Ok(read(pooled, sql, params, caller, max_bytes, false)?.digest)
    }

    fn rows(&mut self, sql: &str, params: &[Value], caller: &Caller) -> Result<crate::bindings::Rows, ChannelError> {
        let pooled =
            self.pooled.as_ref().ok_or_else(|| ChannelError::Unavailable("transaction already finished".into()))?;
        Ok(read(pooled, sql, params, caller, usize::MAX, true)?.rows)
    }

    fn commit(mut self: Box<Self>) -> Result<(), ChannelError> {
        let pooled =
            self.pooled.take().ok_or_else(|| ChannelError::Unavailable("transaction already finished".into()))?;
        match pooled.conn.execute_batch("COMMIT") {
            Ok(()) => {
                give_back(&self.pool, pooled);
                Ok(())
            }
            // A failed COMMIT leaves the transaction open: roll it back and
            // drop the connection rather than pool it.
            Err(e) => {
                let _ = pooled.conn.execute_batch("ROLLBACK");
                Err(unavailable(e))
            }
        }
    }
}

impl Drop for SqliteTransaction {
    fn drop(&mut self) {
        if let Some(pooled) = self.pooled.take()
            && pooled.conn.execute_batch("ROLLBACK").is_ok()
        {
            give_back(&self.pool, pooled);
        }
    }
}

fn check_param_count(expected: usize, given: usize) -> Result<(), ChannelError> {
    if expected != given {
        return Err(ChannelError::Invalid(format!(
            "the statement takes {expected} parameter(s) but {given} were given"
        )));
    }
    Ok(())
}

/// Returns a connection to the pool. One left inside a transaction (which
/// no service statement can open, but a failed save can leave) is rolled
/// back first, and dropped if that fails: the next scope must start clean.
fn give_back(pool: &Mutex<Vec<Pooled>>, pooled: Pooled) {
    if !pooled.conn.is_autocommit() && (pooled.conn.execute_batch("ROLLBACK").is_err() || !pooled.conn.is_autocommit())
    {
        return;
    }
    if let Ok(mut pool) = pool.lock()
        && pool.len() < POOL_SIZE
    {
        pool.push(pooled);
    }
}

/// What a statement's failure while it ran means: a constraint of the data,
/// a database that is busy or failing (worth trying again), or else a
/// statement that cannot run (invalid).
fn classify(e: rusqlite::Error) -> ChannelError {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(ConstraintViolation) => ChannelError::Constraint(e.to_string()),
        Some(
            DatabaseBusy
            | DatabaseLocked
            | SystemIoFailure
            | DiskFull
            | CannotOpen
            | OutOfMemory
            | FileLockingProtocolFailed
            | ReadOnly,
        ) => unavailable(e),
        _ => invalid(e),
    }
}

fn invalid(e: rusqlite::Error) -> ChannelError {
    ChannelError::Invalid(e.to_string())
}

fn unavailable(e: rusqlite::Error) -> ChannelError {
    ChannelError::Unavailable(e.to_string())
}

fn from_sql(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

#[cfg(test)]
mod tests;
