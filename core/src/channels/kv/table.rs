//! A `kv` channel kept in a table of a `sql` channel (`url = "sql:main"`):
//! `sluice_kv (space, key, value)`, one `space` per kv channel. Reads are
//! statements of the host on that channel; commands apply in that
//! channel's save transaction ([`Channel::shares`]), so keys and rows
//! queued in one scope commit together or not at all. The prefix grants
//! are checked here, before any statement runs.

use std::sync::Arc;

use crate::bindings::{Rows, Value};
use crate::channels::grant::ChannelGrant;
use crate::channels::ops::{Kind, Operation, Outcome};
use crate::channels::{Caller, Channel, ChannelError, Claim, KeyReads, Reading, Recheck, Transaction};

use super::{Held, MAX_LIST, check_key, check_prefix};
use crate::channels::sql::ops::SqlOp;

/// The table's statements in one SQL dialect.
struct Statements {
    get: &'static str,
    /// A value's length, and the value only when it is at most `?3` bytes.
    held: &'static str,
    list: &'static str,
    set: &'static str,
    remove: &'static str,
}

const SQLITE: Statements = Statements {
    get: "SELECT value FROM sluice_kv WHERE space = ?1 AND key = ?2",
    held: "SELECT length(value), CASE WHEN length(value) <= CAST(?3 AS BIGINT) THEN value END \
           FROM sluice_kv WHERE space = ?1 AND key = ?2",
    // Keys compare as bytes (SQLite's BINARY collation); `key >= ?2` lets
    // the primary key find the first one.
    list: "SELECT key, value FROM sluice_kv WHERE space = ?1 AND key >= ?2 AND substr(key, 1, length(?2)) = ?2 \
           ORDER BY key LIMIT ?3",
    set: "INSERT INTO sluice_kv (space, key, value) VALUES (?1, ?2, ?3) \
          ON CONFLICT (space, key) DO UPDATE SET value = excluded.value",
    remove: "DELETE FROM sluice_kv WHERE space = ?1 AND key = ?2",
};

const POSTGRES: Statements = Statements {
    get: SQLITE.get,
    held: "SELECT octet_length(value), CASE WHEN octet_length(value) <= CAST(?3 AS BIGINT) THEN value END \
           FROM sluice_kv WHERE space = ?1 AND key = ?2",
    // The "C" collation orders keys as bytes, whatever the database's.
    list: "SELECT key, value FROM sluice_kv WHERE space = ?1 AND left(key, char_length(?2)) = ?2 \
           ORDER BY key COLLATE \"C\" LIMIT ?3",
    set: SQLITE.set,
    remove: SQLITE.remove,
};

/// The table, created on the `sql` channel when the kv channel opens.
const TABLE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS sluice_kv (
    space TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (space, key)
)";
const TABLE_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS sluice_kv (
    space TEXT NOT NULL, key TEXT NOT NULL, value BYTEA NOT NULL, PRIMARY KEY (space, key)
)";

/// A `kv` channel in a table of the `sql` channel `base`.
pub struct TableKv {
    /// This channel's name: its `space` in the table.
    space: String,
    /// The `sql` channel's name.
    base_name: String,
    base: Arc<dyn Channel>,
    sql: &'static Statements,
}

impl TableKv {
    /// The kv channel `name` in a table of `base` (called `base_name`),
    /// creating the table if it is missing.
    pub fn open(name: &str, base_name: &str, base: Arc<dyn Channel>) -> Result<Self, ChannelError> {
        let Some(base_sql) = base.sql() else {
            return Err(ChannelError::Invalid(format!("channel {base_name} is not a sql channel")));
        };
        let (sql, table) = match base_sql.dialect() {
            "postgres" => (&POSTGRES, TABLE_POSTGRES),
            _ => (&SQLITE, TABLE_SQLITE),
        };
        // The host's own statement, not a migration: the operator's
        // migrations stay theirs.
        let mut tx = base.begin()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        tx.apply(&Operation::Sql(SqlOp::Execute { sql: table.into(), params: Vec::new() }), &Caller::host(deadline))?;
        tx.commit()?;
        Ok(TableKv { space: name.to_string(), base_name: base_name.to_string(), base, sql })
    }

    /// A read of the table as the host, kept to be run again in `base`'s
    /// save transaction.
    fn read(
        &self,
        statement: &'static str,
        params: Vec<Value>,
        caller: &Caller,
        max_bytes: usize,
        asked: String,
    ) -> Result<Reading, ChannelError> {
        let base = crate::channels::sql_of(self.base.as_ref(), "query")?;
        let mut reading = base.query(statement, &params, &caller.as_host(), max_bytes)?;
        reading.recheck = Some(Recheck {
            channel: self.base_name.clone(),
            statement: statement.to_string(),
            params,
            host: true,
            asked,
        });
        Ok(reading)
    }

