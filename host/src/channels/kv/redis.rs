//! A `kv` channel on Redis (`url = "redis://HOST:PORT[/DB]"`).
//!
//! - Reads (`GET`; `SCAN` of the prefix, then `MGET`) run at once on a
//!   pooled connection whose read and write timeouts are what is left of
//!   the caller's deadline; a connection's opening, the pool's check and
//!   the host's own commands wait at most 5 s, so a server that stops
//!   answering holds no thread for longer.
//! - A save holds one connection. A kept read runs again there after
//!   `WATCH` of its keys. Every command is checked when it is applied: its
//!   key is watched and read, a compare-and-swap compared (a mismatch is a
//!   conflict), an increment's sum computed (a value that is not an integer,
//!   or an overflow, fails the save). The writes that result wait in the
//!   transaction.
//! - The commit comes after the data channels', made so that no concurrent
//!   save can refuse it then: the save's keys are locked when it prepares
//!   (a key that changed since it was watched, or is locked by another
//!   save, is a conflict with nothing applied), and the writes are made
//!   under those locks once the data committed ([`super::redis_commit`]).
//!   Nothing can fail inside them: every value was checked before.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Client, Connection, ConnectionLike as _};

use super::redis_commit::{self, Committed, HOST_PREFIX, LOCK_TTL};
use super::redis_journal;
use super::{Held, MAX_LIST, check_key, check_prefix, reading, value_rows};
use crate::bindings::{Rows, Value};
use crate::channels::outbox::Outbox;
use crate::channels::outbox::relay::Deliver;
use crate::channels::{Caller, Channel, ChannelError, CommitStage, KeyReads, Reading, Recheck, Transaction};
use crate::command::{Kind, Operation, Outcome};

pub(super) type Pool = r2d2::Pool<Manager>;
type Pooled = r2d2::PooledConnection<Manager>;

/// Makes the pool's connections, every one bounded in time: a server
/// that stops answering must not hold a caller past its deadline, nor
/// the pool's own check of a connection for ever.
#[derive(Debug)]
pub(super) struct Manager {
    client: Client,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = redis::RedisError;

    fn connect(&self) -> Result<Connection, redis::RedisError> {
        let conn = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        bound(&conn, CONNECT_TIMEOUT)?;
        Ok(conn)
    }

    /// Checked on every take, without a round trip (the client knows when
    /// its connection closed); the take starts with the host's own wait,
    /// until the caller sets its deadline.
    fn is_valid(&self, conn: &mut Connection) -> Result<(), redis::RedisError> {
        bound(conn, CONNECT_TIMEOUT)?;
        if conn.is_open() {
            return Ok(());
        }
        redis::cmd("PING").exec(conn)
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        !conn.is_open()
    }
}

/// Makes every read and write of `conn` wait at most `wait`.
fn bound(conn: &Connection, wait: Duration) -> Result<(), redis::RedisError> {
    conn.set_read_timeout(Some(wait))?;
    conn.set_write_timeout(Some(wait))
}

/// Connections a channel opens at most.
const POOL_SIZE: u32 = 16;
/// How long the host waits for a connection at start-up and for a save.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a save that will not commit waits to give its locks back.
const CLEANUP_WAIT: Duration = Duration::from_millis(500);
/// Keys one `SCAN` step asks for.
const SCAN_COUNT: usize = 1000;

/// A Redis server used as a `kv` channel.
pub struct RedisKv {
    name: String,
    pool: Pool,
    /// The outbox that records each save's commit in advance
    /// ([`super::redis_journal`]).
    journal: Option<Arc<Outbox>>,
}

impl RedisKv {
    /// Connects to the server a `redis://` URL names, checking at once
    /// that it answers.
    pub fn open(name: &str, url: &str, journal: Option<Arc<Outbox>>) -> Result<Self, ChannelError> {
        let client = Client::open(url).map_err(|e| ChannelError::Invalid(format!("url {url}: {e}")))?;
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            .build(Manager { client })
            .map_err(|e| ChannelError::Unavailable(format!("cannot connect to {url}: {e}")))?;
        Ok(RedisKv { name: name.to_string(), pool, journal })
    }

