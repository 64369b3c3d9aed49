//! A pooled PostgreSQL connection and what it keeps between statements, so
//! that a service's statement costs one round trip where it can:
//!
//! - its prepared statements, by SQL text, until the schema changes (the
//!   channel's generation moves on) or there are too many;
//! - within a transaction, the `SET LOCAL ROLE` and `statement_timeout` in
//!   force, set again only when the role changes or the timeout would let a
//!   statement run past its caller's deadline by more than [`SLACK`];
//! - a `BEGIN` not sent yet: it goes with the transaction's first
//!   statement, and a transaction that ran none sends nothing.
//!
//! Every round trip is bounded in time on the host's side too ([`link`]):
//! by the service's deadline for its statements ([`Conn::enter`]), by
//! [`HOST_WAIT`] for the ends of transactions.
//!
//! A connection goes back to the pool as it came out: every transaction
//! that ran a statement ends with [`RESET`] in the same round trip, which
//! drops what a session can keep (temporary objects, settings and the
//! search path, advisory locks, listens, cursors). A connection that could
//! not be reset is dropped by the pool. What it keeps is the host's own:
//! statements prepared by the host (a service's SQL cannot `PREPARE`, and
//! PostgreSQL checks a prepared statement's privileges against the role in
//! force each time it runs).

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use tokio_postgres::Statement;

use super::link::{GRACE, Link, Wait};
use crate::channels::{Caller, ChannelError};

/// Prepared statements one connection keeps at most; past that it starts
/// again. Only statements up to [`KEPT_SQL_BYTES`] long are kept, so a
/// service sending ever new or long SQL cannot grow either side's memory.
const STATEMENTS: usize = 64;
const KEPT_SQL_BYTES: usize = 2048;
/// How far past its caller's deadline a statement's `statement_timeout`
/// may reach before it is set again: the granularity of every deadline
/// (the epoch tick).
pub(super) const SLACK: Duration = crate::work::EPOCH_TICK;
/// How long the host waits for the server to answer its own statements:
/// the end of a transaction (a commit, a rollback, the reset), a
/// connection's opening and its check.
pub(super) const HOST_WAIT: Duration = Duration::from_secs(10);

/// What ends every transaction that ran a statement: the session as it
/// was when the connection was opened, but for the host's prepared
/// statements. (`DISCARD ALL` would drop those too, and cannot share a
/// round trip with `COMMIT`.)
const RESET: &str = "RESET SESSION AUTHORIZATION; RESET ALL; DISCARD TEMP; DISCARD SEQUENCES; \
                     SELECT pg_advisory_unlock_all(); UNLISTEN *; CLOSE ALL";

/// Makes [`Conn`]s for the channel's `r2d2` pool.
#[derive(Debug)]
pub(super) struct Manager {
    config: tokio_postgres::Config,
}

