//! The outbox: effects (a message to publish, a request to send) written
//! as rows of `sluice_outbox` in a `sql` channel's save transaction, so
//! that they exist if and only if the save committed; a [`relay`] delivers
//! them afterwards and marks each row.
//!
//! Rows are claimed with a lease (SQLite's one writer makes the claim
//! atomic; PostgreSQL claims with `FOR UPDATE SKIP LOCKED`), so several
//! hosts on one database never deliver a row at the same time; a host that
//! dies holding a lease loses it when it runs out, and another delivery
//! takes the row. A row may so be delivered twice: its id goes with it
//! (`Nats-Msg-Id`, `Idempotency-Key`) for the receiver to drop the repeat.

pub mod relay;
pub mod replies;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bindings::{Rows, Value};
use crate::channels::headers::Headers;
use crate::channels::ops::{Operation, Outcome};
use crate::channels::sql::ops::SqlOp;
use crate::channels::{Caller, Channel, ChannelError, Transaction};

/// The table, created on the `sql` channel when an effect channel opens.
const TABLE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS sluice_outbox (
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    service TEXT NOT NULL,
    target TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    tries INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    next_ms INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until_ms INTEGER,
    done_ms INTEGER,
    last_error TEXT
)";
const TABLE_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS sluice_outbox (
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    service TEXT NOT NULL,
    target TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BYTEA NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    tries BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    next_ms BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until_ms BIGINT,
    done_ms BIGINT,
    last_error TEXT
)";
/// The messages each triggered service has handled, by message id: a
/// receipt is written in the handling scope's save transaction, so a
/// message delivered again after its scope saved is not handled twice.
const INBOX_SQLITE: &str = "CREATE TABLE IF NOT EXISTS sluice_inbox (
    consumer TEXT NOT NULL, id TEXT NOT NULL, done_ms INTEGER NOT NULL, PRIMARY KEY (consumer, id)
)";
const INBOX_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS sluice_inbox (
    consumer TEXT NOT NULL, id TEXT NOT NULL, done_ms BIGINT NOT NULL, PRIMARY KEY (consumer, id)
)";
const RECEIPT: &str = "INSERT INTO sluice_inbox (consumer, id, done_ms) VALUES (?1, ?2, ?3)";
const RECEIVED: &str = "SELECT 1 FROM sluice_inbox WHERE consumer = ?1 AND id = ?2";
const INDEX: &str = "CREATE INDEX IF NOT EXISTS sluice_outbox_due ON sluice_outbox (channel, state, next_ms)";

const INSERT: &str = "INSERT INTO sluice_outbox (id, channel, service, target, headers, body, created_ms, next_ms) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)";
const DUE: &str = "SELECT id, service, target, headers, body, tries, \
                   EXISTS (SELECT 1 FROM sluice_replies r WHERE r.id = sluice_outbox.id) FROM sluice_outbox \
                   WHERE channel = ?1 AND state = 'pending' AND next_ms <= ?2 AND created_ms <= ?4 \
                   AND (lease_until_ms IS NULL OR lease_until_ms <= ?2)";
const DUE_ORDER: &str = " ORDER BY created_ms, id LIMIT ?3";
const UNCLAIM: &str = "UPDATE sluice_outbox SET lease_owner = NULL, lease_until_ms = NULL, tries = tries - 1 \
                       WHERE id = ?1 AND lease_owner = ?2 AND state = 'pending'";
const LEASE: &str = "UPDATE sluice_outbox SET lease_owner = ?1, lease_until_ms = ?2, tries = tries + 1 WHERE id = ?3";
const DELIVERED: &str = "UPDATE sluice_outbox SET state = 'delivered', done_ms = ?1, lease_owner = NULL, \
                         lease_until_ms = NULL, last_error = NULL WHERE id = ?2 AND state = 'pending'";
const RETRY: &str = "UPDATE sluice_outbox SET next_ms = ?1, last_error = ?2, lease_owner = NULL, \
                     lease_until_ms = NULL WHERE id = ?3 AND state = 'pending'";
