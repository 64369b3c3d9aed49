//! Commands: the writes a scope queues through `to`, as plain data.
//!
//! A command is built and checked once, when the guest queues it (`Operation::check`),
//! and applied once, at save, by the channel it names. Because commands are
//! data they can be listed, printed, compared and replayed.

use serde::Serialize;

mod effect;
mod queue;

use crate::bindings::{Row, Value};
use crate::work::ScopeId;

pub use effect::{Headers, METHODS, check_method, check_subject};
pub use queue::Queue;

/// One queued write and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Command {
    /// The scope that queued it.
    pub scope: ScopeId,
    /// The handle returned to the guest; unique within its scope.
    pub ticket: u64,
    /// The service that queued it (shared by the commands it queued).
    pub service: std::sync::Arc<str>,
    /// The calls that led to it, outermost first:
    /// `["orders.place", "inventory.reserve"]`. Shared by the commands
    /// queued under the same calls.
    pub chain: std::sync::Arc<[String]>,
    /// The channel it is applied to (shared by the commands for it).
    pub channel: std::sync::Arc<str>,
    /// What it does.
    pub op: Operation,
    /// How many rows it must change when applied (`to.expect`); any other
    /// count makes the save a conflict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<u64>,
}

/// What a command does to its channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Operation {
    /// Insert one row.
    Insert {
        /// The table.
        table: String,
        /// The row's columns and values.
        #[serde(serialize_with = "row_json")]
        row: Row,
    },
    /// Set `changes` on the rows that match `key`.
    Update {
        /// The table.
        table: String,
        /// Columns that must all equal their values.
        #[serde(serialize_with = "row_json")]
        key: Row,
        /// Columns to set.
        #[serde(serialize_with = "row_json")]
        changes: Row,
    },
    /// Delete the rows that match `key`.
    Delete {
        /// The table.
        table: String,
        /// Columns that must all equal their values.
        #[serde(serialize_with = "row_json")]
        key: Row,
    },
    /// Run one SQL statement as written.
    Execute {
        /// The statement.
        sql: String,
        /// Values bound to its parameters, in order.
        #[serde(serialize_with = "values_json")]
        params: Vec<Value>,
    },
    /// Set a key of a `kv` channel.
    Set {
        /// The key.
        key: String,
        /// Its new value.
        #[serde(serialize_with = "bytes_json")]
        value: Vec<u8>,
    },
    /// Remove a key of a `kv` channel.
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
    /// Publish a message on a `bus` channel once the save has committed.
    Publish {
        /// The subject, within the channel's subjects.
        subject: String,
        /// The message's bytes.
        #[serde(serialize_with = "bytes_json")]
        payload: Vec<u8>,
        /// Its headers, in order.
        headers: Headers,
    },
    /// Record, in the save, that a triggered service handled a message of
    /// a `bus` channel: the host queues it for the scope a message runs,
    /// never a service.
    Receipt {
        /// The subscription: `service/subject`.
        consumer: String,
        /// The message's id.
        id: String,
    },
    /// Send an HTTP request through an `http-out` channel once the save has
    /// committed.
    Send {
        /// The method: `POST`.
        method: String,
        /// Where to: an absolute `http(s)` URL, or a path under the
        /// channel's `base`.
        url: String,
        /// Its headers, in order.
        headers: Headers,
        /// Its body.
        #[serde(serialize_with = "bytes_json")]
        body: Vec<u8>,
    },
}

/// The families of commands, each applied by channels of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Tables and SQL: `insert`, `update`, `delete`, `execute`.
    Sql,
    /// Keys: `set`, `remove`, `compare-and-swap`, `increment`.
    Kv,
    /// Messages: `publish`, delivered after the save through the outbox.
    Bus,
    /// Outgoing HTTP requests: `send`, delivered after the save through the
    /// outbox.
    HttpOut,
}

impl Kind {
    /// The kind's name in `sluice.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sql => "sql",
            Kind::Kv => "kv",
            Kind::Bus => "bus",
            Kind::HttpOut => "http-out",
        }
    }
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

/// A value of a `kv` channel as JSON: its text when it is UTF-8, else its
/// bytes.
fn bytes_json<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) => s.serialize_str(text),
        Err(_) => s.collect_seq(bytes),
    }
}

fn maybe_bytes_json<S: serde::Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(b) => bytes_json(b, s),
        None => s.serialize_none(),
    }
}

/// A SQL value as plain JSON: `null`, a number, a string, or a blob as an
/// array of bytes.
pub fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Integer(n) => (*n).into(),
        Value::Real(r) => (*r).into(),
        Value::Text(t) => t.as_str().into(),
        Value::Blob(b) => b.as_slice().into(),
    }
}

