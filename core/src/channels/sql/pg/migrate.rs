//! Migrations of a PostgreSQL channel, with the same rule as SQLite's
//! ([`crate::channels::sql::migrate`]): each script in its own transaction
//! with its record (name, time, SHA-256) in `sluice_migrations`; one applied
//! before is skipped, one whose script changed since is refused by name.
//! An advisory lock keeps two hosts from migrating the same database at
//! once.

use std::time::Duration;

use super::conn::Conn;
use crate::channels::ChannelError;
use crate::channels::sql::migrate::{MIGRATIONS_TABLE, checksum, edited};

/// The advisory lock every host migrating a database takes (any constant
/// the hosts agree on).
const LOCK: i64 = 0x736c_7569_6365;

/// Applies each `(name, script)` not yet applied, in order; see the
/// module docs. Returns each name with `true` when it was applied now.
/// The longest one migration may take: the operator's own statements,
/// which may rebuild a large table, and still not wait forever on a
/// server that stopped answering.
const MIGRATION_WAIT: Duration = Duration::from_secs(3600);

/// Applies each `(name, script)` not yet applied, in order; see the
/// module docs. Returns each name with `true` when it was applied now.
pub(super) fn apply(client: &mut Conn, migrations: &[(String, String)]) -> Result<Vec<(String, bool)>, ChannelError> {
    client.host_wait(MIGRATION_WAIT);
    client.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
            name TEXT PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            checksum TEXT
        )"
    ))?;
    let mut report = Vec::new();
    for (name, sql) in migrations {
        let checksum = checksum(sql);
        client.host_wait(MIGRATION_WAIT);
        let applied = client.in_transaction(|tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])?;
            let applied: Option<Option<String>> = tx
                .query_opt(&format!("SELECT checksum FROM {MIGRATIONS_TABLE} WHERE name = $1"), &[name])?
                .map(|row| row.get(0));
            match &applied {
                None => {
                    tx.batch_execute(sql).map_err(|e| ChannelError::Invalid(format!("migration {name}: {e}")))?;
                    tx.execute(
                        &format!("INSERT INTO {MIGRATIONS_TABLE} (name, checksum) VALUES ($1, $2)"),
                        &[name, &checksum],
                    )?;
                }
                Some(None) => {
                    tx.execute(
                        &format!("UPDATE {MIGRATIONS_TABLE} SET checksum = $2 WHERE name = $1"),
                        &[name, &checksum],
                    )?;
                }
                Some(Some(recorded)) if *recorded != checksum => return Err(edited(name, recorded, &checksum)),
                Some(Some(_)) => {}
            }
            Ok(applied)
        })?;
        report.push((name.clone(), applied.is_none()));
    }
    Ok(report)
}
