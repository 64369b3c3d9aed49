//! The `sql` kind's section of a channel grant: the tables a service may
//! read, insert into, update and delete from, whether its raw SQL may change
//! the schema, and the tables whose reads the save does not check.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::channels::Claim;
use crate::channels::grant::{GrantSection, list_or_star};

/// What a service may do on a `sql` channel (`[channels.NAME]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SqlGrant {
    /// Tables it may read (`from.query`, and the tables a written statement reads).
    pub reads: Tables,
    /// Tables it may insert into.
    pub inserts: Tables,
    /// Tables it may update.
    pub updates: Tables,
    /// Tables it may delete from.
    pub deletes: Tables,
    /// Whether its raw SQL may change the schema (`CREATE`, `DROP`, `ALTER`
    /// …). Table accesses still need their grants, and no grant allows
    /// transaction control, `ATTACH`, pragmas or SQL functions outside the
    /// allow-list.
    pub raw_sql: bool,
    /// Tables whose reads are not checked at save: a scope that read only
    /// these may save over changes made since (listing a catalogue, reading
    /// a price). Reads of other tables are checked.
    pub relaxed_reads: Tables,
}

impl SqlGrant {
    /// The tables granted for `access`.
    pub fn tables(&self, access: Access) -> &Tables {
        match access {
            Access::Read => &self.reads,
            Access::Insert => &self.inserts,
            Access::Update => &self.updates,
            Access::Delete => &self.deletes,
        }
    }
}

impl SqlGrant {
    /// Adds the tables this grant lets a service read or write to `claim`
    /// (see [`crate::channels::Claim`]). Relaxed reads are left out: their
    /// reads are not checked at save, so their writers need not wait.
    pub fn claim(&self, claim: &mut Claim) {
        let relaxed = |table: &String| match &self.relaxed_reads {
            Tables::All => true,
            Tables::Some(names) => names.contains(table),
            Tables::None => false,
        };
        for (tables, reads) in
            [(&self.reads, true), (&self.inserts, false), (&self.updates, false), (&self.deletes, false)]
        {
            match tables {
                Tables::None => {}
                Tables::All if reads && matches!(self.relaxed_reads, Tables::All) => {}
                Tables::All => claim.every_table = true,
                Tables::Some(names) => {
                    claim.tables.extend(names.iter().filter(|t| !reads || !relaxed(t)).cloned());
                }
            }
        }
    }
}

impl GrantSection for SqlGrant {
    const KEYS: &'static [&'static str] = &["reads", "inserts", "updates", "deletes", "raw-sql", "relaxed-reads"];

    fn read<'de, D: serde::Deserializer<'de>>(&mut self, key: &str, value: D) -> Result<(), D::Error> {
        use serde::Deserialize as _;
        match key {
            "reads" => self.reads = Tables::deserialize(value)?,
            "inserts" => self.inserts = Tables::deserialize(value)?,
            "updates" => self.updates = Tables::deserialize(value)?,
            "deletes" => self.deletes = Tables::deserialize(value)?,
            "raw-sql" => self.raw_sql = bool::deserialize(value)?,
            "relaxed-reads" => self.relaxed_reads = Tables::deserialize(value)?,
            _ => {}
        }
        Ok(())
    }

    fn summary(&self, parts: &mut Vec<String>) {
        for (key, tables) in [
            ("reads", &self.reads),
            ("inserts", &self.inserts),
            ("updates", &self.updates),
            ("deletes", &self.deletes),
            ("relaxed reads of", &self.relaxed_reads),
        ] {
            match tables {
                Tables::None => {}
                Tables::All => parts.push(format!("{key} every table")),
                Tables::Some(names) => {
                    parts.push(format!("{key} {}", names.iter().cloned().collect::<Vec<_>>().join(", ")))
                }
            }
        }
        if self.raw_sql {
            parts.push("raw SQL".into());
        }
    }
}

/// What a statement or command does to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Reads rows.
    Read,
    /// Inserts rows.
    Insert,
    /// Updates rows.
    Update,
    /// Deletes rows.
    Delete,
}

impl Access {
    /// The manifest key that grants it.
    pub fn key(self) -> &'static str {
        match self {
            Access::Read => "reads",
            Access::Insert => "inserts",
            Access::Update => "updates",
            Access::Delete => "deletes",
        }
    }

    /// The verb, for messages: `insert into`.
    pub fn verb(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Insert => "insert into",
            Access::Update => "update",
            Access::Delete => "delete from",
        }
    }
}

/// A set of table names, or every table (`"*"`). Names compare without
/// regard to case, as SQL's do.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Tables {
    /// No table.
    #[default]
    None,
    /// Every table.
    All,
    /// These tables, lower-cased.
    Some(BTreeSet<String>),
}

impl Tables {
    /// Whether `table` is in the set.
    pub fn allows(&self, table: &str) -> bool {
        if ungrantable(table).is_some() {
            return false;
        }
        match self {
            Tables::None => false,
            Tables::All => true,
            // Names are kept lower-cased; most arrive so already.
            Tables::Some(names) if table.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) => {
                names.contains(&table.to_lowercase())
            }
            Tables::Some(names) => names.contains(table),
        }
    }
}

impl<'de> Deserialize<'de> for Tables {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Some(names) = list_or_star(d, "tables")? else { return Ok(Tables::All) };
        if let Some(empty) = names.iter().find(|n| n.trim().is_empty()) {
            return Err(serde::de::Error::custom(format!("table name {empty:?} is empty")));
        }
        if let Some((name, whose)) = names.iter().find_map(|n| ungrantable(n).map(|w| (n, w))) {
            return Err(serde::de::Error::custom(format!("table {name:?} is {whose}; no grant covers it")));
        }
        if names.is_empty() {
            return Ok(Tables::None);
        }
        Ok(Tables::Some(names.iter().map(|n| n.to_lowercase()).collect()))
    }
}

/// Whether `table` is one of the host's own (`sluice_kv`, `sluice_outbox`,
/// `sluice_migrations` …): no grant covers it, not even `"*"`, so a service
/// reaches it only through the channel kinds built on it.
pub fn is_host_table(table: &str) -> bool {
    table.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("sluice_"))
}

/// Whose `table` is when it is not the application's: the host's own
/// ([`is_host_table`]) or the engine's (SQLite's `sqlite_…` tables,
/// PostgreSQL's `pg_…` catalogs and `information_schema`). No grant covers
/// such a table, not even `"*"`, on any kind: a grant names the
/// application's tables only. `None` for an application table.
pub fn ungrantable(table: &str) -> Option<&'static str> {
    let starts = |prefix: &str| table.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix));
    if is_host_table(table) {
        Some("the host's own (sluice_…)")
    } else if starts("sqlite_") || starts("pg_") || table.eq_ignore_ascii_case("information_schema") {
        Some("the database engine's own catalog")
    } else {
        None
    }
}
