//! Replies to sends (`to.reply-to`): a `send` whose service asked for the
//! answer has a row in `sluice_replies`, written in the same save
//! transaction as its outbox row. When the relay delivers the request, or
//! it goes dead, the answer (status, headers, a body of at most the
//! channel's `reply-bytes`) or the failure is written into that row in the
//! same transaction that marks the outbox row, and the row is `ready`.
//!
//! A host claims ready rows with a lease and runs one scope per row, calling
//! the service's handler with the reply; that scope's save marks the row
//! `done` with a command of the host that must change exactly one row while
//! the claim is still its own. So each reply's scope saves **once**, on
//! whichever host, however often hosts die on the way. A handler that fails
//! (an `err`, a trap, a conflict after its retries) gives the row back,
//! to run again after a backoff; after [`RUNS`] runs the row is `failed`.

use std::time::Duration;

use super::{Outbox, now_ms, text};
use crate::bindings::Value;
use crate::channels::ops::{Operation, Outcome};
use crate::channels::outbox::relay::Answer;
use crate::channels::sql::ops::SqlOp;
use crate::channels::{Caller, ChannelError, Transaction};

pub(super) const TABLE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS sluice_replies (
    id TEXT PRIMARY KEY, channel TEXT NOT NULL, service TEXT NOT NULL, handler TEXT NOT NULL, tag TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'waiting', status INTEGER, headers TEXT, body BLOB, failure TEXT,
    runs INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL, next_ms INTEGER NOT NULL,
    lease_owner TEXT, lease_until_ms INTEGER, done_ms INTEGER, last_error TEXT
)";
pub(super) const TABLE_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS sluice_replies (
    id TEXT PRIMARY KEY, channel TEXT NOT NULL, service TEXT NOT NULL, handler TEXT NOT NULL, tag TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'waiting', status BIGINT, headers TEXT, body BYTEA, failure TEXT,
    runs BIGINT NOT NULL DEFAULT 0, created_ms BIGINT NOT NULL, next_ms BIGINT NOT NULL,
    lease_owner TEXT, lease_until_ms BIGINT, done_ms BIGINT, last_error TEXT
)";
pub(super) const INDEX: &str =
    "CREATE INDEX IF NOT EXISTS sluice_replies_due ON sluice_replies (channel, state, next_ms)";

const WANT: &str = "INSERT INTO sluice_replies (id, channel, service, handler, tag, created_ms, next_ms) \
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)";
const READY: &str = "UPDATE sluice_replies SET state = 'ready', status = ?1, headers = ?2, body = ?3, failure = ?4 \
                     WHERE id = ?5 AND state = 'waiting'";
const DUE: &str = "SELECT id, service, handler, tag, status, headers, body, failure, runs FROM sluice_replies \
                   WHERE channel = ?1 AND state = 'ready' AND next_ms <= ?2 \
                   AND (lease_until_ms IS NULL OR lease_until_ms <= ?2)";
const DUE_ORDER: &str = " ORDER BY created_ms, id LIMIT ?3";
const LEASE: &str = "UPDATE sluice_replies SET lease_owner = ?1, lease_until_ms = ?2, runs = runs + 1 WHERE id = ?3";
const DONE: &str = "UPDATE sluice_replies SET state = 'done', done_ms = ?1, lease_owner = NULL, lease_until_ms = NULL \
                    WHERE id = ?2 AND lease_owner = ?3 AND state = 'ready'";
const AGAIN: &str = "UPDATE sluice_replies SET lease_owner = NULL, lease_until_ms = NULL, next_ms = ?1, last_error = ?2 \
                     WHERE id = ?3 AND lease_owner = ?4 AND state = 'ready'";
const UNCLAIM: &str = "UPDATE sluice_replies SET lease_owner = NULL, lease_until_ms = NULL, runs = runs - 1 \
                       WHERE id = ?1 AND lease_owner = ?2 AND state = 'ready'";
const RELEASE: &str = "UPDATE sluice_replies SET lease_owner = NULL, lease_until_ms = NULL \
                       WHERE channel = ?1 AND lease_owner = ?2 AND state = 'ready'";
pub(super) const PRUNE: &str =
    "DELETE FROM sluice_replies WHERE channel = ?1 AND state IN ('done', 'failed') AND done_ms < ?2";
const GIVE_UP: &str = "UPDATE sluice_replies SET state = 'failed', done_ms = ?1, last_error = ?2, lease_owner = NULL, \
                       lease_until_ms = NULL WHERE id = ?3 AND lease_owner = ?4 AND state = 'ready'";

/// How many runs a reply's handler gets before the reply is `failed`.
pub const RUNS: u32 = 8;

/// A reply a host claimed, to run its handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The request's id (its `Idempotency-Key`).
    pub id: String,
    /// The service that sent it, whose handler runs.
    pub service: String,
    /// The handler's name.
    pub handler: String,
    /// What the service gave `reply-to`.
    pub tag: String,
    /// The answer, when there was one.
    pub answer: Option<Answer>,
    /// Why there is no (whole) answer.
    pub failure: Option<String>,
    /// Which run of the handler this is, from 1.
    pub run: u32,
    owner: String,
}

impl Outbox {
    /// Writes, in `tx` (the save transaction), that `service` wants the
    /// answer to request `id` in its function `handler`, with `tag`.
    pub fn want_reply(
        &self,
        tx: &mut dyn Transaction,
        id: &str,
        service: &str,
        handler: &str,
        tag: &str,
        caller: &Caller,
    ) -> Result<Outcome, ChannelError> {
        let params =
            vec![text(id), text(&self.channel), text(service), text(handler), text(tag), Value::Integer(now_ms())];
        tx.apply(&Operation::Sql(SqlOp::Execute { sql: WANT.into(), params }), &caller.as_host())
    }

