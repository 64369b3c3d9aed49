//! One PostgreSQL role per service, holding exactly the service's grant:
//! `SELECT`, `INSERT`, `UPDATE`, `DELETE` on the tables of schema `public`
//! its manifest lists for the channel, `CREATE` on the schema with
//! `raw-sql` (see [`sync`] for what the statements the host builds add).
//! Every statement run for the service, its own SQL and the inserts,
//! updates and deletes the host builds for it, runs under `SET LOCAL ROLE`
//! to it, so PostgreSQL itself refuses what the grant does not allow: the
//! catalogs, the host's tables, another service's tables.
//!
//! A role is made and its privileges set the first time the service uses
//! the channel, and again when its grant changed (a reloaded manifest) or
//! the schema did (a migration, which may add tables a `"*"` grant covers).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::conn::Conn;
use super::link::Link;
use super::quote;
use crate::channels::ChannelError;
use crate::channels::grant::ChannelGrant;

/// The roles this channel has set up, with the grant each was given.
#[derive(Default)]
pub(super) struct Roles {
    synced: Mutex<HashMap<String, (ChannelGrant, u64, String)>>,
    /// Held while a role is set up: the scopes that meet a role not set up
    /// yet wait for the one setting it up instead of racing it.
    setting_up: Mutex<()>,
    /// Bumped when the schema changes: every role is set up again.
    generation: AtomicU64,
}

impl Roles {
    /// Sets every role up again on its next use.
    pub(super) fn schema_changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Forgets `service`'s role, so that its next use sets it up again (a
    /// table it is granted may have appeared since).
    pub(super) fn forget(&self, service: &str) {
        if let Ok(mut synced) = self.synced.lock() {
            synced.remove(service);
        }
    }

    /// The quoted role of `service` when it is set up with `grant` for the
    /// current schema: no statement needed.
    pub(super) fn cached(&self, service: &str, grant: &ChannelGrant) -> Option<String> {
        let generation = self.generation.load(Ordering::SeqCst);
        let synced = self.synced.lock().ok()?;
        let (g, n, role) = synced.get(service)?;
        (g == grant && *n == generation).then(|| role.clone())
    }

