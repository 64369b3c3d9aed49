//! The `kv` channel kind: keys and values, read at once (`from.get`,
//! `from.list`) and written by commands applied at save (`to.set`,
//! `to.remove`, `to.compare-and-swap`, `to.increment`).
//!
//! Grants are key prefixes (`keys`, `read-keys` in a manifest), checked by
//! the channel itself on every read and every command as it is queued.
//! Two backends:
//! - [`table`]: a table of a `sql` channel (`url = "sql:main"`), whose save
//!   transaction applies the commands, so that keys and rows commit
//!   together;
//! - [`redis`]: a Redis server (`url = "redis://…"`), whose commands apply
//!   in one script after the data channels committed, recorded in advance
//!   in an outbox when the channel has one ([`redis_journal`]).

pub mod grant;
pub mod ops;
pub mod redis;
mod redis_commit;
pub mod redis_journal;
mod redis_save;
pub mod table;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::outbox::Outbox;
use super::outbox::relay::Deliver;
use super::{Caller, Channel, ChannelError, Denial, Opening, Reading};
use crate::bindings::{Rows, Value};
use crate::channels::kv::ops::KvOp;
use crate::channels::ops::{Kind, Operation, Outcome};

/// The `kv` kind.
pub const KIND: Kind = Kind::named("kv");

/// The most keys one `list` returns, whatever the limit asked.
pub const MAX_LIST: u32 = 1000;

/// A `kv` channel's section of `sluice.toml`.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KvConfig {
    /// Where the keys are: `sql:NAME` keeps them in a table of the `sql`
    /// channel `NAME` (they commit in its transaction),
    /// `redis://HOST:PORT` in Redis.
    pub url: String,
    /// For Redis: a `sql` channel whose save transactions record each
    /// commit's writes in advance, so that writes a save could not make
    /// after its data committed (Redis failed, the host was killed) are
    /// made by the relay (optional).
    pub outbox: Option<String>,
}

impl super::KindConfig for KvConfig {
    /// The `sql` channel this one needs open first.
    fn depends_on(&self) -> Option<&str> {
        self.url.strip_prefix("sql:").or(self.outbox.as_deref())
    }

    /// Opens the channel, with its journal's relay when it has one.
    fn open(&self, at: &mut Opening<'_>) -> Result<Arc<dyn Channel>, ChannelError> {
        let journal = self.outbox.as_deref().map(|base| at.outbox(base)).transpose()?;
        let (opened, commits) = open(at.name(), &self.url, at.opened(), journal.clone())?;
        if let (Some(journal), Some(commits)) = (journal, commits) {
            at.relay(&journal, commits, &Arc::default());
        }
        Ok(opened)
    }
}

/// A kv channel, and the relay's part of it when it has one (a Redis
/// channel's journal).
pub type Opened = (Arc<dyn Channel>, Option<Arc<dyn Deliver>>);

/// Opens the `kv` channel `name` at `url`; `open` holds the channels opened
/// so far (a `sql:NAME` url names one of them); `journal` is the outbox of
/// a Redis channel that has one.
pub fn open(
    name: &str,
    url: &str,
    open: &BTreeMap<String, Arc<dyn Channel>>,
    journal: Option<Arc<Outbox>>,
) -> Result<Opened, ChannelError> {
    if journal.is_some() && !url.starts_with("redis://") {
        return Err(ChannelError::Invalid(
            "an outbox is for a kv channel on Redis; keys in a sql table commit with its channel already".into(),
        ));
    }
    if let Some(base) = url.strip_prefix("sql:") {
        let Some(channel) = open.get(base) else {
            let known: Vec<&str> = open.keys().map(String::as_str).collect();
            return Err(ChannelError::Invalid(format!(
                "url {url:?} names no sql channel {base:?}; the host has: {}",
                known.join(", ")
            )));
        };
        return Ok((Arc::new(table::TableKv::open(name, base, Arc::clone(channel))?), None));
    }
    if url.starts_with("redis://") {
        let journaled = journal.is_some();
        if !journaled {
            tracing::warn!(
                "channel {name}: Redis without an outbox: a host killed (or Redis failing) between a save's data \
                 commit and its Redis commit loses the Redis writes; set outbox = \"<a sql channel>\" to have the \
                 relay make them (docs/channels.md)"
            );
        }
        let opened = Arc::new(redis::RedisKv::open(name, url, journal)?);
        let commits = journaled.then(|| opened.commits());
        return Ok((opened, commits));
    }
    Err(ChannelError::Invalid(format!(
        "url {url:?} is not supported for a kv channel; use sql:CHANNEL (a table of that sql channel) or \
         redis://HOST:PORT"
    )))
}