    /// What `key` holds now, read in the save transaction `tx`.
    /// What `key` holds in `tx`, its value read only when it is at most
    /// `max_bytes` long (the engine compares the length first).
    fn current(
        &self,
        tx: &mut dyn Transaction,
        key: &str,
        max_bytes: usize,
        host: &Caller,
    ) -> Result<Held, ChannelError> {
        let max = Value::Integer(i64::try_from(max_bytes).unwrap_or(i64::MAX));
        let rows = tx.rows(self.sql.held, &[self.space(), text(key), max], host)?;
        let Some(row) = rows.values.first() else { return Ok(Held::Unset) };
        Ok(match row.get(1) {
            Some(Value::Blob(bytes)) => Held::Value(bytes.clone()),
            Some(Value::Text(text)) => Held::Value(text.clone().into_bytes()),
            _ => Held::Longer,
        })
    }

    fn space(&self) -> Value {
        text(&self.space)
    }

    /// Sets (`Some`) or removes (`None`) `key` in `tx`; the rows changed.
    fn write(
        &self,
        tx: &mut dyn Transaction,
        key: &str,
        value: Option<Vec<u8>>,
        host: &Caller,
    ) -> Result<u64, ChannelError> {
        let op = match value {
            Some(value) => Operation::Sql(SqlOp::Execute {
                sql: self.sql.set.into(),
                params: vec![self.space(), text(key), Value::Blob(value)],
            }),
            None => {
                Operation::Sql(SqlOp::Execute { sql: self.sql.remove.into(), params: vec![self.space(), text(key)] })
            }
        };
        match tx.apply(&op, host)? {
            Outcome::Affected(n) => Ok(n),
            Outcome::Inserted(_) => Ok(1),
        }
    }
}

impl KeyReads for TableKv {
    fn get(&self, key: &str, caller: &Caller, max_bytes: usize) -> Result<Reading, ChannelError> {
        check_key(caller, key, false)?;
        self.read(self.sql.get, vec![self.space(), text(key)], caller, max_bytes, format!("get {key}"))
    }

    fn list(&self, prefix: &str, limit: u32, caller: &Caller, max_bytes: usize) -> Result<Reading, ChannelError> {
        check_prefix(caller, prefix)?;
        let limit = limit.min(MAX_LIST);
        let params = vec![self.space(), text(prefix), Value::Integer(limit.into())];
        self.read(self.sql.list, params, caller, max_bytes, format!("list {prefix} (at most {limit})"))
    }
}

impl Channel for TableKv {
    fn kind(&self) -> Kind {
        crate::channels::kv::KIND
    }

    fn keys(&self) -> Option<&dyn KeyReads> {
        Some(self)
    }

    fn check_command(&self, op: &Operation, caller: &Caller) -> Result<(), ChannelError> {
        super::check_command(op, caller).map(drop)
    }

    fn shares(&self) -> Option<&str> {
        Some(&self.base_name)
    }

    /// Its table, when the service may use the channel at all.
    fn claim(&self, grant: &ChannelGrant, claim: &mut Claim) {
        if !grant.kv.keys.is_empty() || !grant.kv.read_keys.is_empty() {
            claim.tables.insert("sluice_kv".into());
        }
    }

    fn apply_shared(&self, tx: &mut dyn Transaction, op: &Operation, caller: &Caller) -> Result<Outcome, ChannelError> {
        super::apply(&mut InTable { kv: self, tx, host: caller.as_host() }, op)
    }

    /// Never called by a save: the commands apply in the base channel's
    /// transaction.
    fn begin(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        self.base.begin()
    }
}

/// The table's keys inside a `sql` channel's save transaction, for
/// [`super::apply`].
struct InTable<'a> {
    kv: &'a TableKv,
    tx: &'a mut dyn Transaction,
    host: Caller,
}

impl super::Keys for InTable<'_> {
    fn current(&mut self, key: &str, max_bytes: usize) -> Result<Held, ChannelError> {
        self.kv.current(self.tx, key, max_bytes, &self.host)
    }

    fn write(&mut self, key: &str, value: Option<Vec<u8>>) -> Result<(), ChannelError> {
        self.kv.write(self.tx, key, value, &self.host).map(drop)
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// The first row's first value as bytes (a `get`'s `value` column), if
/// any: the value of the key, or `None` when it is not set.
pub fn first_value(rows: &Rows) -> Option<Vec<u8>> {
    match rows.values.first()?.first()? {
        Value::Blob(b) => Some(b.clone()),
        Value::Text(t) => Some(t.clone().into_bytes()),
        _ => None,
    }
}
