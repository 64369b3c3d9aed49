//! The answers of idempotent requests: a request that carries a key
//! (`Idempotency-Key`, `sluice call --idempotency-key`) claims it in
//! `sluice_requests` of a `sql` channel before its scope runs, and its
//! answer is written there by a command of the host in the scope's own
//! save ([`Answers::record`]), so it exists if and only if the save
//! committed. A repeat of the key is answered from the row without running
//! anything, on any host on the database.
//!
//! A row is `pending` while its first request runs, under a lease: a host
//! that died running it leaves a lease that runs out, and the next repeat
//! takes the key over. The answer is written only by the claim's owner and
//! only while the row is still its pending claim (the command expects one
//! row), so a run whose lease was taken over cannot save: one of the two
//! applies, never both. A request that did not save gives its key back
//! ([`Answers::release`]): nothing was applied, so a repeat runs again.
//! Keys are kept for [`Answers::keep`] after their answer, then expire.

use std::sync::Arc;
use std::time::Duration;

use crate::bindings::Value;
use crate::channels::ops::{Operation, Outcome};
use crate::channels::outbox::now_ms;
use crate::channels::sql::ops::SqlOp;
use crate::channels::{Caller, Channel, ChannelError, Transaction};

const TABLE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS sluice_requests (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    owner TEXT,
    lease_until_ms INTEGER,
    status INTEGER,
    headers TEXT,
    body BLOB,
    done_ms INTEGER
)";
const TABLE_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS sluice_requests (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    owner TEXT,
    lease_until_ms BIGINT,
    status BIGINT,
    headers TEXT,
    body BYTEA,
    done_ms BIGINT
)";
/// Takes the key for a run: a new key, a pending one whose lease ran out,
/// or an answer older than the keep time. `?1` key, `?2` fingerprint,
/// `?3` owner, `?4` lease end, `?5` now, `?6` the oldest answer kept.
const CLAIM: &str = "INSERT INTO sluice_requests (key, fingerprint, state, owner, lease_until_ms) \
     VALUES (?1, ?2, 'pending', ?3, ?4) \
     ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, state = 'pending', \
       owner = excluded.owner, lease_until_ms = excluded.lease_until_ms, status = NULL, headers = NULL, \
       body = NULL, done_ms = NULL \
     WHERE (sluice_requests.state = 'pending' AND sluice_requests.lease_until_ms < ?5) \
        OR (sluice_requests.state = 'done' AND sluice_requests.done_ms < ?6)";
const LOOK: &str = "SELECT state, fingerprint, owner, status, headers, body FROM sluice_requests WHERE key = ?1";
const RECORD: &str = "UPDATE sluice_requests SET state = 'done', status = ?1, headers = ?2, body = ?3, done_ms = ?4, \
     owner = NULL, lease_until_ms = NULL WHERE key = ?5 AND owner = ?6 AND state = 'pending'";
const RELEASE: &str = "DELETE FROM sluice_requests WHERE key = ?1 AND owner = ?2 AND state = 'pending'";
const SWEEP: &str = "DELETE FROM sluice_requests WHERE state = 'done' AND done_ms < ?1";

/// The longest key taken: longer ones are the client's error.
pub const MAX_KEY_BYTES: usize = 255;

/// A stored answer: what the first request was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its HTTP status.
    pub status: u16,
    /// Its headers, as sent (for a `wasi:http` route; none for a typed one).
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
}

/// A key claimed for one run.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The key.
    pub key: String,
    /// The run that holds it.
    pub owner: String,
}

/// What a request with a key is to do.
#[derive(Debug)]
pub enum Begun {
    /// Run: the key is this request's until its save or release.
    Run(Claim),
    /// Answer with what the first request saved.
    Stored(Stored),
    /// The key is held by a request that is still running.
    Running,
    /// The key was used for a different request.
    Different,
}

/// The answers kept in one `sql` channel.
pub struct Answers {
    channel: Arc<dyn Channel>,
    name: String,
    keep: Duration,
    lease: Duration,
}

