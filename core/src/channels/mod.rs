//! Channels: named connections to external systems, configured by the
//! operator. Each channel kind lives in its own module behind [`Channel`].
//!
//! Reads go straight to the channel. Commands are applied at save through a
//! [`Transaction`], one per channel per save, so a channel's share of the
//! queue is applied in full or not at all.

pub mod bus;
mod claim;
pub mod files;
pub mod grant;
pub mod headers;
pub mod http;
pub mod http_out;
mod kinds;
pub mod kv;
mod open;
pub mod ops;
pub mod outbox;
pub mod secret;
pub mod secrets;
pub mod sql;
pub mod turns;

use std::sync::Arc;
use std::time::Instant;

use crate::bindings::{Rows, Value};
use crate::channels::grant::ChannelGrant;
use crate::channels::sql::grant::Access;
use crate::work::Canceller;
pub use claim::Claim;
pub use ops::{Kind, Operation, Outcome};

pub use open::{ChannelConfig, Channels, KindConfig, Opening, RelayParts};

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
    /// A commit was sent and never answered (the server stopped answering,
    /// or the connection broke on the way): it may have applied or not.
    /// The scope is not run again, which could apply it twice.
    #[error("{0}; whether the commit applied is unknown")]
    Unknown(String),
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
    /// Something the service's grant on the channel lacks, in the kind's
    /// own words: each kind says what was refused and the manifest line
    /// that would grant it ([`Denial::ungranted`]).
    Ungranted {
        /// What was refused, as a verb phrase: `write key cart/1`.
        what: String,
        /// The line of the channel's section that grants it:
        /// `keys = ["cart/1"]`.
        line: String,
    },
}

impl Denial {
    /// A refusal of `what` (a verb phrase: `publish on subject x`) that
    /// `line` of the channel's grant section would allow.
    pub fn ungranted(what: impl Into<String>, line: impl Into<String>) -> Denial {
        Denial::Ungranted { what: what.into(), line: line.into() }
    }
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
            Denial::Ungranted { what, .. } => write!(f, "to {what} is not granted"),
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
    pub service: Option<Arc<str>>,
    /// The service's grant (`None` grants nothing); unused for the host.
    pub grant: Option<Arc<ChannelGrant>>,
    /// True for the host's own statements, which no grant limits.
    pub host: bool,
    /// The deadline of the call (or save) the statement runs in.
    pub deadline: Instant,
    /// The scope's cancel flag: a cancelled scope's statement stops too.
    pub cancel: Option<Canceller>,
}

impl Caller {
    /// The service `name`, with `grant` on the channel (`None` grants
    /// nothing).
    pub fn service(name: &str, grant: Option<Arc<ChannelGrant>>, deadline: Instant) -> Caller {
        Caller::named(Arc::from(name), grant, deadline)
    }

    /// [`Caller::service`], with a name already shared.
    pub fn named(name: Arc<str>, grant: Option<Arc<ChannelGrant>>, deadline: Instant) -> Caller {
        Caller { service: Some(name), grant, host: false, deadline, cancel: None }
    }

    /// The host itself: nothing but the deadline applies.
    pub fn host(deadline: Instant) -> Caller {
        Caller { service: None, grant: None, host: true, deadline, cancel: None }
    }

