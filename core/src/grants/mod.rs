//! A service's grants as its refusals are told: each channel kind judges
//! its own section of the grant (a table and operation, the service's own
//! SQL by the engine that owns the data, a key's prefix, a subject, a
//! destination; see [`crate::channels`]), and what it refused becomes, here,
//! a message that names the service, the channel and what was refused, and
//! quotes the manifest line that would grant it.

use std::path::Path;
use std::sync::Arc;

use crate::channels::Denial;
use crate::manifest::{ChannelGrant, Manifest};

pub use crate::channels::sql::grant::Access;

/// Why a request was refused before it reached the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not granted: becomes the guest's `error::denied`.
    Denied(String),
    /// Malformed for the request (several statements, a write through a
    /// read): becomes `error::invalid`.
    Invalid(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Denied(m) | Refusal::Invalid(m) => f.write_str(m),
        }
    }
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
    /// The service's grant on `channel`, for the engine to enforce.
    pub fn on(&self, channel: &str) -> Option<Arc<ChannelGrant>> {
        self.manifest.channel(channel).cloned()
    }

    /// What the guest is told when the engine refused its statement.
    pub fn refusal(&self, channel: &str, denial: &Denial) -> Refusal {
        match denial {
            Denial::Table { access, table } => self.table_denied(channel, *access, table),
            Denial::WriteInRead { access, table } => Refusal::Invalid(format!(
                "{}: a read must not write (this statement would {} table {table}); queue writes with `to`",
                self.service,
                access.verb()
            )),
            Denial::Schema(what) => self.denied(channel, &format!("change the schema ({what})"), "raw-sql = true"),
            Denial::Ungranted { what, line } => self.denied(channel, what, line),
            Denial::Never(what) => {
                Refusal::Denied(format!("{} may not {what} on channel {channel}; no grant allows it", self.service))
            }
        }
    }

    /// `access` to `table` refused: with the manifest line that grants it,
    /// or, for a table no grant covers (the host's, the engine's), why not.
    fn table_denied(&self, channel: &str, access: Access, table: &str) -> Refusal {
        let what = format!("{} table {table}", access.verb());
        match crate::manifest::ungrantable(table) {
            Some(whose) => Refusal::Denied(format!(
                "{} may not {what} on channel {channel}; no grant allows it ({table} is {whose})",
                self.service
            )),
            None => self.denied(channel, &what, &format!("{} = [{table:?}]", access.key())),
        }
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
    use std::time::Instant;

    use super::*;
    use crate::bindings::{Row, Value};
    use crate::channels::Caller;
    use crate::channels::sql::check_table_grant;
    use crate::command::SqlOp;

    /// The `sql` kind's gate on a command queued on `channel`, refused as
    /// the guest is told.
    fn check(manifest: &str, channel: &str, op: SqlOp) -> Result<(), Refusal> {
        let manifest = Manifest::parse(manifest).map_err(Refusal::Invalid)?;
        let grants = Grants { service: "svc", manifest: &manifest, path: Path::new("services/svc.toml") };
        let caller = Caller::service("svc", grants.on(channel), Instant::now());
        check_table_grant(&op, &caller).map_err(|denial| grants.refusal(channel, &denial))
    }

    fn insert(table: &str) -> SqlOp {
        SqlOp::Insert { table: table.into(), row: Row { columns: vec!["a".into()], values: vec![Value::Null] } }
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
        assert!(matches!(check(m, "main", insert("stock")), Err(Refusal::Denied(_))));
    }

    /// `"*"` is the application's tables: never the host's own, nor the
    /// engine's catalogs, whatever the case; and no manifest may name them.
    #[test]
    fn a_star_grant_covers_the_application_tables_only() {
        let all = "[channels.main]\nreads = \"*\"\ninserts = \"*\"\nupdates = \"*\"\ndeletes = \"*\"\n";
        assert_eq!(check(all, "main", insert("orders")), Ok(()));
        for table in
            ["sluice_outbox", "SQLITE_sequence", "sqlite_master", "pg_sequence", "PG_AUTHID", "information_schema"]
        {
            let Err(Refusal::Denied(why)) = check(all, "main", insert(table)) else { panic!("{table} granted by *") };
            assert!(why.contains("no grant allows it"), "{why}");
            assert!(!why.contains("grant it in"), "{why}");
        }
        for table in ["sluice_kv", "pg_class", "sqlite_schema"] {
            let named = format!("[channels.main]\ndeletes = [\"{table}\"]\n");
            assert!(Manifest::parse(&named).is_err(), "{table} may be named in a manifest");
        }
    }

    #[test]
    fn engine_denials_name_the_manifest_line() {
        let manifest = Manifest::parse("[channels.main]\nreads = [\"orders\"]\n").unwrap_or_default();
        let grants = Grants { service: "svc", manifest: &manifest, path: Path::new("services/svc.toml") };
        let secrets = Denial::Table { access: Access::Read, table: "secrets".into() };
        assert_eq!(
            grants.refusal("main", &secrets),
            Refusal::Denied(
                "svc may not read table secrets on channel main; grant it in services/svc.toml: \
                 [channels.main] reads = [\"secrets\"]"
                    .into()
            )
        );
        let Refusal::Denied(why) = grants.refusal("main", &Denial::Schema("CREATE TABLE x".into())) else {
            panic!("not denied")
        };
        assert!(why.ends_with("[channels.main] raw-sql = true"), "{why}");
        let write = Denial::WriteInRead { access: Access::Delete, table: "orders".into() };
        assert!(matches!(grants.refusal("main", &write), Refusal::Invalid(_)));
    }
}
