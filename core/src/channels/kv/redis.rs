//! A `kv` channel on Redis (`url = "redis://HOST:PORT[/DB]"`).
//!
//! - Reads (`GET`; `SCAN` of the prefix, then `MGET`) run at once on a
//!   pooled connection whose read and write timeouts are what is left of
//!   the caller's deadline; a connection's opening and the host's own
//!   commands wait at most 5 s, the pool's check of a connection 250 ms,
//!   so a server that stops answering holds no thread for longer.
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

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Client, Connection, ConnectionLike as _};

use super::redis_commit::HOST_PREFIX;
use super::redis_journal;
use super::redis_save::RedisTransaction;
use super::{MAX_LIST, check_key, check_prefix, reading, value_rows};
use crate::bindings::{Rows, Value};
use crate::channels::ops::{Kind, Operation};
use crate::channels::outbox::Outbox;
use crate::channels::outbox::relay::Deliver;
use crate::channels::{Caller, Channel, ChannelError, CommitStage, KeyReads, Reading, Recheck, Transaction};

pub(super) type Pool = r2d2::Pool<Manager>;
pub(super) type Pooled = r2d2::PooledConnection<Manager>;

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

    /// Checked on every take with a `PING` (a connection the server closed,
    /// as when it restarted, would fail the scope's first command) that
    /// waits at most [`PING_WAIT`]: the pool checks its idle connections
    /// one after another, whatever the caller's deadline. The take then
    /// starts with the host's own wait, until the caller sets its deadline.
    fn is_valid(&self, conn: &mut Connection) -> Result<(), redis::RedisError> {
        bound(conn, PING_WAIT)?;
        redis::cmd("PING").exec(conn)?;
        bound(conn, CONNECT_TIMEOUT)
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        !conn.is_open()
    }
}

/// Makes every read and write of `conn` wait at most `wait`.
pub(super) fn bound(conn: &Connection, wait: Duration) -> Result<(), redis::RedisError> {
    conn.set_read_timeout(Some(wait))?;
    conn.set_write_timeout(Some(wait))
}

/// Connections a channel opens at most.
const POOL_SIZE: u32 = 16;
/// How long the host waits for a connection at start-up and for a save.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest the pool's check of a connection waits for its `PING`.
const PING_WAIT: Duration = Duration::from_millis(250);
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
pub(super) fn left(deadline: Instant) -> Result<Duration, ChannelError> {
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
        crate::channels::kv::KIND
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
        super::check_command(op, caller).map(drop)
    }

    fn begin(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        let conn = self.take(Instant::now() + CONNECT_TIMEOUT)?;
        Ok(Box::new(RedisTransaction::new(conn, self.journal.clone())))
    }

    fn journal(&self) -> Option<&str> {
        self.journal.as_deref().map(Outbox::base_name)
    }
}

/// `GET key` as a reading: a `value` column, no row or one. At most
/// `max_bytes` of the value (and one more, to tell a longer one) is ever
/// sent: `GETRANGE`, then `EXISTS` when that is empty.
pub(super) fn get(conn: &mut Connection, key: &str, max_bytes: usize) -> Result<Reading, ChannelError> {
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
pub(super) fn list(
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
