//! The `sql` channel kind on PostgreSQL.
//!
//! - Connections come from an `r2d2` pool, as the user the channel's URL
//!   names (the host's role). Each keeps its prepared statements and, in a
//!   transaction, the `SET LOCAL`s in force ([`conn`]).
//! - A service's own SQL (its reads, its `execute` commands, its kept reads
//!   run again at save) passes the statement filter ([`filter`]) and then
//!   runs under `SET LOCAL ROLE` to the service's role ([`roles`]), whose
//!   privileges are exactly its grant: PostgreSQL enforces it.
//! - Every such statement runs with `statement_timeout` set to what is left
//!   of its caller's deadline, to within one epoch tick; reads run in
//!   `READ ONLY` transactions.
//! - A save is one `SERIALIZABLE` transaction: a concurrent save that
//!   changed what it read, or a deadlock, is a [`ChannelError::Conflict`]
//!   and the scope runs again (`[scopes] retries`).
//! - The commands the host builds (insert, update, delete) run under the
//!   service's role too, on the tables of schema `public`: their table and
//!   operation were checked against the grant when they were queued, and
//!   PostgreSQL checks them again, so `"*"` reaches no catalog and no host
//!   table. An insert returns the new row's integer primary key
//!   (`RETURNING`), or 0 for a table without one.

mod bounded;
mod claims;
mod conn;
mod filter;
mod link;
mod migrate;
mod params;
mod roles;
mod transaction;
mod values;

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;

use super::{check_param_count, quote};
use crate::bindings::{Rows, Value};
use crate::channels::grant::ChannelGrant;
use crate::channels::ops::{Kind, Operation};
use crate::channels::turns::{Turn, Turns};
use crate::channels::{Caller, Channel, ChannelError, Claim, Denial, Reading, SqlChannel, Transaction};
use crate::channels::{DIGEST_ROW as ROW, digest_value};
use filter::Use;
use transaction::PostgresTransaction;
use values::{Cell, Param};

type Pool = r2d2::Pool<conn::Manager>;
type Pooled = r2d2::PooledConnection<conn::Manager>;

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
    /// Moves on when the schema changes: every connection prepares its
    /// statements again.
    schema: Arc<AtomicU64>,
}

impl PostgresChannel {
    /// Connects to the database a `postgres://` URL names, checking at once
    /// that it answers.
    pub fn open(url: &str) -> Result<Self, ChannelError> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| ChannelError::Invalid(format!("url {}: {e}", redact(url))))?;
        let manager = conn::Manager::new(config);
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
            schema: Arc::default(),
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
    fn role(&self, client: &mut conn::Conn, caller: &Caller) -> Result<Option<String>, ChannelError> {
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

impl SqlChannel for PostgresChannel {
    fn query(&self, sql: &str, params: &[Value], caller: &Caller, max_bytes: usize) -> Result<Reading, ChannelError> {
        let checked = checked(sql, caller, Use::Read)?;
        let mut client = self.take(caller.deadline)?;
        // A read is its own transaction: one that met a statement the
        // schema made stale runs again at once, prepared afresh, and one
        // whose connection turned out gone (the server restarted, or ended
        // it) runs again on another, as many times as the pool may hold
        // such connections.
        let (mut stale_tries, mut lost_tries) = (1, POOL_SIZE);
        loop {
            let read = self.role(&mut client, caller).and_then(|role| {
                client.begin("BEGIN READ ONLY");
                let generation = self.schema.load(Ordering::Relaxed);
                let read =
                    run_read(&mut client, generation, &checked, role.as_deref(), params, caller, max_bytes, true);
                let ended = client.end("ROLLBACK");
                read.and_then(|read| ended.map(|()| read))
            });
            let Err(e) = read else { return read };
            self.handle().failed(&e, caller);
            if (lost(&e) || client.is_closed()) && lost_tries > 0 {
                lost_tries -= 1;
                // Back to the pool, which drops it for being closed.
                drop(client);
                client = self.take(caller.deadline)?;
            } else if stale(&e) && stale_tries > 0 {
                stale_tries -= 1;
            } else {
                return Err(e);
            }
        }
    }

    fn check(&self, sql: &str, caller: &Caller) -> Result<(), ChannelError> {
        checked(sql, caller, Use::Command).map(drop)
    }

    fn dialect(&self) -> &'static str {
        "postgres"
    }

    fn migrate(&self, migrations: &[(String, String)]) -> Result<Vec<(String, bool)>, ChannelError> {
        let mut client = self.take(Instant::now() + CONNECT_TIMEOUT)?;
        let report = migrate::apply(&mut client, migrations);
        self.handle().schema_changed();
        report
    }
}

