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
use crate::channels::grant::ChannelGrant;

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

#[cfg(test)]
mod tests {
    use crate::channels::SqlChannel as _;
    use crate::channels::sql::ops::SqlOp;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::super::SqliteChannel;
    use crate::channels::ops::Operation;
    use crate::channels::{Caller, Channel, ChannelError, Denial};

    fn channel() -> Result<(tempfile::TempDir, SqliteChannel), ChannelError> {
        let dir = tempfile::tempdir().map_err(|e| ChannelError::Unavailable(e.to_string()))?;
        let channel = SqliteChannel::open(&format!("sqlite://{}", dir.path().join("t.db").display()))?;
        host_runs(
            &channel,
            &["CREATE TABLE t (a INTEGER PRIMARY KEY)", "CREATE TABLE secret (b)", "CREATE VIEW v AS SELECT a FROM t"],
        )?;
        Ok((dir, channel))
    }

    fn host_runs(channel: &SqliteChannel, statements: &[&str]) -> Result<(), ChannelError> {
        let host = Caller::host(Instant::now() + Duration::from_secs(60));
        let mut tx = channel.begin()?;
        for sql in statements {
            tx.apply(&Operation::Sql(SqlOp::Execute { sql: (*sql).into(), params: vec![] }), &host)?;
        }
        tx.commit()
    }

    fn service(grant: &str) -> Caller {
        let grant: crate::channels::grant::ChannelGrant = toml::from_str(grant).expect("grant");
        Caller::service("probe", Some(Arc::new(grant)), Instant::now() + Duration::from_secs(60))
    }

    fn denied(result: Result<crate::channels::Reading, ChannelError>) -> bool {
        matches!(result, Err(ChannelError::Denied(Denial::Table { .. })))
    }

    /// One connection serves every service: a statement judged under one
    /// grant is judged again under another, whatever the cache holds.
    #[test]
    fn a_statement_is_judged_again_for_another_grant() -> Result<(), ChannelError> {
        let (_dir, channel) = channel()?;
        let (wide, narrow) = (service("reads = [\"t\", \"secret\"]"), service("reads = [\"t\"]"));
        for _ in 0..3 {
            channel.query("SELECT b FROM secret", &[], &wide, usize::MAX)?;
            assert!(denied(channel.query("SELECT b FROM secret", &[], &narrow, usize::MAX)));
        }
        Ok(())
    }

    /// A view redefined after a statement over it was judged: SQLite
    /// prepares the kept statement again, and the grant is applied to what
    /// the view reads now.
    #[test]
    fn a_kept_statement_is_judged_again_when_the_schema_changes() -> Result<(), ChannelError> {
        let (_dir, channel) = channel()?;
        let caller = service("reads = [\"t\", \"v\"]");
        for _ in 0..2 {
            assert_eq!(channel.query("SELECT a FROM v", &[], &caller, usize::MAX)?.tables, ["t", "v"]);
        }
        host_runs(&channel, &["DROP VIEW v", "CREATE VIEW v AS SELECT b AS a FROM secret"])?;
        assert!(denied(channel.query("SELECT a FROM v", &[], &caller, usize::MAX)));
        Ok(())
    }

    /// A write refused under a grant stays refused: only accepted
    /// statements are kept.
    #[test]
    fn a_refused_write_is_refused_every_time() -> Result<(), ChannelError> {
        let (_dir, channel) = channel()?;
        let caller = service("reads = [\"t\"]\ninserts = [\"t\"]");
        for _ in 0..3 {
            channel.check("INSERT INTO t (a) VALUES (1)", &caller)?;
            let replace = channel.check("INSERT OR REPLACE INTO t (a) VALUES (1)", &caller);
            assert!(matches!(replace, Err(ChannelError::Denied(_))), "{replace:?}");
            let secret = channel.check("INSERT INTO secret (b) VALUES (1)", &caller);
            assert!(matches!(secret, Err(ChannelError::Denied(_))), "{secret:?}");
        }
        Ok(())
    }
}
