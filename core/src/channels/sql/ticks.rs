//! The ticks of scheduled functions ([`crate::manifest::Schedule`]) that
//! have run: one row per schedule in `sluice_ticks` of a `sql` channel,
//! with the last tick whose scope saved. A host that finds a later tick due
//! claims the row for a lease; the tick is written by a command of the host
//! in the scheduled scope's own save, only while the claim is still its own
//! (the command expects one row), so each tick's scope saves once across
//! every host on the database. A scope that did not save gives the claim
//! back; a host that dies holding it loses it when the lease runs out.

use std::sync::Arc;
use std::time::Duration;

use crate::bindings::Value;
use crate::channels::ops::Operation;
use crate::channels::outbox::now_ms;
use crate::channels::sql::ops::SqlOp;
use crate::channels::{Channel, ChannelError, in_host_transaction};

const TABLE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS sluice_ticks (
    schedule TEXT PRIMARY KEY, tick_ms INTEGER NOT NULL, owner TEXT, lease_until_ms INTEGER
)";
const TABLE_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS sluice_ticks (
    schedule TEXT PRIMARY KEY, tick_ms BIGINT NOT NULL, owner TEXT, lease_until_ms BIGINT
)";
/// Claims schedule `?1` for tick `?2` as `?3` until `?4`, unless that tick
/// (or a later one) ran, or another claim's lease holds at `?5`.
const CLAIM: &str = "INSERT INTO sluice_ticks (schedule, tick_ms, owner, lease_until_ms) VALUES (?1, -1, ?3, ?4) \
     ON CONFLICT (schedule) DO UPDATE SET owner = excluded.owner, lease_until_ms = excluded.lease_until_ms \
     WHERE sluice_ticks.tick_ms < ?2 AND (sluice_ticks.owner IS NULL OR sluice_ticks.lease_until_ms < ?5)";
const LOOK: &str = "SELECT tick_ms, owner FROM sluice_ticks WHERE schedule = ?1";
const DONE: &str = "UPDATE sluice_ticks SET tick_ms = ?1, owner = NULL, lease_until_ms = NULL \
     WHERE schedule = ?2 AND owner = ?3";
const RELEASE: &str = "UPDATE sluice_ticks SET owner = NULL, lease_until_ms = NULL WHERE schedule = ?1 AND owner = ?2";

/// A tick claimed for one run.
#[derive(Debug, Clone)]
pub struct TickClaim {
    /// The schedule.
    pub schedule: String,
    /// The tick.
    pub tick_ms: i64,
    owner: String,
}

/// Whether a tick is this host's to run.
#[derive(Debug)]
pub enum Due {
    /// Run it.
    Run(TickClaim),
    /// It ran (or a later one did): the last tick that ran.
    Ran(i64),
    /// Another run holds it.
    Held,
}

/// The ticks kept in one `sql` channel.
pub struct Ticks {
    channel: Arc<dyn Channel>,
    name: String,
    lease: Duration,
}

impl Ticks {
    /// The ticks in `channel` (called `name`), each claimed for `lease`;
    /// creates the table if it is missing.
    pub fn open(name: &str, channel: Arc<dyn Channel>, lease: Duration) -> Result<Ticks, ChannelError> {
        let Some(sql) = channel.sql() else {
            return Err(ChannelError::Invalid(format!("channel {name} is not a sql channel")));
        };
        let table = if sql.dialect() == "postgres" { TABLE_POSTGRES } else { TABLE_SQLITE };
        let ticks = Ticks { channel, name: name.to_string(), lease };
        in_host_transaction(ticks.channel.as_ref(), |tx, host| tx.apply(&execute(table, Vec::new()), host).map(drop))?;
        Ok(ticks)
    }

    /// The channel the ticks are kept in.
    pub fn channel(&self) -> &str {
        &self.name
    }

    /// Claims `tick_ms` of `schedule`, or says why not.
    pub fn claim(&self, schedule: &str, tick_ms: i64) -> Result<Due, ChannelError> {
        let owner = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        let params = vec![
            text(schedule),
            Value::Integer(tick_ms),
            text(&owner),
            Value::Integer(now.saturating_add(lease_ms)),
            Value::Integer(now),
        ];
        let row = in_host_transaction(self.channel.as_ref(), |tx, host| {
            tx.apply(&execute(CLAIM, params.clone()), host)?;
            Ok(tx.rows(LOOK, &[text(schedule)], host)?.values.into_iter().next())
        })?;
        let mut cells = row.unwrap_or_default().into_iter();
        let ran = match cells.next() {
            Some(Value::Integer(n)) => n,
            _ => return Err(ChannelError::Unavailable(format!("the claim of schedule {schedule:?} left no row"))),
        };
        Ok(match cells.next() {
            _ if ran >= tick_ms => Due::Ran(ran),
            Some(Value::Text(holder)) if holder == owner => {
                Due::Run(TickClaim { schedule: schedule.to_string(), tick_ms, owner })
            }
            _ => Due::Held,
        })
    }

    /// The host's command that marks `claim`'s tick as run, in the save of
    /// the scope that ran it; it must change one row.
    pub fn done(&self, claim: &TickClaim) -> Operation {
        execute(DONE, vec![Value::Integer(claim.tick_ms), text(&claim.schedule), text(&claim.owner)])
    }

    /// Gives `claim` back: its scope did not save.
    pub fn release(&self, claim: &TickClaim) -> Result<(), ChannelError> {
        let params = vec![text(&claim.schedule), text(&claim.owner)];
        in_host_transaction(self.channel.as_ref(), |tx, host| {
            tx.apply(&execute(RELEASE, params.clone()), host).map(drop)
        })
    }
}

fn execute(sql: &str, params: Vec<Value>) -> Operation {
    Operation::Sql(SqlOp::Execute { sql: sql.into(), params })
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::Caller;
    use crate::channels::ops::Outcome;
    use crate::channels::sql::SqliteChannel;
    use std::time::Instant;

    #[test]
    fn a_tick_runs_once_and_a_released_one_runs_again() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("main.db").display());
        let channel: Arc<dyn Channel> = Arc::new(SqliteChannel::open(&url).expect("open"));
        let ticks = Ticks::open("main", Arc::clone(&channel), Duration::from_secs(30)).expect("ticks");
        let Ok(Due::Run(first)) = ticks.claim("s", 1000) else { panic!("a new tick runs") };
        assert!(matches!(ticks.claim("s", 1000), Ok(Due::Held)), "claimed by a run");
        ticks.release(&first).expect("release");
        let Ok(Due::Run(second)) = ticks.claim("s", 1000) else { panic!("a released tick runs again") };
        let mut tx = channel.begin().expect("begin");
        let host = Caller::host(Instant::now() + Duration::from_secs(5));
        assert_eq!(tx.apply(&ticks.done(&first), &host), Ok(Outcome::Affected(0)), "the old claim cannot save");
        assert_eq!(tx.apply(&ticks.done(&second), &host), Ok(Outcome::Affected(1)));
        tx.commit().expect("commit");
        assert!(matches!(ticks.claim("s", 1000), Ok(Due::Ran(1000))), "it ran");
        assert!(matches!(ticks.claim("s", 500), Ok(Due::Ran(1000))), "an earlier tick is not run");
        assert!(matches!(ticks.claim("s", 2000), Ok(Due::Run(_))), "the next tick runs");
    }
}
