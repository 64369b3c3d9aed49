//! The client side of one PostgreSQL connection, every round trip bounded
//! in time on the host's side.
//!
//! `statement_timeout` bounds a statement only while the server runs: a
//! server that stops answering (its process stopped, a network that drops
//! packets, a proxy that holds the connection open) would hold the thread
//! that waits on it, a scope's, past every deadline. So each round trip
//! here waits until a time set beforehand ([`Link::bound`]): a service's
//! deadline (plus [`GRACE`], so that a server that runs reports its own
//! timeout first), or a fixed wait for the host's statements. A round trip
//! not answered by then leaves the connection in a state nobody knows: it
//! is closed, and the pool drops it.
//!
//! The client is `tokio-postgres` on a runtime of the connection's own
//! (one thread, the caller's), as the `postgres` crate does it, with the
//! wait added.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_postgres::types::{BorrowToSql, ToSql};
use tokio_postgres::{Client, Config, NoTls, Row, RowStream, SimpleQueryMessage, Statement, ToStatement};

use super::{LOST, pg_error};
use crate::channels::ChannelError;

/// How long past a service's deadline its round trip may wait: the server
/// ends a statement at the deadline itself (`statement_timeout`) and says
/// so; this much later the server is taken to have stopped answering.
pub(super) const GRACE: Duration = Duration::from_millis(250);

/// What a round trip waits for, and what passing its wait means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// A service's deadline: passing it is the deadline's
    /// ([`ChannelError::Timeout`]).
    Caller,
    /// The host's own statement (a commit, a reset, a role's set-up, a
    /// migration): passing it means the server stopped answering.
    Host,
}

/// One connection: the client, the task that drives its socket, and the
/// time its next round trip must be answered by.
pub(super) struct Link {
    client: Client,
    io: Io,
}

/// The runtime side of a [`Link`], apart from the client so that a round
/// trip can borrow both.
struct Io {
    runtime: Runtime,
    connection: JoinHandle<()>,
    until: Instant,
    wait: Wait,
    /// Set when a round trip went unanswered: nothing more is sent.
    stalled: bool,
}

impl Link {
    /// Connects, waiting no longer than `within` for the server to answer.
    pub(super) fn connect(config: &Config, within: Duration) -> Result<Link, ChannelError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ChannelError::Unavailable(format!("PostgreSQL: cannot start a connection's runtime: {e}")))?;
        let (client, connection) =
            match runtime.block_on(async { tokio::time::timeout(within, config.connect(NoTls)).await }) {
                Ok(connected) => connected.map_err(pg_error)?,
                Err(_) => {
                    return Err(ChannelError::Unavailable(format!(
                        "PostgreSQL: no answer to connecting within {} s",
                        within.as_secs_f32()
                    )));
                }
            };
        let connection = runtime.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("PostgreSQL connection ended: {e}");
            }
        });
        let io = Io { runtime, connection, until: Instant::now() + within, wait: Wait::Host, stalled: false };
        Ok(Link { client, io })
    }

    /// Sets what the next round trips wait for: until `until`, meaning
    /// `wait` when it passes.
    pub(super) fn bound(&mut self, until: Instant, wait: Wait) {
        self.io.until = until;
        self.io.wait = wait;
    }

    /// Bounds the next round trips by the host's own wait, `within` from
    /// now.
    pub(super) fn host_wait(&mut self, within: Duration) {
        self.bound(Instant::now() + within, Wait::Host);
    }

    /// Whether the connection is closed, or went unanswered and is as good
    /// as closed.
    pub(super) fn is_closed(&self) -> bool {
        self.io.stalled || self.client.is_closed()
    }

    /// Whether a round trip went unanswered (rather than failing).
    pub(super) fn stalled(&self) -> bool {
        self.io.stalled
    }

    pub(super) fn prepare(&mut self, sql: &str) -> Result<Statement, ChannelError> {
        self.io.wait_for(self.client.prepare(sql))
    }

    pub(super) fn batch_execute(&mut self, sql: &str) -> Result<(), ChannelError> {
        self.io.wait_for(self.client.batch_execute(sql))
    }

    pub(super) fn simple_query(&mut self, sql: &str) -> Result<Vec<SimpleQueryMessage>, ChannelError> {
        self.io.wait_for(self.client.simple_query(sql))
    }

    pub(super) fn execute<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, ChannelError> {
        self.io.wait_for(self.client.execute(statement, params))
    }

    pub(super) fn query<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ChannelError> {
        self.io.wait_for(self.client.query(statement, params))
    }

    pub(super) fn query_one<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, ChannelError> {
        self.io.wait_for(self.client.query_one(statement, params))
    }

    pub(super) fn query_opt<T: ?Sized + ToStatement>(
        &mut self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, ChannelError> {
        self.io.wait_for(self.client.query_opt(statement, params))
    }

    /// Runs `stmt`, its rows to be taken one at a time with
    /// [`Link::next_row`], each within the same wait.
    pub(super) fn query_raw<P, I>(&mut self, stmt: &Statement, params: I) -> Result<Rows, ChannelError>
    where
        P: BorrowToSql,
        I: IntoIterator<Item = P>,
        I::IntoIter: ExactSizeIterator,
    {
        let stream = self.io.wait_for(self.client.query_raw(stmt, params))?;
        Ok(Rows(Box::pin(stream)))
    }

    /// The next row of `rows`, `None` after the last.
    pub(super) fn next_row(&mut self, rows: &mut Rows) -> Result<Option<Row>, ChannelError> {
        self.io.wait_for(async { rows.0.next().await.transpose() })
    }
}

/// The rows of a [`Link::query_raw`], as they arrive.
pub(super) struct Rows(Pin<Box<RowStream>>);

impl Io {
    /// Runs one round trip, `done`, until the bound set; see the module
    /// docs.
    fn wait_for<T>(&mut self, done: impl Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T, ChannelError> {
        if self.stalled {
            return Err(ChannelError::Unavailable(format!("PostgreSQL: {LOST} (it stopped answering)")));
        }
        let until = tokio::time::Instant::from_std(self.until);
        // (The timer is made inside the runtime, which it needs.)
        match self.runtime.block_on(async { tokio::time::timeout_at(until, done).await }) {
            Ok(answer) => answer.map_err(pg_error),
            Err(_) => {
                self.stalled = true;
                self.connection.abort();
                Err(match self.wait {
                    Wait::Caller => ChannelError::Timeout,
                    Wait::Host => ChannelError::Unavailable(format!(
                        "PostgreSQL: {LOST} (no answer in time; the server stopped answering)"
                    )),
                })
            }
        }
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        self.connection.abort();
    }
}