/// A row as a JSON object from column to value, in column order.
fn row_json<S: serde::Serializer>(row: &Row, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap as _;
    let mut map = s.serialize_map(Some(row.columns.len()))?;
    for (column, value) in row.columns.iter().zip(&row.values) {
        map.serialize_entry(column, &value_json(value))?;
    }
    map.end()
}

fn values_json<S: serde::Serializer>(values: &[Value], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(values.iter().map(value_json))
}

/// The result of applying one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The number of rows the command changed.
    Affected(u64),
    /// The row id of the row an insert created.
    Inserted(i64),
}

impl Operation {
    /// Checks what can be checked without a database. The error text becomes
    /// the guest's `error::invalid`.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Operation::Insert { table, row } => {
                check_table(table)?;
                check_row("row", row)
            }
            Operation::Update { table, key, changes } => {
                check_table(table)?;
                check_row("key", key)?;
                check_row("changes", changes)
            }
            Operation::Delete { table, key } => {
                check_table(table)?;
                check_row("key", key)
            }
            Operation::Execute { sql, .. } => {
                if sql.trim().is_empty() {
                    return Err("sql is empty".into());
                }
                Ok(())
            }
            Operation::Set { key, .. }
            | Operation::Remove { key }
            | Operation::Swap { key, .. }
            | Operation::Increment { key, .. } => check_key(key),
            Operation::Publish { subject, headers, .. } => {
                check_subject(subject)?;
                headers.check_message()
            }
            Operation::Receipt { .. } => Ok(()),
            Operation::Send { method, url, headers, .. } => {
                check_method(method)?;
                if url.trim().is_empty() {
                    return Err("the url is empty".into());
                }
                headers.check_request()
            }
        }
    }

    /// The kind of channel that applies it.
    pub fn kind(&self) -> Kind {
        match self {
            Operation::Insert { .. }
            | Operation::Update { .. }
            | Operation::Delete { .. }
            | Operation::Execute { .. } => Kind::Sql,
            Operation::Set { .. } | Operation::Remove { .. } | Operation::Swap { .. } | Operation::Increment { .. } => {
                Kind::Kv
            }
            Operation::Publish { .. } | Operation::Receipt { .. } => Kind::Bus,
            Operation::Send { .. } => Kind::HttpOut,
        }
    }

    /// The key a `kv` command writes.
    pub fn key(&self) -> Option<&str> {
        match self {
            Operation::Set { key, .. }
            | Operation::Remove { key }
            | Operation::Swap { key, .. }
            | Operation::Increment { key, .. } => Some(key),
            _ => None,
        }
    }

    /// A one-line summary for people: `insert into orders (customer, total)`.
    pub fn describe(&self) -> String {
        match self {
            Operation::Insert { table, row } => {
                format!("insert into {table} ({})", row.columns.join(", "))
            }
            Operation::Update { table, key, changes } => {
                format!("update {table} set {} where {}", changes.columns.join(", "), key.columns.join(", "))
            }
            Operation::Delete { table, key } => {
                format!("delete from {table} where {}", key.columns.join(", "))
            }
            Operation::Execute { sql, params } => {
                let mut sql: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
                if let Some((cut, _)) = sql.char_indices().nth(DESCRIBED_SQL) {
                    sql.truncate(cut);
                    sql.push('…');
                }
                format!("execute `{sql}` with {} param(s)", params.len())
            }
            Operation::Set { key, value } => format!("set {key} ({} bytes)", value.len()),
            Operation::Remove { key } => format!("remove {key}"),
            Operation::Swap { key, expected, value } => {
                let state =
                    |v: &Option<Vec<u8>>| v.as_ref().map_or("unset".to_string(), |b| format!("{} bytes", b.len()));
                format!("compare-and-swap {key} ({} to {})", state(expected), state(value))
            }
            Operation::Increment { key, by } => format!("increment {key} by {by}"),
            Operation::Publish { subject, payload, .. } => format!("publish {subject} ({} bytes)", payload.len()),
            Operation::Receipt { consumer, id } => format!("receipt of message {id} for {consumer}"),
            Operation::Send { method, url, body, .. } => {
                let mut url = url.clone();
                if let Some((cut, _)) = url.char_indices().nth(DESCRIBED_SQL) {
                    url.truncate(cut);
                    url.push('…');
                }
                format!("send {method} {url} ({} bytes)", body.len())
            }
        }
    }

    /// About how many bytes the command holds: names, SQL and values.
    pub fn size(&self) -> usize {
        let row =
            |r: &Row| r.columns.iter().map(String::len).sum::<usize>() + r.values.iter().map(value_size).sum::<usize>();
        match self {
            Operation::Insert { table, row: r } => table.len() + row(r),
            Operation::Update { table, key, changes } => table.len() + row(key) + row(changes),
            Operation::Delete { table, key } => table.len() + row(key),
            Operation::Execute { sql, params } => sql.len() + params.iter().map(value_size).sum::<usize>(),
            Operation::Set { key, value } => key.len() + value.len(),
            Operation::Remove { key } => key.len(),
            Operation::Swap { key, expected, value } => {
                key.len() + expected.as_ref().map_or(1, Vec::len) + value.as_ref().map_or(1, Vec::len)
            }
            Operation::Increment { key, .. } => key.len() + 8,
            Operation::Publish { subject, payload, headers } => subject.len() + payload.len() + headers.size(),
            Operation::Send { method, url, headers, body } => method.len() + url.len() + headers.size() + body.len(),
            Operation::Receipt { consumer, id } => consumer.len() + id.len(),
        }
    }
}