const DEAD: &str = "UPDATE sluice_outbox SET state = 'dead', done_ms = ?1, last_error = ?2, lease_owner = NULL, \
                    lease_until_ms = NULL WHERE id = ?3 AND state = 'pending'";
const RELEASE: &str = "UPDATE sluice_outbox SET lease_owner = NULL, lease_until_ms = NULL \
                       WHERE channel = ?1 AND lease_owner = ?2 AND state = 'pending'";
const PRUNE: &str = "DELETE FROM sluice_outbox WHERE channel = ?1 AND state = 'delivered' AND done_ms < ?2";
const STATUS: &str = "SELECT id, service, target, state, tries, created_ms, done_ms, last_error FROM sluice_outbox \
                      WHERE channel = ?1 ORDER BY created_ms DESC, id LIMIT ?2";

/// One row to deliver, as a relay claimed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The row's id: the message id or idempotency key its receiver sees.
    pub id: String,
    /// The service that queued it.
    pub service: String,
    /// The subject, or `METHOD URL`.
    pub target: String,
    /// Its headers.
    pub headers: Headers,
    /// The payload or body.
    pub body: Vec<u8>,
    /// Which try this is, from 1.
    pub tries: u32,
    /// Whether its service wants the answer ([`replies`]).
    pub reply: bool,
}

