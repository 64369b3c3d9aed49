//! Reads a scope made, kept so that its save can check they still hold:
//! each is run again inside the save's transaction and its digest compared
//! (see `scope/validate.rs`).

use std::collections::HashSet;
use std::hash::{Hash as _, Hasher as _};

use serde::Serialize;

use crate::bindings::Value;
use crate::command::value_size;

pub use crate::config::Isolation;

/// One read kept for the save.
#[derive(Debug, Clone, Serialize)]
pub struct Read {
    /// The channel it read.
    pub channel: String,
    /// The service that made it.
    pub service: String,
    /// The calls that led to it, outermost first.
    pub chain: Vec<String>,
    /// The statement.
    pub sql: String,
    /// Its parameters.
    #[serde(skip)]
    pub params: Vec<Value>,
    /// Whether it runs as the host: a `kv` read of a table, whose grant the
    /// kv channel checked ([`crate::channels::Recheck`]).
    #[serde(skip)]
    pub host: bool,
    /// The read as the service asked it, when that is not `sql`
    /// (`get cart/ann/1 on kv`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asked: Option<String>,
    /// The digest of the rows it returned.
    pub digest: u64,
}

impl Read {
    /// `` `SELECT …` by orders.place → inventory.reserve on main ``.
    pub fn describe(&self) -> String {
        if let Some(asked) = &self.asked {
            return format!("`{asked}` by {}", self.chain.join(" → "));
        }
        let mut sql: String = self.sql.split_whitespace().collect::<Vec<_>>().join(" ");
        if let Some((cut, _)) = sql.char_indices().nth(200) {
            sql.truncate(cut);
            sql.push('…');
        }
        format!("`{sql}` with {} param(s) by {} on {}", self.params.len(), self.chain.join(" → "), self.channel)
    }

    /// About how many bytes it holds.
    pub fn size(&self) -> usize {
        self.sql.len() + self.params.iter().map(value_size).sum::<usize>() + self.channel.len()
    }
}

/// The reads of one scope, in order, each once.
#[derive(Debug, Default)]
pub struct ReadSet {
    reads: Vec<Read>,
    /// (key, digest) of each read kept: the same statement with the same
    /// parameters and rows is kept once.
    seen: HashSet<(u64, u64)>,
}

impl ReadSet {
    /// Keeps `read` unless the same read with the same rows is kept already.
    /// Returns whether it was added.
    pub fn add(&mut self, read: Read) -> bool {
        let mut key = crate::channels::digester();
        read.channel.hash(&mut key);
        read.sql.hash(&mut key);
        for param in &read.params {
            match param {
                Value::Null => key.write_u8(0),
                Value::Integer(i) => (1u8, i).hash(&mut key),
                Value::Real(f) => (2u8, f.to_bits()).hash(&mut key),
                Value::Text(t) => (3u8, t).hash(&mut key),
                Value::Blob(b) => (4u8, b).hash(&mut key),
            }
        }
        if !self.seen.insert((key.finish(), read.digest)) {
            return false;
        }
        self.reads.push(read);
        true
    }

    /// The reads, in the order they were made.
    pub fn reads(&self) -> &[Read] {
        &self.reads
    }

    /// The channels read, sorted, each once.
    pub fn channels(&self) -> std::collections::BTreeSet<&str> {
        self.reads.iter().map(|r| r.channel.as_str()).collect()
    }
}