impl Manager {
    pub(super) fn new(config: tokio_postgres::Config) -> Manager {
        Manager { config }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = ChannelError;

    fn connect(&self) -> Result<Conn, ChannelError> {
        let link = Link::connect(&self.config, HOST_WAIT)?;
        Ok(Conn { link, statements: HashMap::new(), generation: 0, local: None, begin: None, unreset: false })
    }

    /// Checked on every take from the pool. A round trip each time would
    /// cost a read a quarter of its time; the client knows without one
    /// when its connection has closed, and only then is it asked (and
    /// fails, so the pool opens another). A connection that breaks
    /// silently fails its next statement, as it would have after a check.
    ///
    /// Every take starts the connection's wait afresh: its round trips are
    /// the host's until a service's statement sets its own.
    fn is_valid(&self, conn: &mut Conn) -> Result<(), ChannelError> {
        conn.link.host_wait(HOST_WAIT);
        if conn.link.is_closed() || conn.unreset {
            return conn.link.simple_query("").map(drop);
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.link.is_closed() || conn.unreset
    }
}

/// The `SET LOCAL`s in force in the open transaction.
struct Local {
    role: Option<String>,
    timeout: Duration,
}

/// One connection of the pool.
pub(super) struct Conn {
    link: Link,
    statements: HashMap<String, Statement>,
    /// The channel's schema generation the statements were prepared under.
    generation: u64,
    local: Option<Local>,
    /// A `BEGIN …` to send with the next statement.
    begin: Option<Cow<'static, str>>,
    /// Set when a transaction's end could not [`RESET`] the session: the
    /// pool drops the connection instead of handing it out again.
    unreset: bool,
}

impl Deref for Conn {
    type Target = Link;
    fn deref(&self) -> &Link {
        &self.link
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Link {
        &mut self.link
    }
}

impl Conn {
    /// `sql` prepared on this connection: kept from an earlier use unless
    /// the schema has changed since (`generation`, the channel's).
    pub(super) fn prepared(&mut self, sql: &str, generation: u64) -> Result<Statement, ChannelError> {
        if self.generation != generation {
            self.statements.clear();
            self.generation = generation;
        }
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        self.send_begin()?;
        let statement = self.link.prepare(sql)?;
        if sql.len() > KEPT_SQL_BYTES {
            return Ok(statement);
        }
        if self.statements.len() >= STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Opens a transaction with `begin` (`BEGIN ISOLATION LEVEL …`), sent
    /// with its first statement.
    pub(super) fn begin(&mut self, begin: &'static str) {
        self.local = None;
        self.begin = Some(Cow::Borrowed(begin));
    }

    /// Runs `statements` outside any transaction, for what the session
    /// keeps until its reset (a last run's locks); when they fail, the
    /// session is reset at once.
    pub(super) fn lock_session(&mut self, statements: &str) -> Result<(), ChannelError> {
        self.link.host_wait(HOST_WAIT);
        let sent = self.link.batch_execute(statements);
        if sent.is_err() && self.link.batch_execute(RESET).is_err() {
            self.unreset = true;
        }
        sent
    }

    /// Opens a transaction with `begin`, sent now: its end then always
    /// resets the session.
    pub(super) fn begin_now(&mut self, begin: &str) -> Result<(), ChannelError> {
        self.local = None;
        self.begin = None;
        self.link.host_wait(HOST_WAIT);
        let sent = self.link.batch_execute(begin);
        if sent.is_err() {
            let _ = self.end("ROLLBACK");
        }
        sent
    }

    /// Adds `statement` to the held `BEGIN`, to run first in the
    /// transaction (a save's shared locks); `false` when the `BEGIN` was
    /// sent already.
    pub(super) fn begin_with(&mut self, statement: &str) -> bool {
        match &mut self.begin {
            Some(begin) => {
                let begin = begin.to_mut();
                begin.push_str("; ");
                begin.push_str(statement);
                true
            }
            None => false,
        }
    }

    /// Whether the open transaction has run nothing yet (its `BEGIN` is
    /// still held).
    pub(super) fn untouched(&self) -> bool {
        self.begin.is_some()
    }

    /// Sends a `BEGIN` still held, on its own.
    pub(super) fn send_begin(&mut self) -> Result<(), ChannelError> {
        if let Some(begin) = self.begin.take() {
            self.link.batch_execute(&begin)?;
        }
        Ok(())
    }

    /// Ends the open transaction with `end` (`COMMIT` or `ROLLBACK`) and
    /// resets the session ([`RESET`]) in the same round trip; one that
    /// never sent its `BEGIN` ran nothing, and sends nothing. When the end
    /// fails (a `COMMIT` refused), the reset is sent on its own; a
    /// connection it fails on is not used again.
    pub(super) fn end(&mut self, end: &str) -> Result<(), ChannelError> {
        self.local = None;
        if self.begin.take().is_some() {
            return Ok(());
        }
        self.link.host_wait(HOST_WAIT);
        let ended = self.link.batch_execute(&format!("{end}; {RESET}"));
        if ended.is_err() && self.link.batch_execute(&format!("ROLLBACK; {RESET}")).is_err() {
            self.unreset = true;
        }
        ended
    }

    /// Runs `work` in a transaction of its own, for the host's statements
    /// (a migration, a role's set-up): committed when it returns `Ok`,
    /// rolled back otherwise, and the session reset either way.
    pub(super) fn in_transaction<T>(
        &mut self,
        work: impl FnOnce(&mut Link) -> Result<T, ChannelError>,
    ) -> Result<T, ChannelError> {
        self.link.batch_execute("BEGIN")?;
        let done = work(&mut self.link);
        let end = if done.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = self.link.batch_execute(&format!("{end}; {RESET}"));
        if ended.is_err() && self.link.batch_execute(&format!("ROLLBACK; {RESET}")).is_err() {
            self.unreset = true;
        }
        let done = done?;
        ended.map(|()| done)
    }

    /// Makes `role` (`None`: the host's own) and the time left to
    /// `caller`'s deadline the `statement_timeout` of the next statement
    /// of the open transaction, in one round trip with a held `BEGIN`, or
    /// none when both are already in force closely enough.
    pub(super) fn enter(&mut self, role: Option<&str>, caller: &Caller) -> Result<(), ChannelError> {
        if caller.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            return Err(ChannelError::Timeout);
        }
        let now = Instant::now();
        let left = caller.deadline.saturating_duration_since(now);
        if left.as_millis() == 0 {
            return Err(ChannelError::Timeout);
        }
        self.link.bound(caller.deadline + GRACE, Wait::Caller);
        if let Some(local) = &self.local
            && self.begin.is_none()
            && local.role.as_deref() == role
            && within(now + local.timeout, caller.deadline)
        {
            return Ok(());
        }
        let begin = self.begin.take().map(|b| format!("{b}; ")).unwrap_or_default();
        let millis = left.as_millis();
        let set = format!("{begin}SET LOCAL ROLE {}; SET LOCAL statement_timeout = {millis}", role.unwrap_or("NONE"));
        self.local = None;
        self.link.batch_execute(&set)?;
        self.local = Some(Local { role: role.map(str::to_string), timeout: Duration::from_millis(millis as u64) });
        Ok(())
    }
}

/// Whether a statement that may run until `ends` keeps to `deadline`
/// within [`SLACK`] either way: not past it by more, nor cut short by more.
fn within(ends: Instant, deadline: Instant) -> bool {
    ends <= deadline + SLACK && deadline <= ends + SLACK
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of one connection to the test server (127.0.0.1:5432,
    /// database `test`), or `None` without one (a failure under
    /// SLUICE_REQUIRE_TOOLS=1, as in CI).
    fn pool_of_one() -> Option<r2d2::Pool<Manager>> {
        let url = "postgres://postgres@127.0.0.1:5432/test";
        let config: tokio_postgres::Config = url.parse().expect("url");
        match r2d2::Pool::builder().max_size(1).connection_timeout(Duration::from_secs(5)).build(Manager::new(config)) {
            Ok(pool) => Some(pool),
            Err(e) if std::env::var("SLUICE_REQUIRE_TOOLS").as_deref() != Ok("1") => {
                eprintln!("skipping: no PostgreSQL at {url} ({e})");
                None
            }
            Err(e) => panic!("no PostgreSQL at {url}: {e}"),
        }
    }

    /// What a session holds that a later scope could see: a temporary
    /// table, the search path and another setting, an advisory lock, a
    /// cursor held past its transaction.
    fn state(conn: &mut Conn) -> String {
        let row = conn
            .query_one(
                "SELECT to_regclass('pg_temp.planted')::text, current_setting('search_path'), \
                 current_setting('application_name'), \
                 (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()), \
                 (SELECT count(*) FROM pg_cursors)",
                &[],
            )
            .expect("state");
        format!(
            "{:?} {} {:?} {} {}",
            row.get::<_, Option<String>>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, i64>(3),
            row.get::<_, i64>(4)
        )
    }

    /// Whatever a transaction left on its session (committed or rolled
    /// back) is gone when the connection next comes out of the pool.
    #[test]
    fn a_connection_goes_back_to_the_pool_as_it_came_out() {
        let Some(pool) = pool_of_one() else { return };
        let clean = state(&mut pool.get().expect("conn"));
        for end in ["COMMIT", "ROLLBACK"] {
            let mut conn = pool.get().expect("conn");
            let pid: i32 = conn.query_one("SELECT pg_backend_pid()", &[]).expect("pid").get(0);
            conn.begin("BEGIN");
            conn.send_begin().expect("begin");
            conn.batch_execute(
                "CREATE TEMP TABLE planted (a int); SET search_path = pg_temp, public; \
                 SET application_name = 'planted'; SELECT pg_advisory_lock(7); \
                 DECLARE held CURSOR WITH HOLD FOR SELECT 1",
            )
            .expect("plant");
            assert_ne!(state(&mut conn), clean);
            conn.end(end).expect("end");
            drop(conn);
            let mut again = pool.get().expect("conn");
            let same: i32 = again.query_one("SELECT pg_backend_pid()", &[]).expect("pid").get(0);
            assert_eq!(same, pid, "the pool of one handed out another connection: the test proves nothing");
            assert_eq!(state(&mut again), clean, "after {end}");
        }
    }

    #[test]
    fn a_timeout_is_kept_only_while_it_ends_near_the_deadline() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(1);
        assert!(within(deadline, deadline));
        assert!(within(deadline + SLACK, deadline));
        assert!(!within(deadline + SLACK + Duration::from_millis(1), deadline));
        assert!(within(deadline - SLACK, deadline));
        assert!(!within(deadline - SLACK - Duration::from_millis(1), deadline));
    }
}