/// The outbox table of one `sql` channel, seen by one effect channel
/// (rows carry the effect channel's name).
pub struct Outbox {
    /// The effect channel whose rows these are.
    channel: String,
    /// The `sql` channel's name.
    base_name: String,
    base: Arc<dyn Channel>,
    /// Whether the base is PostgreSQL (claims lock rows and skip locked ones).
    postgres: bool,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Outbox {
    /// The outbox of effect channel `channel` in the `sql` channel `base`
    /// (called `base_name`), creating the table if it is missing.
    pub fn open(channel: &str, base_name: &str, base: Arc<dyn Channel>) -> Result<Outbox, ChannelError> {
        if base.kind() != crate::channels::sql::KIND {
            return Err(ChannelError::Invalid(format!("outbox channel {base_name} is not a sql channel")));
        }
        let postgres = base.sql().is_some_and(|sql| sql.dialect() == "postgres");
        let outbox = Outbox { channel: channel.to_string(), base_name: base_name.to_string(), base, postgres };
        let (table, inbox, answers) = if postgres {
            (TABLE_POSTGRES, INBOX_POSTGRES, replies::TABLE_POSTGRES)
        } else {
            (TABLE_SQLITE, INBOX_SQLITE, replies::TABLE_SQLITE)
        };
        outbox.host_tx(|tx, host| {
            for sql in [table, INDEX, inbox, answers, replies::INDEX] {
                tx.apply(&Operation::Sql(SqlOp::Execute { sql: sql.into(), params: Vec::new() }), host)?;
            }
            Ok(())
        })?;
        Ok(outbox)
    }

    /// The base's SQL (checked when the outbox opened).
    fn sql(&self) -> Result<&dyn crate::channels::SqlChannel, ChannelError> {
        crate::channels::sql_of(self.base.as_ref(), "query")
    }

    /// The `sql` channel whose transactions hold the rows.
    pub fn base_name(&self) -> &str {
        &self.base_name
    }

    /// Writes one effect as a row in `tx` (the save transaction of the
    /// base), for `service`: `target` is the subject or `METHOD URL`.
    pub fn insert(
        &self,
        tx: &mut dyn Transaction,
        service: &str,
        target: &str,
        headers: &Headers,
        body: &[u8],
        caller: &Caller,
    ) -> Result<String, ChannelError> {
        let headers = serde_json::to_string(&headers.0).map_err(|e| ChannelError::Invalid(e.to_string()))?;
        let id = uuid::Uuid::now_v7().to_string();
        let params = vec![
            text(&id),
            text(&self.channel),
            text(service),
            text(target),
            Value::Text(headers),
            Value::Blob(body.to_vec()),
            Value::Integer(now_ms()),
        ];
        tx.apply(&Operation::Sql(SqlOp::Execute { sql: INSERT.into(), params }), &caller.as_host())?;
        Ok(id)
    }

    /// Writes in `tx` that `consumer` has handled message `id`. A second
    /// receipt of the same message fails the save (a constraint).
    pub fn receipt(
        &self,
        tx: &mut dyn Transaction,
        consumer: &str,
        id: &str,
        caller: &Caller,
    ) -> Result<Outcome, ChannelError> {
        let params = vec![text(consumer), text(id), Value::Integer(now_ms())];
        tx.apply(&Operation::Sql(SqlOp::Execute { sql: RECEIPT.into(), params }), &caller.as_host())
    }

    /// Whether `consumer` has handled message `id` in a committed save.
    pub fn received(&self, consumer: &str, id: &str) -> Result<bool, ChannelError> {
        let host = Caller::host(Instant::now() + Duration::from_secs(10));
        let rows = self.sql()?.query(RECEIVED, &[text(consumer), text(id)], &host, 1024)?.rows;
        Ok(!rows.values.is_empty())
    }

    /// Claims up to `limit` rows due now for `owner`, for `lease`: no other
    /// claim takes them until the lease runs out. Each claim counts a try.
    /// Only rows written at least `min_age` ago are claimed.
    pub fn claim(
        &self,
        owner: &str,
        limit: u32,
        lease: Duration,
        min_age: Duration,
        skip: &[String],
    ) -> Result<Vec<Entry>, ChannelError> {
        let now = now_ms();
        let written_by = now - i64::try_from(min_age.as_millis()).unwrap_or(0);
        let until = now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        // The rows of the services in `skip` (those at their share of
        // deliveries in flight) are left for later claims.
        let skipped = match skip.len() {
            0 => String::new(),
            n => {
                format!(" AND service NOT IN ({})", (5..5 + n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", "))
            }
        };
        let lock = if self.postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let due = format!("{DUE}{skipped}{DUE_ORDER}{lock}");
        self.host_tx(|tx, host| {
            let mut params = vec![
                text(&self.channel),
                Value::Integer(now),
                Value::Integer(limit.into()),
                Value::Integer(written_by),
            ];
            params.extend(skip.iter().map(|service| text(service)));
            let rows = tx.rows(&due, &params, host)?;
            let entries: Vec<Entry> = rows.values.iter().filter_map(|row| entry(row)).collect();
            for e in &entries {
                let params = vec![text(owner), Value::Integer(until), text(&e.id)];
                tx.apply(&Operation::Sql(SqlOp::Execute { sql: LEASE.into(), params }), host)?;
            }
            Ok(entries)
        })
    }

    /// Gives back rows `owner` claimed but will not deliver now, as if
    /// they had not been claimed (their try not counted).
    pub fn unclaim(&self, owner: &str, ids: &[String]) -> Result<(), ChannelError> {
        self.host_tx(|tx, host| {
            for id in ids {
                let params = vec![text(id), text(owner)];
                tx.apply(&Operation::Sql(SqlOp::Execute { sql: UNCLAIM.into(), params }), host)?;
            }
            Ok(())
        })
    }

    /// Marks row `id` delivered.
    pub fn delivered(&self, id: &str) -> Result<(), ChannelError> {
        self.update(DELIVERED, vec![Value::Integer(now_ms()), text(id)])
    }

    /// Marks the rows `ids` delivered, in one transaction.
    pub fn delivered_all(&self, ids: &[String]) -> Result<(), ChannelError> {
        self.host_tx(|tx, host| {
            for id in ids {
                let params = vec![Value::Integer(now_ms()), text(id)];
                tx.apply(&Operation::Sql(SqlOp::Execute { sql: DELIVERED.into(), params }), host)?;
            }
            Ok(())
        })
    }

    /// The bodies of this channel's rows not yet delivered.
    pub fn pending_bodies(&self) -> Result<Vec<Vec<u8>>, ChannelError> {
        let host = Caller::host(Instant::now() + Duration::from_secs(10));
        let sql = "SELECT body FROM sluice_outbox WHERE channel = ?1 AND state = 'pending'";
        let rows = self.sql()?.query(sql, &[text(&self.channel)], &host, usize::MAX)?.rows;
        Ok(rows
            .values
            .into_iter()
            .filter_map(|row| match row.into_iter().next() {
                Some(Value::Blob(b)) => Some(b),
                Some(Value::Text(t)) => Some(t.into_bytes()),
                _ => None,
            })
            .collect())
    }

    /// Records a failed try of row `id`: tried again after `retry`, or,
    /// with `None`, dead (never tried again).
    pub fn failed(&self, id: &str, reason: &str, retry: Option<Duration>) -> Result<(), ChannelError> {
        let reason = text(&reason.chars().take(1000).collect::<String>());
        match retry {
            Some(after) => {
                let next = now_ms() + i64::try_from(after.as_millis()).unwrap_or(i64::MAX / 2);
                self.update(RETRY, vec![Value::Integer(next), reason, text(id)])
            }
            None => self.update(DEAD, vec![Value::Integer(now_ms()), reason, text(id)]),
        }
    }

    /// Gives back the leases `owner` holds: a host that starts again under
    /// the same name takes up at once the rows it had claimed when it died,
    /// instead of waiting for their leases to run out.
    pub fn release(&self, owner: &str) -> Result<(), ChannelError> {
        self.update(RELEASE, vec![text(&self.channel), text(owner)])
    }

    /// Deletes the rows delivered more than `keep` ago, and the replies
    /// handled (or given up) as long ago.
    pub fn prune(&self, keep: Duration) -> Result<(), ChannelError> {
        let before = now_ms() - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX / 2);
        self.update(PRUNE, vec![text(&self.channel), Value::Integer(before)])?;
        self.update(replies::PRUNE, vec![text(&self.channel), Value::Integer(before)])
    }

