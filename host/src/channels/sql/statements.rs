//! Statements a connection has judged, so that a service's statement is
//! prepared and judged under its grant once per connection, not on every
//! read and command.
//!
//! A statement's verdict depends on the text, the rules it was judged
//! under (the service's grant on the channel, whether it may write) and,
//! for a write, the schema's foreign keys; it is kept under all of those.
//! A kept statement then comes from rusqlite's statement cache, with the
//! gate applied as it was judged ([`super::guard::Gate::enter_judged`]).
//! If the schema changed since, SQLite prepares the statement again when
//! it runs, and the authorizer judges each action of that preparation
//! against the same grant, as it does for any statement.

use std::collections::HashMap;
use std::sync::Arc;

use super::guard::Judged;
use super::implied::Keys;
use crate::manifest::ChannelGrant;

/// How many verdicts one connection keeps; past that it forgets them all
/// (a service that writes a new statement text every call gains nothing
/// from them, and must not grow the host's memory).
const MOST: usize = 512;

/// Statements prepared on this connection will be kept by rusqlite.
pub(super) const STATEMENT_CACHE: usize = 128;

/// One verdict: the rules it was made under, and what judging found.
struct Verdict {
    // Held so that the address compared in `find` names this grant and no
    // later one.
    grant: Option<Arc<ChannelGrant>>,
    writes: bool,
    keys: Option<Arc<Keys>>,
    judged: Judged,
}

/// A connection's verdicts, by statement text.
#[derive(Default)]
pub(super) struct Verdicts {
    by_sql: HashMap<String, Vec<Verdict>>,
    count: usize,
}

fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

impl Verdicts {
    /// What judging `sql` under these rules found, if it was judged before.
    pub(super) fn find(
        &self,
        sql: &str,
        grant: &Option<Arc<ChannelGrant>>,
        writes: bool,
        keys: &Option<Arc<Keys>>,
    ) -> Option<&Judged> {
        self.by_sql
            .get(sql)?
            .iter()
            .find(|v| v.writes == writes && same(&v.grant, grant) && same(&v.keys, keys))
            .map(|v| &v.judged)
    }

    /// Keeps what judging `sql` under these rules found.
    pub(super) fn keep(
        &mut self,
        sql: &str,
        grant: &Option<Arc<ChannelGrant>>,
        writes: bool,
        keys: &Option<Arc<Keys>>,
        judged: Judged,
    ) {
        if self.count >= MOST {
            self.by_sql.clear();
            self.count = 0;
        }
        let verdict = Verdict { grant: grant.clone(), writes, keys: keys.clone(), judged };
        self.by_sql.entry(sql.to_string()).or_default().push(verdict);
        self.count += 1;
    }
}

/// A statement either prepared afresh (and judged now) or taken from
/// rusqlite's cache (judged before).
pub(super) enum Prepared<'c> {
    Fresh(rusqlite::Statement<'c>),
    Cached(rusqlite::CachedStatement<'c>),
}

impl<'c> std::ops::Deref for Prepared<'c> {
    type Target = rusqlite::Statement<'c>;

    fn deref(&self) -> &Self::Target {
        match self {
            Prepared::Fresh(s) => s,
            Prepared::Cached(s) => s,
        }
    }
}

impl std::ops::DerefMut for Prepared<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Prepared::Fresh(s) => s,
            Prepared::Cached(s) => s,
        }
    }
}