/// Checks that `caller` may read (`write` false) or write `key`: a granted
/// prefix covers it. The host itself may do anything.
pub fn check_key(caller: &Caller, key: &str, write: bool) -> Result<(), ChannelError> {
    crate::channels::kv::ops::check_key(key).map_err(ChannelError::Invalid)?;
    host_key(caller, key)?;
    if caller.host || caller.grant.as_deref().is_some_and(|g| g.kv.covers(key, write)) {
        return Ok(());
    }
    Err(ChannelError::Denied(key_denied(key, write)))
}

/// The refusal of reading (`write` false) or writing `key`, or listing
/// under it, with the line that grants it.
fn key_denied(key: &str, write: bool) -> Denial {
    let (verb, manifest_key) = if write { ("write", "keys") } else { ("read", "read-keys") };
    Denial::ungranted(format!("{verb} key {key}"), format!("{manifest_key} = [{key:?}]"))
}

/// The gate of the `kv` kind's commands as they are queued, shared by every
/// store of the kind (a table, Redis, a directory): a command of another
/// kind is refused, and its key needs a prefix granted for writing. Returns
/// the key.
pub fn check_command<'a>(op: &'a Operation, caller: &Caller) -> Result<&'a str, ChannelError> {
    let Operation::Kv(op) = op else {
        return Err(super::wrong_kind(KIND, op.kind(), &op.describe()));
    };
    check_key(caller, op.written(), true)?;
    Ok(op.written())
}

/// Checks that `caller` may list the keys under `prefix`: one granted
/// prefix covers every key that starts with it.
pub fn check_prefix(caller: &Caller, prefix: &str) -> Result<(), ChannelError> {
    if prefix.len() > crate::channels::kv::ops::MAX_KEY_BYTES {
        return Err(ChannelError::Invalid(format!(
            "the prefix is {} bytes; at most {} are allowed",
            prefix.len(),
            crate::channels::kv::ops::MAX_KEY_BYTES
        )));
    }
    host_key(caller, prefix)?;
    if caller.host || caller.grant.as_deref().is_some_and(|g| g.kv.covers(prefix, false)) {
        return Ok(());
    }
    Err(ChannelError::Denied(key_denied(prefix, false)))
}

/// Refuses a service a key (or prefix) under `sluice:`, the host's own on
/// every kv kind (a Redis save's locks live there): no grant covers it,
/// not even `"*"`.
fn host_key(caller: &Caller, key: &str) -> Result<(), ChannelError> {
    if !caller.host && key.starts_with(redis_commit::HOST_PREFIX) {
        return Err(ChannelError::Denied(Denial::Never(format!(
            "use key {key} (keys under {} are the host's own)",
            redis_commit::HOST_PREFIX
        ))));
    }
    Ok(())
}

/// The integer a counter's value holds: decimal text, as Redis keeps it;
/// none counts as 0.
pub fn counter(key: &str, value: Option<&[u8]>) -> Result<i64, ChannelError> {
    let Some(bytes) = value else { return Ok(0) };
    std::str::from_utf8(bytes).ok().and_then(|t| t.parse::<i64>().ok()).ok_or_else(|| {
        ChannelError::Invalid(format!("key {key} holds {} bytes that are not a decimal integer", bytes.len()))
    })
}

/// A save's view of a key-value store: what a key holds with the save's
/// writes so far, and a write (`None` removes). [`apply`] builds every kv
/// command on these two.
pub trait Keys {
    /// What `key` holds now, with this save's writes: its value when it is
    /// at most `max_bytes` long, [`Held::Longer`] otherwise, found without
    /// reading the value (a command reads no more than it needs).
    fn current(&mut self, key: &str, max_bytes: usize) -> Result<Held, ChannelError>;
    /// Sets (`Some`) or removes (`None`) `key` in this save.
    fn write(&mut self, key: &str, value: Option<Vec<u8>>) -> Result<(), ChannelError>;
}

/// What a key holds, read no further than a command needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// The key is not set.
    Unset,
    /// Its value, no longer than was asked.
    Value(Vec<u8>),
    /// A value longer than was asked, left unread.
    Longer,
}

impl Held {
    /// `Held` of an optional value in memory, asked for at most `max_bytes`.
    pub fn of(value: Option<&[u8]>, max_bytes: usize) -> Held {
        match value {
            None => Held::Unset,
            Some(v) if v.len() > max_bytes => Held::Longer,
            Some(v) => Held::Value(v.to_vec()),
        }
    }
}