    /// What the relay of the channel's journal makes: the commits their
    /// saves did not.
    pub fn commits(&self) -> Arc<dyn Deliver> {
        Arc::new(redis_journal::Commits { pool: self.pool.clone() })
    }

    /// A pooled connection that gives up at `deadline`.
    fn take(&self, deadline: Instant) -> Result<Pooled, ChannelError> {
        let left = left(deadline)?;
        let conn =
            self.pool.get_timeout(left).map_err(|e| ChannelError::Unavailable(format!("no Redis connection: {e}")))?;
        bound(&conn, left).map_err(redis_error)?;
        Ok(conn)
    }

    fn recheck(&self, statement: &str, params: Vec<Value>, asked: String) -> Option<Recheck> {
        Some(Recheck { channel: self.name.clone(), statement: statement.into(), params, host: false, asked })
    }
}

/// What is left until `deadline`, or the deadline's error.
fn left(deadline: Instant) -> Result<Duration, ChannelError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ChannelError::Timeout);
    }
    Ok(left)
}

impl KeyReads for RedisKv {
    fn get(&self, key: &str, caller: &Caller, max_bytes: usize) -> Result<Reading, ChannelError> {
        check_key(caller, key, false)?;
        let mut conn = self.take(caller.deadline)?;
        let mut reading = get(&mut conn, key, max_bytes)?;
        reading.recheck = self.recheck("GET", vec![Value::Text(key.into())], format!("get {key}"));
        Ok(reading)
    }

    fn list(&self, prefix: &str, limit: u32, caller: &Caller, max_bytes: usize) -> Result<Reading, ChannelError> {
        check_prefix(caller, prefix)?;
        let limit = limit.min(MAX_LIST);
        let mut conn = self.take(caller.deadline)?;
        let (mut reading, _) = list(&mut conn, prefix, limit, caller, max_bytes)?;
        let params = vec![Value::Text(prefix.into()), Value::Integer(limit.into())];
        reading.recheck = self.recheck("LIST", params, format!("list {prefix} (at most {limit})"));
        Ok(reading)
    }
}

impl Channel for RedisKv {
    fn kind(&self) -> Kind {
        Kind::Kv
    }

    fn keys(&self) -> Option<&dyn KeyReads> {
        Some(self)
    }

    /// After the data channels: a concurrent change is refused when the
    /// save prepares, before anything commits, and a data channel that
    /// fails to commit leaves Redis untouched.
    fn commit_stage(&self) -> CommitStage {
        CommitStage::Effects
    }

    fn check_command(&self, op: &Operation, caller: &Caller) -> Result<(), ChannelError> {
        match op.key() {
            Some(key) => check_key(caller, key, true),
            None => Err(crate::channels::wrong_kind(Kind::Kv, op.kind(), &op.describe())),
        }
    }

    fn begin(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        let conn = self.take(Instant::now() + CONNECT_TIMEOUT)?;
        Ok(Box::new(RedisTransaction {
            conn: Some(conn),
            pending: HashMap::new(),
            order: Vec::new(),
            watched: BTreeSet::new(),
            token: uuid::Uuid::new_v4().simple().to_string(),
            locked: false,
            journal: self.journal.clone(),
            writer: None,
            recorded: None,
        }))
    }

    fn journal(&self) -> Option<&str> {
        self.journal.as_deref().map(Outbox::base_name)
    }
}

/// `GET key` as a reading: a `value` column, no row or one. At most
/// `max_bytes` of the value (and one more, to tell a longer one) is ever
/// sent: `GETRANGE`, then `EXISTS` when that is empty.
fn get(conn: &mut Connection, key: &str, max_bytes: usize) -> Result<Reading, ChannelError> {
    let head: Vec<u8> = redis::cmd("GETRANGE").arg(key).arg(0).arg(max_bytes).query(conn).map_err(redis_error)?;
    if head.len() > max_bytes {
        return Err(ChannelError::TooLarge { bytes: head.len() });
    }
    let value = if !head.is_empty() || redis::cmd("EXISTS").arg(key).query(conn).map_err(redis_error)? {
        Some(head)
    } else {
        None
    };
    reading(value_rows(value), max_bytes)
}