impl Answers {
    /// The answers in `channel` (called `name`), kept for `keep`, each key
    /// claimed for `lease`; creates the table if it is missing.
    pub fn open(
        name: &str,
        channel: Arc<dyn Channel>,
        keep: Duration,
        lease: Duration,
    ) -> Result<Answers, ChannelError> {
        let Some(sql) = channel.sql() else {
            return Err(ChannelError::Invalid(format!("channel {name} is not a sql channel")));
        };
        let table = if sql.dialect() == "postgres" { TABLE_POSTGRES } else { TABLE_SQLITE };
        let answers = Answers { channel, name: name.to_string(), keep, lease };
        answers.host_tx(|tx, host| tx.apply(&execute(table, Vec::new()), host).map(drop))?;
        Ok(answers)
    }

    /// The channel the answers are kept in.
    pub fn channel(&self) -> &str {
        &self.name
    }

    /// How long an answer is kept.
    pub fn keep(&self) -> Duration {
        self.keep
    }

    /// Claims `key` for a request whose content hashes to `fingerprint`,
    /// for the lease (past it, a repeat may take the key over), or says
    /// why not.
    pub fn begin(&self, key: &str, fingerprint: &str) -> Result<Begun, ChannelError> {
        let owner = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let lease_ms = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        let keep_ms = i64::try_from(self.keep.as_millis()).unwrap_or(i64::MAX);
        let params = vec![
            text(key),
            text(fingerprint),
            text(&owner),
            Value::Integer(now.saturating_add(lease_ms)),
            Value::Integer(now),
            Value::Integer(now.saturating_sub(keep_ms)),
        ];
        let row = self.host_tx(|tx, host| {
            tx.apply(&execute(CLAIM, params.clone()), host)?;
            let rows = tx.rows(LOOK, &[text(key)], host)?;
            Ok(rows.values.into_iter().next())
        })?;
        let Some(row) = row else {
            return Err(ChannelError::Unavailable(format!("the claim of key {key:?} left no row")));
        };
        let mut cells = row.into_iter();
        let (state, stored_fingerprint, holder) = (cells.next(), cells.next(), cells.next());
        if as_text(stored_fingerprint).as_deref() != Some(fingerprint) {
            return Ok(Begun::Different);
        }
        match as_text(state).as_deref() {
            Some("pending") if as_text(holder).as_deref() == Some(owner.as_str()) => {
                Ok(Begun::Run(Claim { key: key.to_string(), owner }))
            }
            Some("pending") => Ok(Begun::Running),
            _ => {
                let status = match cells.next() {
                    Some(Value::Integer(n)) => u16::try_from(n).unwrap_or(500),
                    _ => 500,
                };
                let headers = as_text(cells.next()).and_then(|h| serde_json::from_str(&h).ok()).unwrap_or_default();
                let body = match cells.next() {
                    Some(Value::Blob(b)) => b,
                    Some(Value::Text(t)) => t.into_bytes(),
                    _ => Vec::new(),
                };
                Ok(Begun::Stored(Stored { status, headers, body }))
            }
        }
    }

    /// The host's command that stores `answer` for `claim` in the save of
    /// the scope that ran it; it must change one row (see the module docs).
    pub fn record(&self, claim: &Claim, answer: &Stored) -> Operation {
        let headers = serde_json::to_string(&answer.headers).unwrap_or_else(|_| "[]".into());
        execute(
            RECORD,
            vec![
                Value::Integer(i64::from(answer.status)),
                Value::Text(headers),
                Value::Blob(answer.body.clone()),
                Value::Integer(now_ms()),
                text(&claim.key),
                text(&claim.owner),
            ],
        )
    }

    /// Gives `claim`'s key back: its request did not save, so a repeat
    /// runs again.
    pub fn release(&self, claim: &Claim) -> Result<(), ChannelError> {
        let params = vec![text(&claim.key), text(&claim.owner)];
        self.host_tx(|tx, host| tx.apply(&execute(RELEASE, params.clone()), host).map(drop))
    }

    /// Deletes the answers past the keep time; returns how many.
    pub fn sweep(&self) -> Result<u64, ChannelError> {
        let keep_ms = i64::try_from(self.keep.as_millis()).unwrap_or(i64::MAX);
        let oldest = Value::Integer(now_ms().saturating_sub(keep_ms));
        self.host_tx(|tx, host| match tx.apply(&execute(SWEEP, vec![oldest.clone()]), host)? {
            Outcome::Affected(n) => Ok(n),
            _ => Ok(0),
        })
    }

