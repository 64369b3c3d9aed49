//! Migrations of a SQLite channel: each script in its own transaction, with
//! its record (name, time, SHA-256 of the script) in `sluice_migrations`. A
//! migration applied before is skipped; one whose script changed since is
//! refused, naming it.

use rusqlite::{Connection, OptionalExtension as _};

use super::unavailable;

/// The table that records which migrations a database has had.
pub const MIGRATIONS_TABLE: &str = "sluice_migrations";
use crate::channels::ChannelError;

/// Applies each `(name, script)` migration `conn`'s database has not had
/// yet, in order, each atomically with its record; returns each name with
/// `true` when it was applied now. A migration applied before with another
/// checksum is refused: what the database has is not what the file says.
pub(super) fn apply(
    conn: &mut Connection,
    migrations: &[(String, String)],
) -> Result<Vec<(String, bool)>, ChannelError> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
            name TEXT PRIMARY KEY,
            applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
            checksum TEXT
        )"
    ))
    .map_err(unavailable)?;
    // A record made before checksums existed gets the column; its rows
    // take the checksum of the file the next time they are seen.
    let has_checksum: bool = conn
        .query_row(
            &format!("SELECT count(*) FROM pragma_table_info('{MIGRATIONS_TABLE}') WHERE name = 'checksum'"),
            [],
            |r| r.get(0),
        )
        .map_err(unavailable)?;
    if !has_checksum {
        conn.execute_batch(&format!("ALTER TABLE {MIGRATIONS_TABLE} ADD COLUMN checksum TEXT")).map_err(unavailable)?;
    }
    let mut report = Vec::new();
    for (name, sql) in migrations {
        let checksum = checksum(sql);
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(unavailable)?;
        let applied: Option<Option<String>> = tx
            .query_row(&format!("SELECT checksum FROM {MIGRATIONS_TABLE} WHERE name = ?1"), [name], |r| r.get(0))
            .optional()
            .map_err(unavailable)?;
        match applied {
            None => {
                tx.execute_batch(sql).map_err(|e| ChannelError::Invalid(format!("migration {name}: {e}")))?;
                tx.execute(
                    &format!("INSERT INTO {MIGRATIONS_TABLE} (name, checksum) VALUES (?1, ?2)"),
                    [name, &checksum],
                )
                .map_err(unavailable)?;
            }
            Some(None) => {
                tx.execute(&format!("UPDATE {MIGRATIONS_TABLE} SET checksum = ?2 WHERE name = ?1"), [name, &checksum])
                    .map_err(unavailable)?;
            }
            Some(Some(recorded)) if recorded != checksum => return Err(edited(name, &recorded, &checksum)),
            Some(Some(_)) => {}
        }
        tx.commit().map_err(unavailable)?;
        report.push((name.clone(), applied.is_none()));
    }
    Ok(report)
}

/// The refusal of a migration applied with checksum `recorded` whose file
/// now has `now`.
pub fn edited(name: &str, recorded: &str, now: &str) -> ChannelError {
    ChannelError::Invalid(format!(
        "migration {name} was applied with checksum {recorded}, but the file now has {now}: \
         an applied migration must not change; put the change in a new migration"
    ))
}

/// The SHA-256 of a migration's script, in hex.
pub fn checksum(sql: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(sql.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}