/// The values of `KEYS` (as `MGET`), unless the keys and their values come
/// to more than `ARGV[1]` bytes: then `{total}` and nothing is sent. One
/// script, so that no value can grow between the count and the read.
const MGET_WITHIN: &str = r"
local total = 0
for _, key in ipairs(KEYS) do
    local ok, length = pcall(redis.call, 'STRLEN', key)
    total = total + string.len(key) + (ok and length or 0)
end
if total > tonumber(ARGV[1]) then return {total} end
return {total, redis.call('MGET', unpack(KEYS))}
";

/// The values of `keys`, or `TooLarge` before any is sent when they and
/// the keys come to more than `max_bytes`.
fn values_within(
    conn: &mut Connection,
    keys: &[String],
    max_bytes: usize,
) -> Result<Vec<Option<Vec<u8>>>, ChannelError> {
    let answer: redis::Value =
        redis::Script::new(MGET_WITHIN).key(keys).arg(max_bytes).invoke(conn).map_err(redis_error)?;
    let malformed = || ChannelError::Unavailable("redis: the script of a list answered something else".into());
    let redis::Value::Array(mut parts) = answer else { return Err(malformed()) };
    let total = match parts.first() {
        Some(redis::Value::Int(total)) => usize::try_from(*total).unwrap_or(usize::MAX),
        _ => return Err(malformed()),
    };
    if parts.len() < 2 {
        return Err(ChannelError::TooLarge { bytes: total });
    }
    redis::from_redis_value(parts.swap_remove(1)).map_err(|e| ChannelError::Unavailable(format!("redis: {e}")))
}

/// The keys under `prefix` (at most `limit`, in byte order) with their
/// values, as a reading of `key` and `value` columns; and the keys.
fn list(
    conn: &mut Connection,
    prefix: &str,
    limit: u32,
    caller: &Caller,
    max_bytes: usize,
) -> Result<(Reading, Vec<String>), ChannelError> {
    let pattern = format!("{}*", escape_glob(prefix));
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        bound(conn, left(caller.deadline)?).map_err(redis_error)?;
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query(conn)
            .map_err(redis_error)?;
        // The host's own keys (a save's locks) are no service's to list.
        keys.extend(batch.into_iter().filter(|k| !k.starts_with(HOST_PREFIX)));
        if keys.iter().map(String::len).sum::<usize>() > max_bytes {
            return Err(ChannelError::TooLarge { bytes: keys.iter().map(String::len).sum() });
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    keys.truncate(limit as usize);
    let values = if keys.is_empty() { Vec::new() } else { values_within(conn, &keys, max_bytes)? };
    let mut listed = Vec::new();
    let mut rows = Vec::new();
    for (key, value) in keys.into_iter().zip(values) {
        // A key removed between the scan and the values is not listed.
        if let Some(value) = value {
            rows.push(vec![Value::Text(key.clone()), Value::Blob(value)]);
            listed.push(key);
        }
    }
    let reading = reading(Rows { columns: vec!["key".into(), "value".into()], values: rows }, max_bytes)?;
    Ok((reading, listed))
}

/// `prefix` with Redis's glob characters escaped, to match itself only.
fn escape_glob(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One save's connection, the keys it watches and the writes it will make.
struct RedisTransaction {
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

pub(super) fn redis_error(e: redis::RedisError) -> ChannelError {
    if e.is_timeout() {
        return ChannelError::Timeout;
    }
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        return ChannelError::Unavailable(format!("Redis: {e}"));
    }
    ChannelError::Invalid(format!("Redis: {e}"))
}

#[cfg(test)]
#[path = "redis_tests.rs"]
mod tests;
