//! Grant checks (Tecture's toolings, checked by the host): before a read
//! touches a channel and when a command is queued, every table it touches
//! must be granted for what it does there. A refusal names the service, the
//! channel, the table and the operation, and quotes the manifest line that
//! would grant it.

pub mod sql;

use std::path::Path;
use std::sync::Arc;

use crate::command::Operation;
use crate::manifest::Manifest;
use sql::Classified;

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

    fn verb(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Insert => "insert into",
            Access::Update => "update",
            Access::Delete => "delete from",
        }
    }
}

/// Why a request was refused before it reached the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not granted: becomes the guest's `error::denied`.
    Denied(String),
    /// Malformed for the request (several statements, a write through a
    /// read): becomes `error::invalid`.
    Invalid(String),
}

/// One service's grants, with where its manifest is, for the messages.
pub struct Grants<'a> {
    /// The service.
    pub service: &'a str,
    /// Its manifest (empty when it has none).
    pub manifest: &'a Manifest,
    /// Where its manifest is or would be.
    pub path: &'a Path,
}

impl Grants<'_> {
    /// Checks a read through `from.query`.
    pub fn check_query(&self, channel: &str, sql: &str) -> Result<(), Refusal> {
        if let Ok(Classified::Tables(touched)) = self.classify(channel, sql)?.as_ref() {
            if let Some((access, table)) = touched.iter().find(|(a, _)| *a != Access::Read) {
                return Err(Refusal::Invalid(format!(
                    "{}: a read must not write (this statement would {} table {table}); queue writes with `to`",
                    self.service,
                    access.verb()
                )));
            }
            self.check_tables(channel, touched)?;
        }
        Ok(())
    }

    /// Checks a command as it is queued.
    pub fn check_command(&self, channel: &str, op: &Operation) -> Result<(), Refusal> {
        let (access, table) = match op {
            Operation::Insert { table, .. } => (Access::Insert, table),
            Operation::Update { table, .. } => (Access::Update, table),
            Operation::Delete { table, .. } => (Access::Delete, table),
            Operation::Execute { sql, .. } => {
                if let Ok(Classified::Tables(touched)) = self.classify(channel, sql)?.as_ref() {
                    self.check_tables(channel, touched)?;
                }
                return Ok(());
            }
        };
        self.check_tables(channel, &[(access, table.to_lowercase())])
    }

    /// Parses `sql` (or finds it parsed before); unclassified SQL passes only
    /// with `raw-sql = true`.
    fn classify(&self, channel: &str, sql: &str) -> Result<Arc<Result<Classified, String>>, Refusal> {
        let classified = sql::classify_cached(sql);
        match classified.as_ref() {
            Err(e) => Err(Refusal::Invalid(format!("{}: {e}", self.service))),
            Ok(Classified::Unclassified(what)) if !self.manifest.channel(channel).is_some_and(|g| g.raw_sql) => {
                Err(self.denied(channel, &format!("run {what}"), "raw-sql = true"))
            }
            Ok(_) => Ok(classified),
        }
    }

    fn check_tables(&self, channel: &str, touched: &[(Access, String)]) -> Result<(), Refusal> {
        let grant = self.manifest.channel(channel);
        for (access, table) in touched {
            let granted = grant.is_some_and(|g| {
                let tables = match access {
                    Access::Read => &g.reads,
                    Access::Insert => &g.inserts,
                    Access::Update => &g.updates,
                    Access::Delete => &g.deletes,
                };
                tables.allows(table)
            });
            if !granted {
                let line = format!("{} = [{table:?}]", access.key());
                return Err(self.denied(channel, &format!("{} table {table}", access.verb()), &line));
            }
        }
        Ok(())
    }

    fn denied(&self, channel: &str, what: &str, line: &str) -> Refusal {
        Refusal::Denied(format!(
            "{} may not {what} on channel {channel}; grant it in {}: [channels.{channel}] {line}",
            self.service,
            self.path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{Row, Value};

    fn check(manifest: &str, channel: &str, op: Operation) -> Result<(), Refusal> {
        let manifest = Manifest::parse(manifest).map_err(Refusal::Invalid)?;
        let grants = Grants { service: "svc", manifest: &manifest, path: Path::new("services/svc.toml") };
        grants.check_command(channel, &op)
    }

    fn insert(table: &str) -> Operation {
        Operation::Insert { table: table.into(), row: Row { columns: vec!["a".into()], values: vec![Value::Null] } }
    }

    fn execute(sql: &str) -> Operation {
        Operation::Execute { sql: sql.into(), params: vec![] }
    }

    #[test]
    fn nothing_is_granted_without_a_manifest() {
        assert_eq!(
            check("", "main", insert("orders")),
            Err(Refusal::Denied(
                "svc may not insert into table orders on channel main; grant it in services/svc.toml: \
                 [channels.main] inserts = [\"orders\"]"
                    .into()
            ))
        );
    }

    #[test]
    fn tables_are_granted_per_channel_and_operation() {
        let m = "[channels.main]\ninserts = [\"orders\"]\nreads = [\"stock\"]\n";
        assert_eq!(check(m, "main", insert("ORDERS")), Ok(()));
        assert!(matches!(check(m, "other", insert("orders")), Err(Refusal::Denied(_))));
        assert_eq!(check(m, "main", execute("INSERT INTO orders (a) SELECT n FROM stock")), Ok(()));
        let Err(Refusal::Denied(why)) = check(m, "main", execute("INSERT INTO orders (a) SELECT n FROM secrets"))
        else {
            panic!("not denied")
        };
        assert!(why.contains("may not read table secrets") && why.contains("reads = [\"secrets\"]"), "{why}");
    }

    #[test]
    fn raw_sql_needs_the_flag() {
        let m = "[channels.main]\ninserts = \"*\"\n";
        for sql in ["DROP TABLE orders", "PRAGMA user_version = 3", "ATTACH DATABASE 'x.db' AS x", "VACUUM"] {
            let Err(Refusal::Denied(why)) = check(m, "main", execute(sql)) else { panic!("{sql} not denied") };
            assert!(why.ends_with("[channels.main] raw-sql = true"), "{why}");
        }
        assert_eq!(check("[channels.main]\nraw-sql = true\n", "main", execute("DROP TABLE orders")), Ok(()));
    }

    #[test]
    fn reads_must_not_write() {
        let manifest = Manifest::parse("[channels.main]\nreads = \"*\"\ninserts = \"*\"\n").unwrap_or_default();
        let grants = Grants { service: "svc", manifest: &manifest, path: Path::new("svc.toml") };
        assert_eq!(grants.check_query("main", "SELECT * FROM orders"), Ok(()));
        assert!(matches!(grants.check_query("main", "INSERT INTO orders (a) VALUES (1)"), Err(Refusal::Invalid(_))));
        assert!(matches!(grants.check_query("main", "SELECT 1; SELECT 2"), Err(Refusal::Invalid(_))));
    }
}