/// The most bytes a counter's value may hold: a sign and 19 digits.
const COUNTER_BYTES: usize = 20;

/// Applies one kv command through `keys`: a compare-and-swap that finds
/// another value is a conflict; an increment of a value that is not a
/// decimal integer, or that overflows, is invalid. The outcome is the
/// number of keys changed (a remove of an unset key changes none).
pub fn apply(keys: &mut dyn Keys, op: &Operation) -> Result<Outcome, ChannelError> {
    let changed = match op {
        Operation::Kv(KvOp::Set { key, value }) => {
            keys.write(key, Some(value.clone()))?;
            1
        }
        Operation::Kv(KvOp::Remove { key }) => {
            let was = keys.current(key, 0)? != Held::Unset;
            keys.write(key, None)?;
            u64::from(was)
        }
        Operation::Kv(KvOp::Swap { key, expected, value }) => {
            // A value longer than the expected one differs from it unread.
            let now = keys.current(key, expected.as_ref().map_or(0, Vec::len))?;
            let same = match (&now, expected) {
                (Held::Unset, None) => true,
                (Held::Value(now), Some(expected)) => now == expected,
                _ => false,
            };
            if !same {
                return Err(ChannelError::Conflict(format!("{key} no longer holds what compare-and-swap expected")));
            }
            keys.write(key, value.clone())?;
            1
        }
        Operation::Kv(KvOp::Increment { key, by }) => {
            let now = match keys.current(key, COUNTER_BYTES)? {
                Held::Unset => 0,
                Held::Value(bytes) => counter(key, Some(&bytes))?,
                Held::Longer => {
                    return Err(ChannelError::Invalid(format!(
                        "key {key} holds more than {COUNTER_BYTES} bytes: not a decimal integer"
                    )));
                }
            };
            let sum = now.checked_add(*by).ok_or_else(|| {
                ChannelError::Invalid(format!("{key} holds {now}; adding {by} overflows a 64-bit integer"))
            })?;
            keys.write(key, Some(sum.to_string().into_bytes()))?;
            1
        }
        other => return Err(super::wrong_kind(crate::channels::kv::KIND, other.kind(), &other.describe())),
    };
    Ok(Outcome::Affected(changed))
}

/// Rows read from a store that is not SQL, as a reading digested the way
/// every channel digests its rows, within `max_bytes`.
pub fn reading(rows: Rows, max_bytes: usize) -> Result<Reading, ChannelError> {
    use std::hash::{Hash as _, Hasher as _};
    let mut digest = super::digester();
    rows.columns.hash(&mut digest);
    let mut bytes = rows.columns.iter().map(String::len).sum::<usize>();
    for row in &rows.values {
        bytes += 8;
        digest.write_u8(super::DIGEST_ROW);
        for value in row {
            bytes += super::digest_value(&mut digest, value);
        }
    }
    if bytes > max_bytes {
        return Err(ChannelError::TooLarge { bytes });
    }
    Ok(Reading { rows, digest: digest.finish(), tables: Vec::new(), volatile: false, recheck: None })
}

/// A `get`'s rows: a `value` column, no row or one.
pub fn value_rows(value: Option<Vec<u8>>) -> Rows {
    Rows { columns: vec!["value".into()], values: value.into_iter().map(|v| vec![Value::Blob(v)]).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn caller(manifest: &str) -> Caller {
        let grant: crate::channels::grant::ChannelGrant = toml::from_str(manifest).unwrap_or_default();
        Caller::service("svc", Some(Arc::new(grant)), Instant::now() + Duration::from_secs(1))
    }

    #[test]
    fn prefixes_grant_reads_and_writes() {
        let c = caller("keys = [\"cart/\"]\nread-keys = [\"prices/\"]");
        assert!(check_key(&c, "cart/ann", true).is_ok());
        assert!(check_key(&c, "prices/1", false).is_ok());
        assert!(matches!(check_key(&c, "prices/1", true), Err(ChannelError::Denied(Denial::Ungranted { .. }))));
        assert!(check_key(&c, "carts", false).is_err());
        assert!(check_prefix(&c, "cart/ann/").is_ok());
        assert!(check_prefix(&c, "car").is_err(), "a shorter prefix reaches ungranted keys");
        assert!(matches!(check_key(&c, "", false), Err(ChannelError::Invalid(_))));
        assert!(check_key(&caller("keys = \"*\""), "anything", true).is_ok());
        assert_eq!(counter("k", Some(b"41")), Ok(41));
        assert_eq!(counter("k", None), Ok(0));
        assert!(counter("k", Some(b"4x")).is_err());
    }
}
