//! One PostgreSQL role per service, holding exactly the service's grant:
//! `SELECT`, `INSERT`, `UPDATE`, `DELETE` on the tables its manifest lists
//! for the channel, `CREATE` on the schema with `raw-sql`. A service's own
//! SQL runs under `SET LOCAL ROLE` to it, so PostgreSQL itself refuses what
//! the grant does not allow.
//!
//! A role is made and its privileges set the first time the service uses
//! the channel, and again when its grant changed (a reloaded manifest) or
//! the schema did (a migration, which may add tables a `"*"` grant covers).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use postgres::Client;

use super::{pg_error, quote};
use crate::channels::ChannelError;
use crate::manifest::ChannelGrant;

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
        client: &mut Client,
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
                Err(e) => return Err(pg_error(e)),
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
fn sync(client: &mut Client, role: &str, grant: &ChannelGrant) -> Result<(), postgres::Error> {
    let quoted = quote(role);
    let mut tx = client.transaction()?;
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
    let tables: Vec<String> = tx
        .query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'p', 'f')",
            &[],
        )?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let mut script = format!(
        "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {quoted}; REVOKE CREATE ON SCHEMA public FROM {quoted};"
    );
    for (privilege, set) in
        [("SELECT", &grant.reads), ("INSERT", &grant.inserts), ("UPDATE", &grant.updates), ("DELETE", &grant.deletes)]
    {
        // `allows` leaves out the host's own tables (`sluice_…`), even
        // for `"*"`.
        let named: Vec<String> =
            tables.iter().filter(|t| set.allows(t)).map(|t| format!("public.{}", quote(t))).collect();
        if !named.is_empty() {
            script.push_str(&format!("GRANT {privilege} ON {} TO {quoted};", named.join(", ")));
        }
    }
    if grant.raw_sql {
        script.push_str(&format!("GRANT CREATE ON SCHEMA public TO {quoted};"));
    }
    tx.batch_execute(&script)?;
    tx.commit()
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