/// How much of a statement's text a description shows.
const DESCRIBED_SQL: usize = 200;

/// About how many bytes one value holds.
pub fn value_size(value: &Value) -> usize {
    match value {
        Value::Null => 1,
        Value::Integer(_) | Value::Real(_) => 8,
        Value::Text(t) => t.len(),
        Value::Blob(b) => b.len(),
    }
}

impl Command {
    /// `#ticket chain on channel: summary`, the form used in errors and
    /// logs: `#2 orders.place → inventory.reserve on main: execute …`.
    pub fn describe(&self) -> String {
        let expect = self.expect.map(|n| format!(" (expects {n} row(s))")).unwrap_or_default();
        format!("#{} {} on {}: {}{expect}", self.ticket, self.chain.join(" → "), self.channel, self.op.describe())
    }

    /// Whether `other` was queued by the same service for the same channel.
    /// The queue shares each name among its commands, so this is most often
    /// a comparison of pointers.
    pub fn same_source(&self, other: &Command) -> bool {
        same_name(&self.service, &other.service) && same_name(&self.channel, &other.channel)
    }
}

/// Whether two names are equal, by pointer first.
pub fn same_name(a: &std::sync::Arc<str>, b: &std::sync::Arc<str>) -> bool {
    std::sync::Arc::ptr_eq(a, b) || a == b
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Affected(n) => write!(f, "{n} row(s) affected"),
            Outcome::Inserted(id) => write!(f, "inserted row {id}"),
        }
    }
}

fn check_table(table: &str) -> Result<(), String> {
    if table.trim().is_empty() {
        return Err("table name is empty".into());
    }
    Ok(())
}

fn check_row(what: &str, row: &Row) -> Result<(), String> {
    if row.columns.len() != row.values.len() {
        return Err(format!("{what} has {} column(s) but {} value(s)", row.columns.len(), row.values.len()));
    }
    if row.columns.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if let Some(c) = row.columns.iter().find(|c| c.trim().is_empty()) {
        return Err(format!("{what} has an empty column name {c:?}"));
    }
    // Rows are short: comparing each column with those before it costs
    // less than hashing them, up to a few dozen columns.
    let dup = if row.columns.len() <= 32 {
        row.columns.iter().enumerate().find(|(i, c)| row.columns[..*i].contains(c)).map(|(_, c)| c)
    } else {
        let mut seen = std::collections::HashSet::new();
        row.columns.iter().find(|c| !seen.insert(c.as_str()))
    };
    if let Some(dup) = dup {
        return Err(format!("{what} names column {dup:?} twice"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cols: &[&str], n: usize) -> Row {
        Row { columns: cols.iter().map(|c| c.to_string()).collect(), values: vec![Value::Null; n] }
    }

    #[test]
    fn check_refuses_malformed_rows() {
        let insert = |r| Operation::Insert { table: "t".into(), row: r };
        assert!(insert(row(&["a", "b"], 2)).check().is_ok());
        assert_eq!(insert(row(&["a"], 2)).check(), Err("row has 1 column(s) but 2 value(s)".into()));
        assert_eq!(insert(row(&[], 0)).check(), Err("row is empty".into()));
        assert_eq!(insert(row(&["a", "a"], 2)).check(), Err("row names column \"a\" twice".into()));
        let no_table = Operation::Delete { table: " ".into(), key: row(&["id"], 1) };
        assert_eq!(no_table.check(), Err("table name is empty".into()));
        let no_key = Operation::Update { table: "t".into(), key: row(&[], 0), changes: row(&["a"], 1) };
        assert_eq!(no_key.check(), Err("key is empty".into()));
        let no_sql = Operation::Execute { sql: "  ".into(), params: vec![] };
        assert_eq!(no_sql.check(), Err("sql is empty".into()));
    }
}
