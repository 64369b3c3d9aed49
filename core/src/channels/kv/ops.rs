//! The `kv` kind's commands: `set`, `remove`, `compare-and-swap` and
//! `increment`, each on one key.

use serde::Serialize;

use crate::channels::ops::{Family, Kind, bytes_json};

/// A command of a `kv` channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum KvOp {
    /// Set a key.
    Set {
        /// The key.
        key: String,
        /// Its new value.
        #[serde(serialize_with = "bytes_json")]
        value: Vec<u8>,
    },
    /// Remove a key.
    Remove {
        /// The key.
        key: String,
    },
    /// Replace a key's value on condition that it holds `expected`.
    Swap {
        /// The key.
        key: String,
        /// What it must hold (`None`: not set).
        #[serde(serialize_with = "maybe_bytes_json")]
        expected: Option<Vec<u8>>,
        /// What it then holds (`None`: removed).
        #[serde(serialize_with = "maybe_bytes_json")]
        value: Option<Vec<u8>>,
    },
    /// Add to the decimal integer a key holds.
    Increment {
        /// The key.
        key: String,
        /// What to add.
        by: i64,
    },
}

/// The longest key a `kv` command or read may name.
pub const MAX_KEY_BYTES: usize = 1024;

/// Checks a key of a `kv` channel: not empty, at most [`MAX_KEY_BYTES`].
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("the key is {} bytes; at most {MAX_KEY_BYTES} are allowed", key.len()));
    }
    Ok(())
}

impl KvOp {
    /// The key it writes.
    pub fn written(&self) -> &str {
        match self {
            KvOp::Set { key, .. } | KvOp::Remove { key } | KvOp::Swap { key, .. } | KvOp::Increment { key, .. } => key,
        }
    }
}

impl Family for KvOp {
    fn kind(&self) -> Kind {
        super::KIND
    }

    fn check(&self) -> Result<(), String> {
        check_key(self.written())
    }

    fn describe(&self) -> String {
        match self {
            KvOp::Set { key, value } => format!("set {key} ({} bytes)", value.len()),
            KvOp::Remove { key } => format!("remove {key}"),
            KvOp::Swap { key, expected, value } => {
                let state =
                    |v: &Option<Vec<u8>>| v.as_ref().map_or("unset".to_string(), |b| format!("{} bytes", b.len()));
                format!("compare-and-swap {key} ({} to {})", state(expected), state(value))
            }
            KvOp::Increment { key, by } => format!("increment {key} by {by}"),
        }
    }

    fn size(&self) -> usize {
        match self {
            KvOp::Set { key, value } => key.len() + value.len(),
            KvOp::Remove { key } => key.len(),
            KvOp::Swap { key, expected, value } => {
                key.len() + expected.as_ref().map_or(1, Vec::len) + value.as_ref().map_or(1, Vec::len)
            }
            KvOp::Increment { key, .. } => key.len() + 8,
        }
    }
}

fn maybe_bytes_json<S: serde::Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(b) => bytes_json(b, s),
        None => s.serialize_none(),
    }
}
