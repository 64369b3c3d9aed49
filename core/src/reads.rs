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
    pub chain: std::sync::Arc<[String]>,
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

/// A read as a recorded scope keeps it ([`Tape`]): what was asked and the
/// rows it returned, for a test to answer the same read again without the
/// channel.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Taped {
    /// The service that made it.
    pub service: String,
    /// The calls that led to it, outermost first.
    pub chain: Vec<String>,
    /// The channel it read.
    pub channel: String,
    /// What was asked.
    #[serde(flatten)]
    pub asked: Asked,
    /// The rows it returned: column names, then values (a blob as an array
    /// of bytes).
    pub rows: serde_json::Value,
}

/// What one read asked, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "read", rename_all = "kebab-case")]
pub enum Asked {
    /// `from.query`.
    Query {
        /// The statement.
        statement: String,
        /// Its parameters, as JSON values.
        params: Vec<serde_json::Value>,
    },
    /// `from.get`.
    Get {
        /// The key.
        key: String,
    },
    /// `from.list`.
    List {
        /// The prefix.
        prefix: String,
        /// The most keys asked for.
        limit: u32,
    },
    /// `from.fetch`: the request as the service gave it (never the
    /// credentials the host attaches).
    Fetch {
        /// The method.
        method: String,
        /// The path under the channel's base, with its query.
        path: String,
        /// The service's headers.
        headers: Vec<(String, String)>,
        /// The body, as an array of bytes.
        body: Vec<u8>,
    },
}

/// What a scope being recorded did that a test needs: its reads with their
/// rows, and its calls between services, in order.
#[derive(Debug, Clone, Default)]
pub struct Tape {
    /// The reads, in order.
    pub reads: Vec<Taped>,
    /// The calls one service made into another, in the order they returned.
    pub calls: Vec<serde_json::Value>,
    /// About how many bytes it holds.
    pub bytes: usize,
    /// Whether it stopped at [`TAPE_CAP`]: the scope is not recorded.
    pub full: bool,
}

/// The most a recorded scope's tape holds; past it the scope runs on, and
/// is not recorded (recording never changes what a scope does).
pub const TAPE_CAP: usize = 16 << 20;

impl Tape {
    /// Whether `bytes` more fit; marks it full when they do not.
    pub fn room(&mut self, bytes: usize) -> bool {
        if self.full || self.bytes + bytes > TAPE_CAP {
            self.full = true;
            return false;
        }
        self.bytes += bytes;
        true
    }
}

/// Rows as JSON: `{"columns": [...], "values": [[...], ...]}`.
pub fn rows_json(rows: &crate::bindings::Rows) -> serde_json::Value {
    let values: Vec<serde_json::Value> = rows
        .values
        .iter()
        .map(|row| serde_json::Value::Array(row.iter().map(crate::command::value_json).collect()))
        .collect();
    serde_json::json!({ "columns": rows.columns, "values": values })
}

/// A value from its JSON form ([`crate::command::value_json`]): an integer,
/// a float, a string (text), an array of bytes (a blob) or null.
pub fn json_value(json: &serde_json::Value) -> Option<Value> {
    Some(match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Integer(i64::from(*b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64()?),
        },
        serde_json::Value::String(s) => Value::Text(s.clone()),
        serde_json::Value::Array(bytes) => {
            Value::Blob(bytes.iter().map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok())).collect::<Option<_>>()?)
        }
        serde_json::Value::Object(_) => return None,
    })
}

/// Rows from their JSON form ([`rows_json`]).
pub fn json_rows(json: &serde_json::Value) -> Option<crate::bindings::Rows> {
    let columns =
        json.get("columns")?.as_array()?.iter().map(|c| c.as_str().map(str::to_string)).collect::<Option<_>>()?;
    let values = json
        .get("values")?
        .as_array()?
        .iter()
        .map(|row| row.as_array()?.iter().map(json_value).collect::<Option<Vec<_>>>())
        .collect::<Option<_>>()?;
    Some(crate::bindings::Rows { columns, values })
}