    /// The host, with this caller's deadline and cancel flag: for the
    /// statements a channel runs on a service's behalf once it has checked
    /// the service's grant itself.
    pub fn as_host(&self) -> Caller {
        Caller { service: None, grant: None, host: true, deadline: self.deadline, cancel: self.cancel.clone() }
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
    /// How the save runs this read again, when not as it was asked: a `kv`
    /// read answered by another channel's table.
    pub recheck: Option<Recheck>,
}

/// A read as the save runs it again ([`Transaction::digest`]).
#[derive(Debug, Clone)]
pub struct Recheck {
    /// The channel whose save transaction runs it.
    pub channel: String,
    /// The statement.
    pub statement: String,
    /// Its parameters.
    pub params: Vec<Value>,
    /// Whether it runs as the host (the asking channel checked the grant).
    pub host: bool,
    /// The read as the service asked it, for people: `get cart/ann/1`.
    pub asked: String,
}

/// A hasher for [`Reading::digest`], with this process's random keys: a
/// service cannot choose rows that collide.
pub fn digester() -> impl std::hash::Hasher {
    use std::hash::BuildHasher as _;
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
    KEYS.get_or_init(std::collections::hash_map::RandomState::new).build_hasher()
}

/// Marks a new row in a [`Reading::digest`].
pub const DIGEST_ROW: u8 = 0xff;

/// Adds one value to a [`Reading::digest`], tagged with its type, and
/// returns its size as [`crate::channels::ops::value_size`] counts it. The SQLite
/// channel hashes the same tags as it streams rows.
pub fn digest_value(digest: &mut impl std::hash::Hasher, value: &Value) -> usize {
    match value {
        Value::Null => {
            digest.write_u8(0);
            1
        }
        Value::Integer(i) => {
            digest.write_u8(1);
            digest.write_i64(*i);
            8
        }
        Value::Real(f) => {
            digest.write_u8(2);
            digest.write_u64(f.to_bits());
            8
        }
        Value::Text(t) => {
            digest.write_u8(3);
            digest.write_usize(t.len());
            digest.write(t.as_bytes());
            t.len()
        }
        Value::Blob(b) => {
            digest.write_u8(4);
            digest.write_usize(b.len());
            digest.write(b);
            b.len()
        }
    }
}

/// A named connection that services read from and queue commands for.
///
/// Implementations are shared by every scope of the host, so they are
/// `Send + Sync` and do their own connection pooling. The contract is a
/// small core (its kind, its save transactions and where they commit) and
/// optional capabilities a kind has or has not: SQL ([`Channel::sql`]) and
/// key reads ([`Channel::keys`]). A kind that lacks one is refused by the
/// caller with one text ([`wrong_kind`]), never by a stub of its own.
pub trait Channel: Send + Sync {
    /// The kind of commands and reads it takes ([`Operation::kind`]): a
    /// command of another kind is refused when it is queued.
    fn kind(&self) -> Kind;

    /// Its SQL: reads, checks of `to.execute`, migrations (`sql` kinds).
    fn sql(&self) -> Option<&dyn SqlChannel> {
        None
    }

    /// Its key reads (`kv` kinds, `files`).
    fn keys(&self) -> Option<&dyn KeyReads> {
        None
    }

    /// Its fetches (`http` kinds).
    fn fetches(&self) -> Option<&dyn Fetches> {
        None
    }

    /// The gate of every command, as it is queued: whether `caller` may
    /// queue `op` under its grant on this channel (a table and operation,
    /// the service's own SQL, a key's prefix, a subject, a destination),
    /// and a command of another kind is refused ([`wrong_kind`]). Every kind
    /// says its own: a service is granted nothing by default.
    fn check_command(&self, op: &Operation, caller: &Caller) -> Result<(), ChannelError>;

    /// The channel whose save transaction this channel's commands apply in,
    /// when they apply in another's ([`Channel::apply_shared`]): a `kv`
    /// channel kept in a table of a `sql` channel commits with it.
    fn shares(&self) -> Option<&str> {
        None
    }

    /// Applies one of this channel's commands inside `tx`, the save
    /// transaction of the channel it [`shares`](Channel::shares).
    fn apply_shared(&self, tx: &mut dyn Transaction, op: &Operation, caller: &Caller) -> Result<Outcome, ChannelError> {
        let _ = (tx, caller);
        Err(wrong_kind(self.kind(), op.kind(), &op.describe()))
    }

    /// Starts the transaction a save applies this channel's commands in.
    fn begin(&self) -> Result<Box<dyn Transaction>, ChannelError>;

    /// Starts the transaction of a scope's last run, before the scope runs,
    /// holding what `claim` names ([`Claim`]): until it ends, no other
    /// writer may change what the scope reads there, so contention cannot
    /// make the run conflict. Kinds whose [`Channel::begin`] already
    /// excludes every other save (SQLite's one writer) need nothing more.
    fn hold(&self, claim: &Claim) -> Result<Box<dyn Transaction>, ChannelError> {
        let _ = claim;
        self.begin()
    }

    /// Whether saves and last runs on this channel take claims
    /// ([`Channel::hold`], [`Transaction::share`]): only a kind whose saves
    /// of several processes could otherwise make a last run lose
    /// (PostgreSQL). The scope computes no claim for the others.
    fn claims(&self) -> bool {
        false
    }

    /// Adds to `claim` what a last run holding this channel must keep
    /// other writers off for a service granted `grant` on it: for `sql`,
    /// the tables the grant names; for a kind kept in another channel's
    /// table ([`Channel::shares`]), that table. Nothing by default.
    fn claim(&self, grant: &ChannelGrant, claim: &mut Claim) {
        let _ = (grant, claim);
    }