impl Channel for PostgresChannel {
    fn kind(&self) -> Kind {
        crate::channels::sql::KIND
    }

    fn sql(&self) -> Option<&dyn SqlChannel> {
        Some(self)
    }

    fn check_command(&self, op: &Operation, caller: &Caller) -> Result<(), ChannelError> {
        super::check_command(self, op, caller)
    }

    fn begin(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        self.start(self.turns.one()?)
    }

    /// A turn, as for a save, and `claim`'s keys taken exclusive before
    /// the transaction begins ([`claims`]): every save of those tables, on
    /// this host or another, waits for the last run to end.
    fn hold(&self, claim: &Claim) -> Result<Box<dyn Transaction>, ChannelError> {
        let turn = self.turns.one()?;
        let mut client = self.take(Instant::now() + CONNECT_TIMEOUT)?;
        if let Some(lock) = claims::for_last_run(claim) {
            client.lock_session(&lock)?;
        }
        client.begin_now("BEGIN ISOLATION LEVEL SERIALIZABLE")?;
        Ok(self.save_transaction(client, turn))
    }

    fn claims(&self) -> bool {
        true
    }

    fn claim(&self, grant: &ChannelGrant, claim: &mut Claim) {
        grant.sql.claim(claim);
    }

    /// `READ COMMITTED`, outside the turns: the outbox's claims (`FOR
    /// UPDATE SKIP LOCKED`) and marks.
    fn begin_host(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        let mut client = self.take(Instant::now() + CONNECT_TIMEOUT)?;
        client.begin("BEGIN ISOLATION LEVEL READ COMMITTED");
        Ok(Box::new(PostgresTransaction { client: Some(client), channel: self.handle(), writes: true, _turn: None }))
    }

    /// One consistent snapshot that takes no locks.
    fn snapshot(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        let mut client = self.take(Instant::now() + CONNECT_TIMEOUT)?;
        client.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        Ok(Box::new(PostgresTransaction { client: Some(client), channel: self.handle(), writes: false, _turn: None }))
    }
}

impl PostgresChannel {
    /// A serializable transaction for a save, in `turn`.
    fn start(&self, turn: Turn) -> Result<Box<dyn Transaction>, ChannelError> {
        let mut client = self.take(Instant::now() + CONNECT_TIMEOUT)?;
        client.begin("BEGIN ISOLATION LEVEL SERIALIZABLE");
        Ok(self.save_transaction(client, turn))
    }

    /// A save's transaction on `client`, in `turn`.
    fn save_transaction(&self, client: Pooled, turn: Turn) -> Box<dyn Transaction> {
        Box::new(PostgresTransaction { client: Some(client), channel: self.handle(), writes: true, _turn: Some(turn) })
    }

    /// What a transaction needs of its channel.
    fn handle(&self) -> Handle {
        Handle {
            roles: Arc::clone(&self.roles),
            keys: Arc::clone(&self.keys),
            schema: Arc::clone(&self.schema),
            pool: self.pool.clone(),
        }
    }
}

/// The parts of a channel a transaction uses.
struct Handle {
    roles: Arc<roles::Roles>,
    keys: Arc<Mutex<HashMap<String, Option<String>>>>,
    schema: Arc<AtomicU64>,
    pool: Pool,
}

impl Handle {
    /// The schema generation statements are prepared under.
    fn generation(&self) -> u64 {
        self.schema.load(Ordering::Relaxed)
    }

    /// The schema changed (a migration, a service's `CREATE` or `ALTER`, or
    /// a prepared statement PostgreSQL found stale): roles are set up
    /// again, keys looked up again and statements prepared again.
    fn schema_changed(&self) {
        self.schema.fetch_add(1, Ordering::Relaxed);
        self.roles.schema_changed();
        if let Ok(mut keys) = self.keys.lock() {
            keys.clear();
        }
    }

