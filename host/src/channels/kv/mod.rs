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
//!   in one `MULTI`/`EXEC` after the data channels committed.

pub mod redis;
pub mod table;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Caller, Channel, ChannelError, Denial};
use crate::manifest::ChannelGrant;

/// The most keys one `list` returns, whatever the limit asked.
pub const MAX_LIST: u32 = 1000;

/// Opens the `kv` channel `name` at `url`; `open` holds the channels opened
/// so far (a `sql:NAME` url names one of them).
pub fn open(
    name: &str,
    url: &str,
    open: &BTreeMap<String, Arc<dyn Channel>>,
) -> Result<Arc<dyn Channel>, ChannelError> {
    if let Some(base) = url.strip_prefix("sql:") {
        let Some(channel) = open.get(base) else {
            let known: Vec<&str> = open.keys().map(String::as_str).collect();
            return Err(ChannelError::Invalid(format!(
                "url {url:?} names no sql channel {base:?}; the host has: {}",
                known.join(", ")
            )));
        };
        return Ok(Arc::new(table::TableKv::open(name, base, Arc::clone(channel))?));
    }
    if url.starts_with("redis://") {
        return Ok(Arc::new(redis::RedisKv::open(name, url)?));
    }
    Err(ChannelError::Invalid(format!(
        "url {url:?} is not supported for a kv channel; use sql:CHANNEL (a table of that sql channel) or \
         redis://HOST:PORT"
    )))
}

/// Checks that `caller` may read (`write` false) or write `key`: a granted
/// prefix covers it. The host itself may do anything.
pub(crate) fn check_key(caller: &Caller, key: &str, write: bool) -> Result<(), ChannelError> {
    crate::command::check_key(key).map_err(ChannelError::Invalid)?;
    if caller.host || caller.grant.as_deref().is_some_and(|g| covers(g, key, write)) {
        return Ok(());
    }
    Err(ChannelError::Denied(Denial::Key { write, key: key.to_string() }))
}

/// Checks that `caller` may list the keys under `prefix`: one granted
/// prefix covers every key that starts with it.
pub(crate) fn check_prefix(caller: &Caller, prefix: &str) -> Result<(), ChannelError> {
    if prefix.len() > crate::command::MAX_KEY_BYTES {
        return Err(ChannelError::Invalid(format!(
            "the prefix is {} bytes; at most {} are allowed",
            prefix.len(),
            crate::command::MAX_KEY_BYTES
        )));
    }
    if caller.host || caller.grant.as_deref().is_some_and(|g| covers(g, prefix, false)) {
        return Ok(());
    }
    Err(ChannelError::Denied(Denial::Key { write: false, key: prefix.to_string() }))
}

/// Whether `grant` covers `key` (and so every key it prefixes): `keys`
/// for a write, `keys` or `read-keys` for a read.
fn covers(grant: &ChannelGrant, key: &str, write: bool) -> bool {
    grant.keys.allows(key) || (!write && grant.read_keys.allows(key))
}

/// The integer a counter's value holds: decimal text, as Redis keeps it;
/// none counts as 0.
pub(crate) fn counter(key: &str, value: Option<&[u8]>) -> Result<i64, ChannelError> {
    let Some(bytes) = value else { return Ok(0) };
    std::str::from_utf8(bytes).ok().and_then(|t| t.parse::<i64>().ok()).ok_or_else(|| {
        ChannelError::Invalid(format!("key {key} holds {} bytes that are not a decimal integer", bytes.len()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn caller(manifest: &str) -> Caller {
        let grant: ChannelGrant = toml::from_str(manifest).unwrap_or_default();
        Caller::service("svc", Some(Arc::new(grant)), Instant::now() + Duration::from_secs(1))
    }

    #[test]
    fn prefixes_grant_reads_and_writes() {
        let c = caller("keys = [\"cart/\"]\nread-keys = [\"prices/\"]");
        assert!(check_key(&c, "cart/ann", true).is_ok());
        assert!(check_key(&c, "prices/1", false).is_ok());
        assert!(matches!(check_key(&c, "prices/1", true), Err(ChannelError::Denied(Denial::Key { write: true, .. }))));
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