    /// The quoted role of `service`, set up with `grant` on `client` (a
    /// host connection, outside any transaction) unless it already is.
    pub(super) fn ensure(
        &self,
        client: &mut Conn,
        service: &str,
        grant: &ChannelGrant,
    ) -> Result<String, ChannelError> {
        if let Some(role) = self.cached(service, grant) {
            return Ok(role);
        }
        let _one_at_a_time = self.setting_up.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(role) = self.cached(service, grant) {
            return Ok(role);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let role = role_name(service);
        // Two hosts (or two threads) may set up the same role at once;
        // PostgreSQL then reports a duplicate or a concurrent update: set it
        // up again.
        let mut tried = 0;
        loop {
            match sync(client, &role, grant) {
                Ok(()) => break,
                Err(_) if tried < 2 => tried += 1,
                Err(e) => return Err(e),
            }
        }
        let quoted = quote(&role);
        if let Ok(mut synced) = self.synced.lock() {
            synced.insert(service.to_string(), (grant.clone(), generation, quoted.clone()));
        }
        Ok(quoted)
    }
}

/// The advisory lock hosts take to set a role up (a constant they agree on).
const SYNC_LOCK: i64 = 0x0073_6c75_6972_6f6c;

/// The longest a role's set-up may take.
const SYNC_TIMEOUT: std::time::Duration = crate::channels::turns::WAIT;

/// The role of a service: `sluice_` and its name made an identifier, with a
/// hash of the exact name, so that two names never share a role and the
/// whole stays under PostgreSQL's 63 bytes.
pub(super) fn role_name(service: &str) -> String {
    use sha2::Digest as _;
    let plain: String = service
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .take(40)
        .collect();
    let hash = sha2::Sha256::digest(service.as_bytes());
    format!("sluice_{plain}_{:02x}{:02x}{:02x}{:02x}", hash[0], hash[1], hash[2], hash[3])
}

/// Creates the role if missing, makes the host a member (so that it may
/// `SET ROLE` to it without being a superuser), then replaces its
/// privileges with the grant's, in one transaction.
///
/// The privileges are the grant's tables of schema `public` (never the
/// host's own, whatever the grant says), plus what the statements the host
/// builds for the service need, as on SQLite: an update or delete finds its
/// rows by their columns (`SELECT` on a table it may update or delete
/// from), an insert returns the new row's key (`SELECT` on that table's
/// primary key columns only) and takes it from the table's own sequence
/// (`USAGE` on the sequences its columns own).
fn sync(client: &mut Conn, role: &str, grant: &ChannelGrant) -> Result<(), ChannelError> {
    client.host_wait(SYNC_TIMEOUT + super::link::GRACE);
    client.in_transaction(|tx| sync_in(tx, role, grant))
}

/// [`sync`]'s statements, in its transaction.
fn sync_in(tx: &mut Link, role: &str, grant: &ChannelGrant) -> Result<(), ChannelError> {
    let quoted = quote(role);
    // The host's own statements, bounded like a save's wait for a turn: a
    // catalog lock held elsewhere fails the set-up instead of stalling it.
    tx.batch_execute(&format!("SET LOCAL statement_timeout = {}", SYNC_TIMEOUT.as_millis()))?;
    // Hosts sharing the database set roles up one at a time.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SYNC_LOCK])?;
    let exists = !tx.query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])?.is_empty();
    if !exists {
        tx.batch_execute(&format!("CREATE ROLE {quoted} NOLOGIN"))?;
    }
    let member = tx.query_one(
        "SELECT pg_has_role(current_user, $1, 'MEMBER') OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
        &[&role],
    )?;
    if !member.get::<_, bool>(0) {
        tx.batch_execute(&format!("GRANT {quoted} TO CURRENT_USER"))?;
    }
    let names = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, String)> {
        rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, String>(1))).collect()
    };
    // The tables the host may grant on: those of `public` whose owner it
    // is a member of (it ran their migration, or a service's `raw-sql`
    // made them). Another user's table is not the application's to the
    // host, and no role gets it.
    let tables: Vec<String> = tx
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'p', 'f') \
               AND pg_has_role(c.relowner, 'USAGE')",
            &[],
        )?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    // (table, primary key column) and (table, sequence one of its columns owns).
    let keys = names(tx.query(
        "SELECT c.relname::text, a.attname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) \
         WHERE i.indisprimary AND n.nspname = 'public'",
        &[],
    )?);
    let sequences = names(tx.query(
        "SELECT t.relname::text, s.relname::text FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace \
         JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid \
              AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') \
         JOIN pg_class t ON t.oid = d.refobjid \
         WHERE s.relkind = 'S' AND n.nspname = 'public' AND pg_has_role(s.relowner, 'USAGE')",
        &[],
    )?);
    let public = |t: &str| format!("public.{}", quote(t));
    let mut script = format!("REVOKE CREATE ON SCHEMA public FROM {quoted};");
    if !tables.is_empty() {
        let all: Vec<String> = tables.iter().map(|t| public(t)).collect();
        script.push_str(&format!("REVOKE ALL ON {} FROM {quoted};", all.join(", ")));
    }
    if !sequences.is_empty() {
        let all: Vec<String> = sequences.iter().map(|(_, s)| public(s)).collect();
        script.push_str(&format!("REVOKE ALL ON SEQUENCE {} FROM {quoted};", all.join(", ")));
    }
    let mut grant_on = |privilege: &str, objects: Vec<String>| {
        if !objects.is_empty() {
            script.push_str(&format!("GRANT {privilege} ON {} TO {quoted};", objects.join(", ")));
        }
    };
    // `allows` leaves out the host's own tables (`sluice_…`), even for `"*"`.
    let finds = |t: &String| grant.sql.reads.allows(t) || grant.sql.updates.allows(t) || grant.sql.deletes.allows(t);
    grant_on("SELECT", tables.iter().filter(|t| finds(t)).map(|t| public(t)).collect());
    for (privilege, set) in
        [("INSERT", &grant.sql.inserts), ("UPDATE", &grant.sql.updates), ("DELETE", &grant.sql.deletes)]
    {
        grant_on(privilege, tables.iter().filter(|t| set.allows(t)).map(|t| public(t)).collect());
    }
    for (table, column) in keys.iter().filter(|(t, _)| grant.sql.inserts.allows(t) && !finds(t)) {
        grant_on(&format!("SELECT ({})", quote(column)), vec![public(table)]);
    }
    let owned: Vec<String> = sequences
        .iter()
        .filter(|(t, _)| grant.sql.inserts.allows(t))
        .map(|(_, s)| format!("SEQUENCE {}", public(s)))
        .collect();
    for sequence in owned {
        grant_on("USAGE", vec![sequence]);
    }
    if grant.sql.raw_sql {
        script.push_str(&format!("GRANT CREATE ON SCHEMA public TO {quoted};"));
    }
    tx.batch_execute(&script)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_identifiers_unique_per_name_and_short() {
        let a = role_name("orders");
        assert!(a.starts_with("sluice_orders_"));
        assert_ne!(role_name("a-b"), role_name("a_b"));
        assert!(role_name(&"x".repeat(300)).len() <= 63);
        assert!(role_name("Ünï\"; DROP").chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }
}