    /// What a failed statement of `caller` tells the channel: a table
    /// granted since its role was set up (made by another service's raw
    /// SQL) means setting the role up again on its next use; a prepared
    /// statement the schema made stale means preparing again.
    fn failed(&self, e: &ChannelError, caller: &Caller) {
        match e {
            ChannelError::Denied(_) => {
                if let Some(service) = caller.service.as_deref() {
                    self.roles.forget(service);
                }
            }
            e if stale(e) => self.schema_changed(),
            _ => {}
        }
    }
}

/// How [`pg_error`] words a connection that is gone.
const LOST: &str = "the connection was lost";

/// Whether `e` says the connection it ran on is gone.
fn lost(e: &ChannelError) -> bool {
    matches!(e, ChannelError::Unavailable(reason) if reason.contains(LOST))
}

/// Whether `e` is a prepared statement the schema made stale.
fn stale(e: &ChannelError) -> bool {
    matches!(e, ChannelError::Conflict(reason) if reason.contains(STALE))
}

/// How [`pg_error`] words a prepared statement the schema made stale.
const STALE: &str = "a statement prepared before the schema changed";

/// A service's statement through the filter; the host's own as it is.
fn checked(sql: &str, caller: &Caller, usage: Use) -> Result<filter::Checked, ChannelError> {
    if caller.host {
        let (sql, _) = params::rewrite(sql)?;
        return Ok(filter::Checked { sql: sql.into(), ..Default::default() });
    }
    filter::check(sql, caller.grant.as_deref(), usage)
}

/// Runs a checked read in the open transaction as `role`; see
/// [`crate::channels::SqlChannel::query`]. `keep` false only digests.
#[expect(clippy::too_many_arguments, reason = "one read's parts, passed as they are")]
fn run_read(
    client: &mut conn::Conn,
    generation: u64,
    checked: &filter::Checked,
    role: Option<&str>,
    params: &[Value],
    caller: &Caller,
    max_bytes: usize,
    keep: bool,
) -> Result<Reading, ChannelError> {
    client.enter(role, caller)?;
    let mut stmt = client.prepared(&checked.sql, generation)?;
    // A service's read sends no row larger than it may return: the
    // server measures each one before sending it ([`bounded`]).
    if !caller.host
        && max_bytes < usize::MAX
        && let Some(wrapped) = bounded::wrap(&checked.sql, stmt.columns(), max_bytes)
    {
        stmt = client.prepared(&wrapped, generation)?;
    }
    check_param_count(stmt.params().len(), params.len())?;
    let columns: Vec<String> = stmt.columns().iter().map(|c| c.name().to_string()).collect();
    let mut digest = crate::channels::digester();
    columns.hash(&mut digest);
    let mut bytes = columns.iter().map(String::len).sum::<usize>();
    let bound: Vec<Param<'_>> = params.iter().map(Param).collect();
    let mut rows = client.query_raw(&stmt, bound.iter().map(|p| p as &dyn ToSql))?;
    let mut values = Vec::new();
    while let Some(row) = client.next_row(&mut rows)? {
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

/// What a PostgreSQL failure means (by its SQLSTATE class): a conflict
/// with a concurrent transaction, the deadline, a refusal of the role, a
/// constraint of the data, a server that is unreachable or failing, or
/// else a statement that cannot run.
fn pg_error(e: tokio_postgres::Error) -> ChannelError {
    let Some(code) = e.code() else {
        return ChannelError::Unavailable(format!("PostgreSQL: {LOST} ({e})"));
    };
    let message = e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_string());
    match code.code() {
        // The server ended the connection (an administrator, a shutdown),
        // or it broke.
        c if c.starts_with("08") || c.starts_with("57P") => {
            ChannelError::Unavailable(format!("PostgreSQL: {LOST} ({message})"))
        }
        "40001" | "40P01" => ChannelError::Conflict(format!("PostgreSQL: {message}")),
        // A statement prepared before the schema changed under it (its
        // result's type changed, or it is gone): the next run prepares it
        // again.
        "0A000" if message.starts_with("cached plan") => ChannelError::Conflict(format!("PostgreSQL: {STALE}")),
        "26000" => ChannelError::Conflict(format!("PostgreSQL: {STALE}")),
        "57014" => ChannelError::Timeout,
        // A row [`bounded`] measured past the read's limit, never sent.
        "22P02" if bounded::too_large(&message).is_some() => {
            ChannelError::TooLarge { bytes: bounded::too_large(&message).unwrap_or(usize::MAX) }
        }
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