    /// Starts a transaction for the host's own bookkeeping (the outbox's
    /// claims and marks): short, on rows no scope reads, so it needs no more
    /// than the engine's default isolation, and it takes no turn of the
    /// saves (PostgreSQL: `READ COMMITTED`). Kinds without such a level
    /// begin as a save does.
    fn begin_host(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        self.begin()
    }

    /// Starts a transaction that only reads: one consistent snapshot for
    /// checking a scope that queued no command, without holding off other
    /// saves. [`Transaction::apply`] on it fails. Kinds without snapshots
    /// begin a full transaction.
    fn snapshot(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        self.begin()
    }

    /// When this channel commits in a save: [`CommitStage::Data`] first,
    /// then [`CommitStage::Effects`], each stage in name order, so that an
    /// effect can depend on the data having committed.
    fn commit_stage(&self) -> CommitStage {
        CommitStage::Data
    }

    /// The `sql` channel whose save transaction records this channel's
    /// commit in advance ([`Transaction::journal`]): the save begins that
    /// channel first and writes the journal into it after its last round.
    fn journal(&self) -> Option<&str> {
        None
    }

    /// Called once a save that applied commands of this channel has
    /// committed: an effect channel wakes its relay.
    fn committed(&self) {}
}

/// The SQL capability of a channel ([`Channel::sql`]).
pub trait SqlChannel: Send + Sync {
    /// Runs one read at once, against committed data, under `caller`'s
    /// grant and deadline; the rows stop at `max_bytes`.
    fn query(&self, sql: &str, params: &[Value], caller: &Caller, max_bytes: usize) -> Result<Reading, ChannelError>;

    /// Checks, without running it, that `sql` is one statement the engine
    /// accepts under `caller`'s grant as a command: `to.execute` is refused
    /// when it is queued, not only at save.
    fn check(&self, sql: &str, caller: &Caller) -> Result<(), ChannelError>;

    /// The SQL dialect of this channel's migrations: a migrations directory
    /// with a folder of this name (`sqlite`, `postgres`) is read from that
    /// folder instead.
    fn dialect(&self) -> &'static str;

    /// Applies each `(name, script)` migration this channel has not had yet,
    /// in order, each atomically, and records it. Returns each name with
    /// `true` when it was applied now and `false` when it was applied before.
    fn migrate(&self, migrations: &[(String, String)]) -> Result<Vec<(String, bool)>, ChannelError>;
}

/// The key reads of a channel ([`Channel::keys`]).
pub trait KeyReads: Send + Sync {
    /// Reads one key at once: the rows are one column, `value`, and no row
    /// or one, under `caller`'s grant and deadline.
    fn get(&self, key: &str, caller: &Caller, max_bytes: usize) -> Result<Reading, ChannelError>;

    /// Lists at once the keys that start with `prefix`, at most `limit`, in
    /// byte order: rows of `key` and `value`.
    fn list(&self, prefix: &str, limit: u32, caller: &Caller, max_bytes: usize) -> Result<Reading, ChannelError>;

    /// Whether every value stays the same while the host runs (a `secrets`
    /// channel's): a read is then neither kept for the save to check nor
    /// recorded with its value.
    fn constant(&self) -> bool {
        false
    }
}

/// The fetches of a channel ([`Channel::fetches`]).
pub trait Fetches: Send + Sync {
    /// Sends one request at once, under `caller`'s grant and deadline, and
    /// reads its answer: one row of `status`, `headers` and `body`
    /// ([`http::answer_rows`]), stopping at `max_bytes`.
    fn fetch(&self, asked: &http::fetch::Asked, caller: &Caller, max_bytes: usize) -> Result<Reading, ChannelError>;

    /// The most fetches one scope may make on the channel.
    fn per_scope(&self) -> u32;
}

/// The fetches of `channel`, or the refusal of a fetch on a channel of
/// another kind.
pub fn fetches_of(channel: &dyn Channel) -> Result<&dyn Fetches, ChannelError> {
    channel.fetches().ok_or_else(|| wrong_kind(channel.kind(), crate::channels::http::KIND, "fetch"))
}

/// The SQL of `channel`, or the refusal of `what` (`query`, `execute`,
/// `migrate`) on a channel of another kind.
pub fn sql_of<'a>(channel: &'a dyn Channel, what: &str) -> Result<&'a dyn SqlChannel, ChannelError> {
    channel.sql().ok_or_else(|| wrong_kind(channel.kind(), crate::channels::sql::KIND, what))
}

/// The key reads of `channel`, or the refusal of `what` (`get`, `list`) on
/// a channel of another kind.
pub fn keys_of<'a>(channel: &'a dyn Channel, what: &str) -> Result<&'a dyn KeyReads, ChannelError> {
    channel.keys().ok_or_else(|| wrong_kind(channel.kind(), crate::channels::kv::KIND, what))
}

