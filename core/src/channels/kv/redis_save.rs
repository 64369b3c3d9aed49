//! One save on a Redis `kv` channel: its connection, the keys it watches,
//! the writes it will make, and its commit after the data channels'
//! ([`super::redis_commit`]), recorded in advance when the channel has an
//! outbox ([`super::redis_journal`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::redis::{CONNECT_TIMEOUT, Pooled, bound, get, left, list, redis_error};
use super::redis_commit::{self, Committed, LOCK_TTL};
use super::redis_journal;
use super::{Held, MAX_LIST};
use crate::bindings::Value;
use crate::channels::ops::{Operation, Outcome};
use crate::channels::outbox::Outbox;
use crate::channels::{Caller, ChannelError, Transaction};

/// How long a save that will not commit waits to give its locks back.
const CLEANUP_WAIT: Duration = Duration::from_millis(500);

/// One save's connection, the keys it watches and the writes it will make.
pub(super) struct RedisTransaction {
    conn: Option<Pooled>,
    /// Each key's value once the writes so far are made (`None`: removed).
    pending: HashMap<String, Option<Vec<u8>>>,
    /// Keys written, in the order first written.
    order: Vec<String>,
    /// Keys watched (read).
    watched: BTreeSet<String>,
    /// The save's token: its locks hold it.
    token: String,
    /// Whether the keys are locked (the save prepared).
    locked: bool,
    journal: Option<Arc<Outbox>>,
    /// The first service that wrote, named by the journal's row.
    writer: Option<String>,
    /// The journal's row of this save's commit.
    recorded: Option<String>,
}

impl RedisTransaction {
    /// A save's transaction on `conn`, recorded in `journal` when the
    /// channel has one.
    pub(super) fn new(conn: Pooled, journal: Option<Arc<Outbox>>) -> RedisTransaction {
        RedisTransaction {
            conn: Some(conn),
            pending: HashMap::new(),
            order: Vec::new(),
            watched: BTreeSet::new(),
            token: uuid::Uuid::new_v4().simple().to_string(),
            locked: false,
            journal,
            writer: None,
            recorded: None,
        }
    }

    fn conn(&mut self, caller: &Caller) -> Result<&mut Pooled, ChannelError> {
        let conn =
            self.conn.as_mut().ok_or_else(|| ChannelError::Unavailable("transaction already finished".into()))?;
        bound(conn, left(caller.deadline)?).map_err(redis_error)?;
        Ok(conn)
    }

    /// Watches `keys`: the commit fails if any changes from now on.
    fn watch(&mut self, keys: &[String], caller: &Caller) -> Result<(), ChannelError> {
        if keys.is_empty() {
            return Ok(());
        }
        redis::cmd("WATCH").arg(keys).exec(self.conn(caller)?).map_err(redis_error)?;
        self.watched.extend(keys.iter().cloned());
        Ok(())
    }

    /// Every key read or written, each once: what the save locks.
    fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.watched.iter().cloned().collect();
        keys.extend(self.order.iter().filter(|k| !self.watched.contains(*k)).cloned());
        keys
    }

    /// The writes, in the order first written.
    fn writes(&self) -> Vec<(&str, Option<&[u8]>)> {
        self.order.iter().map(|k| (k.as_str(), self.pending.get(k).and_then(Option::as_deref))).collect()
    }

    /// Locks every key read or written ([`redis_commit::prepare`]), once.
    fn lock(&mut self) -> Result<(), ChannelError> {
        let keys = self.keys();
        if self.locked || keys.is_empty() {
            return Ok(());
        }
        let conn =
            self.conn.as_mut().ok_or_else(|| ChannelError::Unavailable("transaction already finished".into()))?;
        bound(conn, CONNECT_TIMEOUT).map_err(redis_error)?;
        redis_commit::prepare(conn, &keys, &self.token)?;
        self.locked = true;
        Ok(())
    }

    /// What `key` holds with this transaction's writes: watched, then read.
    /// What `key` holds, its value read only up to `max_bytes` (and one
    /// more, to tell a longer one): `GETRANGE` never sends more.
    fn current(&mut self, key: &str, max_bytes: usize, caller: &Caller) -> Result<Held, ChannelError> {
        if let Some(pending) = self.pending.get(key) {
            return Ok(Held::of(pending.as_deref(), max_bytes));
        }
        self.watch(&[key.to_string()], caller)?;
        let conn = self.conn(caller)?;
        let head: Vec<u8> = redis::cmd("GETRANGE").arg(key).arg(0).arg(max_bytes).query(conn).map_err(redis_error)?;
        if head.is_empty() {
            let exists: bool = redis::cmd("EXISTS").arg(key).query(conn).map_err(redis_error)?;
            return Ok(if exists { Held::Value(Vec::new()) } else { Held::Unset });
        }
        Ok(Held::of(Some(&head), max_bytes))
    }

    fn write(&mut self, key: &str, value: Option<Vec<u8>>) {
        if self.pending.insert(key.to_string(), value).is_none() {
            self.order.push(key.to_string());
        }
    }
}

impl Transaction for RedisTransaction {
    fn apply(&mut self, op: &Operation, caller: &Caller) -> Result<Outcome, ChannelError> {
        if self.writer.is_none() && !caller.host {
            self.writer = caller.service.as_deref().map(str::to_string);
        }
        super::apply(&mut Watched { tx: self, caller }, op)
    }

