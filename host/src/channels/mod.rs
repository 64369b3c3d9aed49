//! Channels: named connections to external systems, configured by the
//! operator. Each channel kind lives in its own module behind [`Channel`].
//!
//! Reads go straight to the channel. Commands are applied at save through a
//! [`Transaction`], one per channel per save, so a channel's share of the
//! queue is applied in full or not at all.

pub mod sql;
pub mod turns;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::bindings::{Rows, Value};
use crate::budget::Canceller;
use crate::command::{Operation, Outcome};
use crate::config::{ChannelConfig, Config};
use crate::grants::Access;
use crate::manifest::ChannelGrant;

/// Why a channel refused or failed a request.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ChannelError {
    /// The request is malformed for this channel: SQL that does not parse, a
    /// write passed to a read, a wrong parameter count.
    #[error("{0}")]
    Invalid(String),
    /// The channel could not do it now: the database is busy or locked, a
    /// file could not be opened or written, the server is unreachable.
    /// Trying again later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The data refused it: a constraint (unique, foreign key, check, not
    /// null) failed. The same request will fail again on the same data.
    #[error("{0}")]
    Constraint(String),
    /// The engine aborted the transaction because a concurrent one changed
    /// what it read or wrote (a PostgreSQL serialization failure or
    /// deadlock). Nothing of it was applied; the scope may run again.
    #[error("{0}")]
    Conflict(String),
    /// The engine refused the statement under the caller's grant.
    #[error("refused: {0}")]
    Denied(Denial),
    /// The statement was still running at the caller's deadline and was
    /// interrupted.
    #[error("interrupted at the deadline")]
    Timeout,
    /// A read's rows passed the caller's byte limit; reading stopped there.
    #[error("the rows passed {bytes} bytes")]
    TooLarge {
        /// How many bytes had been read when it stopped.
        bytes: usize,
    },
}

impl ChannelError {
    /// Whether the same request may succeed if tried again later, on its
    /// own: the channel was unavailable, not the request wrong.
    pub fn retryable(&self) -> bool {
        matches!(self, ChannelError::Unavailable(_))
    }
}

/// Why the engine refused a service's statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// A table access the grant lacks.
    Table {
        /// What the statement would do.
        access: Access,
        /// The table, lower-cased.
        table: String,
    },
    /// A write in a read.
    WriteInRead {
        /// What the statement would do.
        access: Access,
        /// The table, lower-cased.
        table: String,
    },
    /// A schema change, which needs `raw-sql = true`; described.
    Schema(String),
    /// Something no grant allows (transaction control, `ATTACH`, a pragma,
    /// a function outside the allow-list), described.
    Never(String),
}

impl std::fmt::Display for Denial {
    /// What was refused, without the service and manifest line, which only
    /// the grants know ([`crate::grants::Grants::refusal`] says it in full).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denial::Table { access, table } => write!(f, "{} table {table} is not granted", access.key()),
            Denial::WriteInRead { table, .. } => write!(f, "a read must not write (table {table})"),
            Denial::Schema(what) => write!(f, "{what} needs raw-sql = true"),
            Denial::Never(what) => write!(f, "no grant allows it to {what}"),
        }
    }
}

/// Who a statement runs for: a service, whose grant on the channel the
/// engine enforces, or the host itself; and when it must have ended.
#[derive(Clone)]
pub struct Caller {
    /// The service, by name (`None` for the host): a kind whose engine
    /// enforces grants per service (PostgreSQL roles) runs its statements
    /// as this service.
    pub(crate) service: Option<Arc<str>>,
    /// The service's grant (`None` grants nothing); unused for the host.
    pub(crate) grant: Option<Arc<ChannelGrant>>,
    /// True for the host's own statements, which no grant limits.
    pub(crate) host: bool,
    /// The deadline of the call (or save) the statement runs in.
    pub(crate) deadline: Instant,
    /// The scope's cancel flag: a cancelled scope's statement stops too.
    pub(crate) cancel: Option<Canceller>,
}

impl Caller {
    /// The service `name`, with `grant` on the channel (`None` grants
    /// nothing).
    pub fn service(name: &str, grant: Option<Arc<ChannelGrant>>, deadline: Instant) -> Caller {
        Caller { service: Some(Arc::from(name)), grant, host: false, deadline, cancel: None }
    }

    /// The host itself: nothing but the deadline applies.
    pub fn host(deadline: Instant) -> Caller {
        Caller { service: None, grant: None, host: true, deadline, cancel: None }
    }

    /// The same caller, whose statement also stops when `cancel` is set.
    pub fn cancelled_by(mut self, cancel: &Canceller) -> Caller {
        self.cancel = Some(cancel.clone());
        self
    }
}

/// What one read returned, and what the scope needs to check it again at
/// save.
#[derive(Debug, Clone)]
pub struct Reading {
    /// The rows.
    pub rows: Rows,
    /// A digest of the rows as the channel produced them (column names,
    /// then every value in order), keyed per process: equal rows give equal
    /// digests; different rows, different ones but for a chance of 2^-64.
    pub digest: u64,
    /// The tables the statement read, lower-cased. A read of no table (`SELECT
    /// 1`) cannot change.
    pub tables: Vec<String>,
    /// Whether the rows may differ from run to run with the same data (it
    /// calls `random()`, or reads the clock with `'now'`): such a read cannot
    /// be checked by running it again.
    pub volatile: bool,
}

