//! The `kv` kind's section of a channel grant: the key prefixes a service
//! may read and write, and those it may only read.

use crate::channels::grant::{GrantSection, Prefixes};

/// What a service may do on a `kv` channel (`[channels.NAME]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KvGrant {
    /// Key prefixes it may read and write (`["cart/"]`; `"*"` for every
    /// key).
    pub keys: Prefixes,
    /// Key prefixes it may only read.
    pub read_keys: Prefixes,
}

impl KvGrant {
    /// Whether it may read (`write` false) or write `key`.
    pub fn covers(&self, key: &str, write: bool) -> bool {
        self.keys.allows(key) || (!write && self.read_keys.allows(key))
    }
}

impl GrantSection for KvGrant {
    const KEYS: &'static [&'static str] = &["keys", "read-keys"];

    fn read<'de, D: serde::Deserializer<'de>>(&mut self, key: &str, value: D) -> Result<(), D::Error> {
        use serde::Deserialize as _;
        match key {
            "keys" => self.keys = Prefixes::deserialize(value)?,
            "read-keys" => self.read_keys = Prefixes::deserialize(value)?,
            _ => {}
        }
        Ok(())
    }

    fn summary(&self, parts: &mut Vec<String>) {
        for (key, prefixes) in [("reads and writes keys", &self.keys), ("reads keys", &self.read_keys)] {
            if !prefixes.is_empty() {
                parts.push(format!("{key} {}", prefixes.describe()));
            }
        }
    }
}