    /// A kept `GET` or `LIST` again, its keys watched first (a `LIST`
    /// watches the keys it finds: a key added under the prefix after this
    /// is not seen).
    fn digest(
        &mut self,
        statement: &str,
        params: &[Value],
        caller: &Caller,
        max_bytes: usize,
    ) -> Result<u64, ChannelError> {
        match (statement, params) {
            ("GET", [Value::Text(key)]) => {
                self.watch(std::slice::from_ref(key), caller)?;
                Ok(get(self.conn(caller)?, key, max_bytes)?.digest)
            }
            ("LIST", [Value::Text(prefix), Value::Integer(limit)]) => {
                let limit = u32::try_from(*limit).unwrap_or(MAX_LIST);
                let (_, keys) = list(self.conn(caller)?, prefix, limit, caller, max_bytes)?;
                self.watch(&keys, caller)?;
                // Listed again once watched, so that what is compared is
                // what the watch covers.
                Ok(list(self.conn(caller)?, prefix, limit, caller, max_bytes)?.0.digest)
            }
            _ => Err(ChannelError::Invalid(format!("a Redis channel cannot run {statement:?} again"))),
        }
    }

    /// Locks the save's keys, before any channel commits: a key changed
    /// since it was read, or held by another save, is a conflict here, when
    /// nothing anywhere is applied yet.
    fn prepare(&mut self) -> Result<(), ChannelError> {
        self.lock().map_err(|e| match e {
            ChannelError::Timeout => ChannelError::Unavailable(format!(
                "Redis did not answer within {} s when the save locked its keys",
                CONNECT_TIMEOUT.as_secs()
            )),
            e => e,
        })
    }

    /// Records this save's commit in the channel's outbox, in `into`
    /// (the save transaction of its `sql` channel), when it has one and
    /// the save writes ([`super::redis_journal`]).
    fn journal(&mut self, into: &mut dyn Transaction, caller: &Caller) -> Result<(), ChannelError> {
        let Some(outbox) = self.journal.clone() else { return Ok(()) };
        if self.order.is_empty() {
            return Ok(());
        }
        let record = redis_journal::Record {
            token: self.token.clone(),
            locks: self.keys(),
            writes: self.writes().into_iter().map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec))).collect(),
        };
        let service = self.writer.clone().unwrap_or_else(|| "host".into());
        self.recorded = Some(redis_journal::record(&outbox, into, &service, &record, caller)?);
        Ok(())
    }

    /// Makes the writes under the locks and drops them. Called after the
    /// data channels committed (`CommitStage::Effects`); a save that did
    /// not prepare locks first. A journaled commit that fails keeps its
    /// locks for the relay, which makes it while they hold.
    fn commit(mut self: Box<Self>) -> Result<(), ChannelError> {
        self.lock()?;
        if !self.locked {
            return Ok(());
        }
        let keys = self.keys();
        let mut conn =
            self.conn.take().ok_or_else(|| ChannelError::Unavailable("transaction already finished".into()))?;
        let journaled = self.recorded.is_some();
        let done = redis_commit::commit(&mut conn, &keys, &self.writes(), &self.token, journaled);
        self.locked = false;
        match (done, &self.recorded, &self.journal) {
            (Ok(Committed::Now | Committed::Before), Some(id), Some(outbox)) => {
                match outbox.delivered(id) {
                    Ok(()) => redis_commit::forget(&mut conn, &self.token),
                    Err(e) => tracing::warn!("a Redis commit could not be marked done in its outbox: {e}"),
                }
                Ok(())
            }
            (Ok(Committed::Now | Committed::Before), ..) => Ok(()),
            (Ok(Committed::LocksLost), ..) => Err(ChannelError::Unavailable(redis_commit::locks_lost())),
            (Err(e), Some(_), _) => Err(journaled_failure(e)),
            (Err(e), None, _) => {
                redis_commit::release(&mut conn, &keys, &self.token);
                Err(e)
            }
        }
    }
}

/// The transaction's keys for [`super::apply`]: each read watched first.
struct Watched<'a> {
    tx: &'a mut RedisTransaction,
    caller: &'a Caller,
}

impl super::Keys for Watched<'_> {
    fn current(&mut self, key: &str, max_bytes: usize) -> Result<Held, ChannelError> {
        self.tx.current(key, max_bytes, self.caller)
    }

    fn write(&mut self, key: &str, value: Option<Vec<u8>>) -> Result<(), ChannelError> {
        self.tx.write(key, value);
        Ok(())
    }
}

impl Drop for RedisTransaction {
    fn drop(&mut self) {
        // A connection goes back to the pool watching nothing, and a save
        // that prepared but will not commit gives its locks back.
        if let Some(mut conn) = self.conn.take() {
            // Briefly: a server that stopped answering gets the locks back
            // when they expire.
            let _ = bound(&conn, CLEANUP_WAIT);
            if self.locked {
                redis_commit::release(&mut conn, &self.keys(), &self.token);
            }
            let _ = redis::cmd("UNWATCH").exec(&mut *conn);
        }
    }
}

/// The failure of a journaled commit: the relay makes it from the outbox
/// while the keys' locks hold.
fn journaled_failure(e: ChannelError) -> ChannelError {
    let note =
        format!("the relay makes its writes from the outbox while the keys' locks hold ({} s)", LOCK_TTL.as_secs());
    match e {
        ChannelError::Unknown(why) => ChannelError::Unknown(format!("{why}; {note}")),
        ChannelError::Unavailable(why) => ChannelError::Unavailable(format!("{why}; {note}")),
        other => other,
    }
}