    /// The latest `limit` rows of this channel, newest first: `id, service,
    /// target, state, tries, created_ms, done_ms, last_error`.
    pub fn status(&self, limit: u32) -> Result<Rows, ChannelError> {
        let host = Caller::host(Instant::now() + Duration::from_secs(10));
        let params = [text(&self.channel), Value::Integer(limit.into())];
        Ok(self.sql()?.query(STATUS, &params, &host, usize::MAX)?.rows)
    }

    fn update(&self, sql: &str, params: Vec<Value>) -> Result<(), ChannelError> {
        self.host_tx(|tx, host| {
            tx.apply(&Operation::Sql(SqlOp::Execute { sql: sql.into(), params: params.clone() }), host).map(drop)
        })
    }

    /// Runs `work` in a bookkeeping transaction of the base as the host
    /// ([`Channel::begin_host`]), and commits; a conflict with another
    /// host's bookkeeping is tried again, up to five times.
    fn host_tx<T>(
        &self,
        work: impl Fn(&mut dyn Transaction, &Caller) -> Result<T, ChannelError>,
    ) -> Result<T, ChannelError> {
        crate::channels::in_host_transaction(self.base.as_ref(), work)
    }
}

/// The refusal of `begin` on a channel whose commands become rows of the
/// outbox in `base`: a save never asks for it.
pub fn no_transaction(channel: &str, base: &str) -> ChannelError {
    ChannelError::Invalid(format!("channel {channel} applies its commands in the save transaction of {base}"))
}

/// A claimed row: `id, service, target, headers, body, tries, reply`.
fn entry(row: &[Value]) -> Option<Entry> {
    let [
        Value::Text(id),
        Value::Text(service),
        Value::Text(target),
        Value::Text(headers),
        body,
        Value::Integer(tries),
        reply,
    ] = row
    else {
        return None;
    };
    let reply = matches!(reply, Value::Integer(1));
    let body = bytes(body);
    Some(Entry {
        id: id.clone(),
        service: service.clone(),
        target: target.clone(),
        headers: Headers(serde_json::from_str(headers).unwrap_or_default()),
        body,
        tries: u32::try_from(*tries + 1).unwrap_or(u32::MAX),
        reply,
    })
}

/// The bytes of a stored body: a blob, or text (empty for anything else).
pub fn bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::Blob(b) => b.clone(),
        Value::Text(t) => t.clone().into_bytes(),
        _ => Vec::new(),
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}