    /// Runs `work` in a short transaction of the host's.
    fn host_tx<T>(
        &self,
        work: impl Fn(&mut dyn Transaction, &Caller) -> Result<T, ChannelError>,
    ) -> Result<T, ChannelError> {
        crate::channels::in_host_transaction(self.channel.as_ref(), work)
    }
}

/// What tells one request from another under the same key: the SHA-256
/// of `parts`, each with its length before it, in hex.
pub fn fingerprint(parts: &[&[u8]]) -> String {
    use sha2::{Digest as _, Sha256};
    let mut sha = Sha256::new();
    for part in parts {
        sha.update((part.len() as u64).to_le_bytes());
        sha.update(part);
    }
    sha.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn execute(sql: &str, params: Vec<Value>) -> Operation {
    Operation::Sql(SqlOp::Execute { sql: sql.into(), params })
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn as_text(value: Option<Value>) -> Option<String> {
    match value {
        Some(Value::Text(t)) => Some(t),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::sql::SqliteChannel;
    use std::time::Instant;

    fn answers(dir: &tempfile::TempDir) -> Answers {
        let channel: Arc<dyn Channel> =
            Arc::new(SqliteChannel::open(&format!("sqlite://{}", dir.path().join("main.db").display())).expect("open"));
        Answers::open("main", channel, Duration::from_secs(60), Duration::from_secs(30)).expect("answers")
    }

    fn saved(answers: &Answers, claim: &Claim, stored: &Stored) {
        let mut tx = answers.channel.begin().expect("begin");
        let outcome = tx.apply(&answers.record(claim, stored), &Caller::host(Instant::now() + Duration::from_secs(5)));
        assert_eq!(outcome, Ok(Outcome::Affected(1)));
        tx.commit().expect("commit");
    }

    #[test]
    fn a_key_runs_once_and_then_answers_from_its_row() {
        let dir = tempfile::tempdir().expect("dir");
        let answers = answers(&dir);
        let Ok(Begun::Run(claim)) = answers.begin("k1", "f1") else { panic!("a new key runs") };
        assert!(matches!(answers.begin("k1", "f1"), Ok(Begun::Running)), "a repeat while it runs");
        assert!(matches!(answers.begin("k1", "f2"), Ok(Begun::Different)), "another request, same key");
        let stored = Stored { status: 200, headers: vec![("a".into(), "b".into())], body: b"{}".to_vec() };
        saved(&answers, &claim, &stored);
        match answers.begin("k1", "f1") {
            Ok(Begun::Stored(s)) => assert_eq!(s, stored),
            other => panic!("a repeat after the save is answered from the row: {other:?}"),
        }
        assert!(matches!(answers.begin("k1", "f2"), Ok(Begun::Different)));
    }

    #[test]
    fn a_released_or_lapsed_key_runs_again_and_the_old_run_cannot_save() {
        let dir = tempfile::tempdir().expect("dir");
        let mut answers = answers(&dir);
        let Ok(Begun::Run(first)) = answers.begin("k", "f") else { panic!("runs") };
        answers.release(&first).expect("release");
        answers.lease = Duration::ZERO;
        let Ok(Begun::Run(second)) = answers.begin("k", "f") else { panic!("runs again") };
        std::thread::sleep(Duration::from_millis(5));
        // The lease of `second` ran out: a repeat takes the key over, and
        // `second`'s save would change no row.
        let Ok(Begun::Run(third)) = answers.begin("k", "f") else { panic!("taken over") };
        let mut tx = answers.channel.begin().expect("begin");
        let stored = Stored { status: 200, headers: Vec::new(), body: Vec::new() };
        let host = Caller::host(Instant::now() + Duration::from_secs(5));
        assert_eq!(tx.apply(&answers.record(&second, &stored), &host), Ok(Outcome::Affected(0)));
        drop(tx);
        saved(&answers, &third, &stored);
    }
}
