//! Migrations of a PostgreSQL channel, with the same rule as SQLite's
//! ([`crate::channels::sql::migrate`]): each script in its own transaction
//! with its record (name, time, SHA-256) in `sluice_migrations`; one applied
//! before is skipped, one whose script changed since is refused by name.
//! An advisory lock keeps two hosts from migrating the same database at
//! once.

use postgres::Client;

use super::pg_error;
use crate::channels::ChannelError;
use crate::channels::sql::migrate::{MIGRATIONS_TABLE, checksum, edited};

/// The advisory lock every host migrating a database takes (any constant
/// the hosts agree on).
const LOCK: i64 = 0x736c_7569_6365;

/// Applies each `(name, script)` not yet applied, in order; see the
/// module docs. Returns each name with `true` when it was applied now.
pub(super) fn apply(client: &mut Client, migrations: &[(String, String)]) -> Result<Vec<(String, bool)>, ChannelError> {
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
                name TEXT PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                checksum TEXT
            )"
        ))
        .map_err(pg_error)?;
    let mut report = Vec::new();
    for (name, sql) in migrations {
        let checksum = checksum(sql);
        let mut tx = client.transaction().map_err(pg_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).map_err(pg_error)?;
        let applied: Option<Option<String>> = tx
            .query_opt(&format!("SELECT checksum FROM {MIGRATIONS_TABLE} WHERE name = $1"), &[name])
            .map_err(pg_error)?
            .map(|row| row.get(0));
        match &applied {
            None => {
                tx.batch_execute(sql)
                    .map_err(|e| ChannelError::Invalid(format!("migration {name}: {}", pg_error(e))))?;
                tx.execute(
                    &format!("INSERT INTO {MIGRATIONS_TABLE} (name, checksum) VALUES ($1, $2)"),
                    &[name, &checksum],
                )
                .map_err(pg_error)?;
            }
            Some(None) => {
                tx.execute(&format!("UPDATE {MIGRATIONS_TABLE} SET checksum = $2 WHERE name = $1"), &[name, &checksum])
                    .map_err(pg_error)?;
            }
            Some(Some(recorded)) if *recorded != checksum => return Err(edited(name, recorded, &checksum)),
            Some(Some(_)) => {}
        }
        tx.commit().map_err(pg_error)?;
        report.push((name.clone(), applied.is_none()));
    }
    Ok(report)
}