/// A hasher for [`Reading::digest`], with this process's random keys: a
/// service cannot choose rows that collide.
pub fn digester() -> impl std::hash::Hasher {
    use std::hash::BuildHasher as _;
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
    KEYS.get_or_init(std::collections::hash_map::RandomState::new).build_hasher()
}

/// A named connection that services read from and queue commands for.
///
/// Implementations are shared by every scope of the host, so they are
/// `Send + Sync` and do their own connection pooling.
pub trait Channel: Send + Sync {
    /// Runs one read at once, against committed data, under `caller`'s
    /// grant and deadline; the rows stop at `max_bytes`.
    fn query(&self, sql: &str, params: &[Value], caller: &Caller, max_bytes: usize) -> Result<Reading, ChannelError>;

    /// Checks, without running it, that `sql` is one statement the engine
    /// accepts under `caller`'s grant as a command: `to.execute` is refused
    /// when it is queued, not only at save.
    fn check(&self, sql: &str, caller: &Caller) -> Result<(), ChannelError>;

    /// Starts the transaction a save applies this channel's commands in.
    fn begin(&self) -> Result<Box<dyn Transaction>, ChannelError>;

    /// Starts the transaction of a scope's last run, before the scope runs:
    /// until it ends, no other save of this host on the channel may change
    /// what the scope reads, so contention inside the host cannot make the
    /// run conflict. Kinds whose [`Channel::begin`] already excludes other
    /// saves (SQLite's one writer) need nothing more.
    fn hold(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        self.begin()
    }

    /// Starts a transaction that only reads: one consistent snapshot for
    /// checking a scope that queued no command, without holding off other
    /// saves. [`Transaction::apply`] on it fails. Kinds without snapshots
    /// begin a full transaction.
    fn snapshot(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        self.begin()
    }

    /// When this channel commits in a save: [`CommitStage::Data`] channels
    /// first, then [`CommitStage::Effects`] channels, each stage in name
    /// order, so that an effect can depend on the data having committed.
    fn commit_stage(&self) -> CommitStage {
        CommitStage::Data
    }

    /// The SQL dialect of this channel's migrations: a migrations directory
    /// with a folder of this name (`sqlite`, `postgres`) is read from that
    /// folder instead.
    fn dialect(&self) -> &'static str {
        "sqlite"
    }

    /// Applies each `(name, script)` migration this channel has not had yet,
    /// in order, each atomically, and records it. Returns each name with
    /// `true` when it was applied now and `false` when it was applied before.
    fn migrate(&self, migrations: &[(String, String)]) -> Result<Vec<(String, bool)>, ChannelError>;
}

/// Where a channel commits in a save ([`Channel::commit_stage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CommitStage {
    /// A store of data (SQL): commits first.
    Data,
    /// A side effect that must happen only once the data committed (a
    /// message, a request, a file): commits after every data channel.
    Effects,
}

/// One open transaction on a channel. Dropping it without [`commit`] rolls
/// back everything applied through it.
///
/// [`commit`]: Transaction::commit
pub trait Transaction: Send {
    /// Applies one command inside the transaction, under the grant and
    /// deadline of `caller` (the service that queued it).
    fn apply(&mut self, op: &Operation, caller: &Caller) -> Result<Outcome, ChannelError>;

    /// Runs a read again inside the transaction, before any command of the
    /// save is applied, and returns the [`Reading::digest`] of its rows: the
    /// save compares it with the digest the scope saw. Under `caller`'s
    /// grant and deadline; the rows stop at `max_bytes`.
    fn digest(&mut self, sql: &str, params: &[Value], caller: &Caller, max_bytes: usize) -> Result<u64, ChannelError>;

    /// Checks, after the last round and before any channel of the save
    /// commits, that the commit can succeed; a failure here applies nothing
    /// anywhere. SQLite has nothing to check (its transaction already holds
    /// the write lock); a kind whose commit can be refused (a watched key
    /// that changed) checks it here.
    fn prepare(&mut self) -> Result<(), ChannelError> {
        Ok(())
    }

    /// Makes everything applied so far durable.
    fn commit(self: Box<Self>) -> Result<(), ChannelError>;
}

/// Every channel the host has, by name. Built once per host from [`Config`].
#[derive(Clone, Default)]
pub struct Channels {
    by_name: BTreeMap<String, Arc<dyn Channel>>,
}

impl Channels {
    /// Opens every channel the configuration names.
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        let mut by_name = BTreeMap::new();
        for (name, channel) in &config.channels {
            let opened: Arc<dyn Channel> = match channel {
                ChannelConfig::Sql { url } if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                    Arc::new(sql::PostgresChannel::open(url).map_err(|e| anyhow::anyhow!("channel {name}: {e}"))?)
                }
                ChannelConfig::Sql { url } => {
                    Arc::new(sql::SqliteChannel::open(url).map_err(|e| anyhow::anyhow!("channel {name}: {e}"))?)
                }
            };
            by_name.insert(name.clone(), opened);
        }
        Ok(Channels { by_name })
    }

    /// Adds (or replaces) the channel `name`: for an embedder with a channel
    /// of its own, and for tests with a fake one.
    pub fn insert(&mut self, name: impl Into<String>, channel: Arc<dyn Channel>) {
        self.by_name.insert(name.into(), channel);
    }

    /// The channel called `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Channel>> {
        self.by_name.get(name)
    }

    /// The channel names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}
