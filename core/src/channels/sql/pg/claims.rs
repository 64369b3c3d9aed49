//! What keeps a scope's last run from losing on PostgreSQL, across every
//! host on the database ([`crate::channels::Claim`]): advisory locks, one
//! per claimed table.
//!
//! - A save takes its tables' locks **shared**, as the first statement of
//!   its transaction, before any row lock: saves never wait for each other
//!   here.
//! - A last run takes its tables' locks **exclusive**, on its connection's
//!   session, before its transaction begins (so before its snapshot): it
//!   waits for the saves on those tables already under way, and every save
//!   on them that comes later, on this host or another, waits for it to
//!   end. PostgreSQL queues a lock request behind a waiting one that
//!   conflicts with it, so a stream of saves cannot starve the last run.
//!   Saves on other tables do not wait: one tenant's conflicts hold back
//!   only the writers of the tables its services are granted.
//! - A claim of every table (a grant of `"*"`): its save takes the key
//!   `EVERY_SAVE` exclusive (such saves run one at a time), and its last
//!   run takes `TABLES` and `EVERY_SAVE` exclusive; a claim of some tables
//!   takes `TABLES` shared in its save, and `EVERY_SAVE` shared in its
//!   last run. So a last run of either kind excludes the saves of both.
//! - Every transaction asks for its keys in one statement, in one global
//!   order (the two shared keys first, then the tables' by number), so no
//!   two can each hold a key the other waits for.
//!
//! The locks are the host's (a service's SQL may call no `pg_*` function),
//! in a class of their own (`CLASS`), and end with the transaction (a
//! save's) or with the session's reset after it ([`super::conn`]'s
//! `RESET` unlocks them all; a connection that breaks loses them).

use crate::channels::Claim;
use crate::channels::turns::WAIT;

/// The advisory lock class of Sluice's keys ("SL").
const CLASS: i32 = 0x534c;
/// Taken by every save that claims tables by name.
const TABLES: i32 = 0;
/// Taken by every save that claims every table, and every last run.
const EVERY_SAVE: i32 = 1;

/// The keys of `claim` in their global order, each with whether it is
/// taken exclusive, for a save or (`last_run`) a last run.
fn keys(claim: &Claim, last_run: bool) -> Vec<(i32, bool)> {
    if claim.is_empty() {
        return Vec::new();
    }
    if claim.every_table {
        return if last_run { vec![(TABLES, true), (EVERY_SAVE, true)] } else { vec![(EVERY_SAVE, true)] };
    }
    let mut tables: Vec<i32> = claim.tables.iter().map(|t| key(t)).collect();
    tables.sort_unstable();
    tables.dedup();
    let mut keys = if last_run { vec![(EVERY_SAVE, false)] } else { vec![(TABLES, false)] };
    keys.extend(tables.into_iter().map(|k| (k, last_run)));
    keys
}

/// A table's key: FNV-1a of its name, past the two shared keys. Two
/// tables with one key only wait for each other more often.
fn key(table: &str) -> i32 {
    let hash = table.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    i32::try_from(hash >> 1).unwrap_or(i32::MAX).max(2)
}

/// The statements a save's transaction starts with, taking `claim`'s
/// keys until it ends, waiting at most [`WAIT`] for a last run to end;
/// `None` for an empty claim.
pub(super) fn for_save(claim: &Claim) -> Option<String> {
    locking(claim, false)
}

/// The statements a last run's session runs before its transaction,
/// waiting at most [`WAIT`] for `claim`'s keys; `None` for an empty claim.
pub(super) fn for_last_run(claim: &Claim) -> Option<String> {
    locking(claim, true)
}

/// `claim`'s keys taken in one statement, under a lock timeout of
/// [`WAIT`]: for the transaction (a save) or the session (a last run).
fn locking(claim: &Claim, last_run: bool) -> Option<String> {
    let (lock, scope) = if last_run { ("pg_advisory_lock", "") } else { ("pg_advisory_xact_lock", "LOCAL ") };
    let calls: Vec<String> = keys(claim, last_run)
        .into_iter()
        .map(|(k, exclusive)| format!("{lock}{}({CLASS}, {k})", if exclusive { "" } else { "_shared" }))
        .collect();
    (!calls.is_empty()).then(|| {
        format!(
            "SET {scope}lock_timeout = {}; SELECT {}; SET {scope}lock_timeout = 0",
            WAIT.as_millis(),
            calls.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(tables: &[&str], every_table: bool) -> Claim {
        Claim { tables: tables.iter().map(|t| t.to_string()).collect(), every_table }
    }

    /// Two transactions conflict when one takes a key exclusive that the
    /// other takes at all.
    fn conflict(a: &[(i32, bool)], b: &[(i32, bool)]) -> bool {
        a.iter().any(|(k, x)| b.iter().any(|(l, y)| k == l && (*x || *y)))
    }

    #[test]
    fn a_last_run_excludes_exactly_the_saves_that_may_touch_its_tables() {
        let (stock, orders, other) =
            (claim(&["stock"], false), claim(&["orders", "stock"], false), claim(&["t"], false));
        let every = claim(&[], true);
        let run = |c: &Claim| keys(c, true);
        let save = |c: &Claim| keys(c, false);
        assert!(conflict(&run(&stock), &save(&orders)), "a shared table");
        assert!(!conflict(&run(&stock), &save(&other)), "other tables");
        assert!(conflict(&run(&stock), &save(&every)), "a save of every table");
        assert!(conflict(&run(&every), &save(&other)), "a last run of every table");
        assert!(conflict(&run(&every), &save(&every)));
        assert!(!conflict(&save(&orders), &save(&stock)), "saves do not wait for saves of tables by name");
        assert!(!conflict(&run(&stock), &run(&other)), "last runs on other tables go on together");
        assert!(keys(&Claim::default(), true).is_empty());
    }

    #[test]
    fn keys_come_in_one_order() {
        for last_run in [false, true] {
            let keys = keys(&claim(&["a", "b", "c", "d"], false), last_run);
            assert!(keys.windows(2).all(|w| w[0].0 < w[1].0), "{keys:?}");
        }
        assert!(["a", "orders", "sluice_kv"].iter().all(|t| key(t) >= 2));
    }
}