    /// Marks request `id` delivered (no `dead`) or dead (with why), and
    /// its reply ready with `answer`, in one transaction.
    pub fn replied(&self, id: &str, answer: Option<&Answer>, dead: Option<&str>) -> Result<(), ChannelError> {
        let failure = dead.or(answer.and_then(|a| a.cut.as_deref()));
        let (status, headers, body) = match answer {
            Some(a) => (
                Value::Integer(a.status.into()),
                text(&serde_json::to_string(&a.headers).unwrap_or_default()),
                Value::Blob(a.body.clone()),
            ),
            None => (Value::Null, Value::Null, Value::Null),
        };
        let reason = failure.map_or(Value::Null, |f| text(&f.chars().take(1000).collect::<String>()));
        self.host_tx(|tx, host| {
            let mark = match dead {
                None => (super::DELIVERED, vec![Value::Integer(now_ms()), text(id)]),
                Some(_) => (super::DEAD, vec![Value::Integer(now_ms()), reason.clone(), text(id)]),
            };
            tx.apply(&execute(mark.0, mark.1), host)?;
            let ready = vec![status.clone(), headers.clone(), body.clone(), reason.clone(), text(id)];
            tx.apply(&execute(READY, ready), host).map(drop)
        })
    }

    /// Claims up to `limit` ready replies for `owner`, for `lease`, none of
    /// the services in `skip` (those at their share of replies running).
    pub fn claim_replies(
        &self,
        owner: &str,
        limit: u32,
        lease: Duration,
        skip: &[String],
    ) -> Result<Vec<Reply>, ChannelError> {
        let now = now_ms();
        let until = now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        let lock = if self.postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let skipped = match skip.len() {
            0 => String::new(),
            n => {
                format!(" AND service NOT IN ({})", (4..4 + n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", "))
            }
        };
        self.host_tx(|tx, host| {
            let mut params = vec![text(&self.channel), Value::Integer(now), Value::Integer(limit.into())];
            params.extend(skip.iter().map(|s| text(s)));
            let rows = tx.rows(&format!("{DUE}{skipped}{DUE_ORDER}{lock}"), &params, host)?;
            let replies: Vec<Reply> = rows.values.iter().filter_map(|row| reply(row, owner)).collect();
            for r in &replies {
                tx.apply(&execute(LEASE, vec![text(owner), Value::Integer(until), text(&r.id)]), host)?;
            }
            Ok(replies)
        })
    }

    /// The command of the host, queued in the handler's scope, that marks
    /// `reply` done; it must change one row.
    pub fn reply_done(&self, reply: &Reply) -> Operation {
        execute(DONE, vec![Value::Integer(now_ms()), text(&reply.id), text(&reply.owner)])
    }

    /// Gives back the replies `owner` holds: a host started again under
    /// the same name runs at once the replies it held when it died. (A
    /// reply is saved once whoever runs it: its receipt changes it from
    /// `ready` to `done`.)
    pub fn release_replies(&self, owner: &str) -> Result<(), ChannelError> {
        let op = execute(RELEASE, vec![text(&self.channel), text(owner)]);
        self.host_tx(|tx, host| tx.apply(&op, host).map(drop))
    }

    /// Gives `reply` back unrun, as if it had not been claimed.
    pub fn unclaim_reply(&self, reply: &Reply) -> Result<(), ChannelError> {
        let op = execute(UNCLAIM, vec![text(&reply.id), text(&reply.owner)]);
        self.host_tx(|tx, host| tx.apply(&op, host).map(drop))
    }

    /// Gives `reply` back after a failed run: again after `after`, or,
    /// after [`RUNS`] runs, `failed` for good.
    pub fn reply_failed(&self, reply: &Reply, why: &str, after: Duration) -> Result<(), ChannelError> {
        let why = text(&why.chars().take(1000).collect::<String>());
        let (id, owner) = (text(&reply.id), text(&reply.owner));
        let op = if reply.run >= RUNS {
            execute(GIVE_UP, vec![Value::Integer(now_ms()), why, id, owner])
        } else {
            let next = now_ms() + i64::try_from(after.as_millis()).unwrap_or(i64::MAX / 2);
            execute(AGAIN, vec![Value::Integer(next), why, id, owner])
        };
        self.host_tx(|tx, host| tx.apply(&op, host).map(drop))
    }
}

fn execute(sql: &str, params: Vec<Value>) -> Operation {
    Operation::Sql(SqlOp::Execute { sql: sql.into(), params })
}

/// A claimed row: `id, service, handler, tag, status, headers, body,
/// failure, runs`.
fn reply(row: &[Value], owner: &str) -> Option<Reply> {
    let [
        Value::Text(id),
        Value::Text(service),
        Value::Text(handler),
        Value::Text(tag),
        status,
        headers,
        body,
        failure,
        Value::Integer(runs),
    ] = row
    else {
        return None;
    };
    let answer = match (status, headers) {
        (Value::Integer(status), Value::Text(headers)) => Some(Answer {
            status: u16::try_from(*status).ok()?,
            headers: serde_json::from_str(headers).unwrap_or_default(),
            body: super::bytes(body),
            cut: None,
        }),
        _ => None,
    };
    let failure = match failure {
        Value::Text(f) => Some(f.clone()),
        _ => None,
    };
    Some(Reply {
        id: id.clone(),
        service: service.clone(),
        handler: handler.clone(),
        tag: tag.clone(),
        answer,
        failure,
        run: u32::try_from(*runs + 1).unwrap_or(u32::MAX),
        owner: owner.to_string(),
    })
}