/// Where a channel commits in a save ([`Channel::commit_stage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CommitStage {
    /// A store of data (SQL): commits first, in name order.
    Data,
    /// What must happen only once the data committed: a side effect (a
    /// message, a request, a file), or a store outside the data
    /// transactions whose prepare made its commit one nothing concurrent
    /// can refuse (Redis, which locks its keys then). A kind whose commit a
    /// concurrent change could refuse must find that out in `prepare`.
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

    /// Applies a run of commands that `caller` queued one after another, in
    /// order, pushing each one's outcome onto `outcomes`. It stops at the
    /// first failure, which is then the command at `outcomes.len()` in
    /// `ops`. A kind that can apply a run for less than its commands one by
    /// one (SQLite: one prepared statement for a run of the same SQL)
    /// overrides it.
    fn apply_run(
        &mut self,
        ops: &[&Operation],
        caller: &Caller,
        outcomes: &mut Vec<Outcome>,
    ) -> Result<(), ChannelError> {
        for op in ops {
            outcomes.push(self.apply(op, caller)?);
        }
        Ok(())
    }

    /// Runs a read again inside the transaction, before any command of the
    /// save is applied, and returns the [`Reading::digest`] of its rows: the
    /// save compares it with the digest the scope saw. Under `caller`'s
    /// grant and deadline; the rows stop at `max_bytes`.
    fn digest(&mut self, sql: &str, params: &[Value], caller: &Caller, max_bytes: usize) -> Result<u64, ChannelError>;

    /// Takes, before anything else runs in the transaction, what keeps a
    /// last run that holds `claim` ([`Channel::hold`]) from losing to this
    /// save: the save waits for such a run to end. Called once, right after
    /// the transaction begins; nothing by default (SQLite's save already
    /// excludes every other).
    fn share(&mut self, claim: &Claim) -> Result<(), ChannelError> {
        let _ = claim;
        Ok(())
    }

    /// Runs a statement of the host inside the transaction and returns its
    /// rows: what a channel that [`shares`](Channel::shares) this one reads
    /// while it applies its commands. Kinds without SQL refuse it.
    fn rows(&mut self, sql: &str, params: &[Value], caller: &Caller) -> Result<Rows, ChannelError> {
        let _ = (sql, params, caller);
        Err(ChannelError::Invalid("this channel runs no SQL".into()))
    }

    /// Checks, after the last round and before any channel of the save
    /// commits, that the commit can succeed; a failure here applies nothing
    /// anywhere. SQLite has nothing to check (its transaction already holds
    /// the write lock); a kind whose commit a concurrent change could
    /// refuse finds that out here, and makes sure it cannot happen later
    /// (Redis locks its keys).
    fn prepare(&mut self) -> Result<(), ChannelError> {
        Ok(())
    }

    /// Writes, into `into` (the save transaction of the channel's
    /// [`Channel::journal`]), what this transaction's commit will do, so
    /// that a commit cut short by a crash can be finished. Nothing by
    /// default.
    fn journal(&mut self, into: &mut dyn Transaction, caller: &Caller) -> Result<(), ChannelError> {
        let _ = (into, caller);
        Ok(())
    }

    /// Makes everything applied so far durable.
    fn commit(self: Box<Self>) -> Result<(), ChannelError>;
}

/// Runs `work` in a short transaction of the host's own on `channel`
/// ([`Channel::begin_host`]) and commits it, again (up to five times) when
/// a concurrent one made it a conflict.
pub fn in_host_transaction<T>(
    channel: &dyn Channel,
    work: impl Fn(&mut dyn Transaction, &Caller) -> Result<T, ChannelError>,
) -> Result<T, ChannelError> {
    let mut tries = 0;
    loop {
        let host = Caller::host(Instant::now() + std::time::Duration::from_secs(10));
        let attempt = channel.begin_host().and_then(|mut tx| {
            let done = work(tx.as_mut(), &host)?;
            tx.commit()?;
            Ok(done)
        });
        match attempt {
            Err(ChannelError::Conflict(_)) if tries < 5 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(5 * tries));
            }
            other => return other,
        }
    }
}

/// The refusal of a read or command of the wrong kind for a channel.
pub fn wrong_kind(kind: Kind, wanted: Kind, what: &str) -> ChannelError {
    ChannelError::Invalid(format!("this is a {} channel; {what} needs a {} channel", kind.name(), wanted.name()))
}
