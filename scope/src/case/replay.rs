//! The channels of a replay: each answers reads from the case, and its
//! transactions apply nothing, giving each command the outcome the case
//! expects for the same command (so `on-save` rounds replay too). Only the
//! gates that need no server run, as the real kinds run them (a grant's
//! tables for `insert`, `update` and `delete`, a `kv` key's prefix); what
//! needs the engine or the channel's configuration (SQLite's authorizer on a
//! service's own SQL, a subject's, a destination's) is not there to check.

use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value as Json;

use super::Case;
use crate::bindings::Value;
use crate::channels::http::fetch::Asked as Fetch;
use crate::channels::{Caller, Channel, ChannelError, Fetches, KeyReads, Reading, SqlChannel, Transaction};
use crate::command::SqlOp;
use crate::command::{Kind, Operation, Outcome};
use crate::reads::{Asked, Taped, json_rows};

/// What the channels of one replay share: the case's reads and commands,
/// which have been used, and the reads the case did not hold.
pub struct State {
    inner: Mutex<Inner>,
}

struct Inner {
    reads: Vec<(Taped, bool)>,
    commands: Vec<(Json, bool)>,
    unrecorded: Vec<String>,
}

impl State {
    /// The state of a replay of `case`.
    pub fn new(case: &Case) -> Arc<State> {
        Arc::new(State {
            inner: Mutex::new(Inner {
                reads: case.reads.iter().map(|r| (r.clone(), false)).collect(),
                commands: case.expect.commands.iter().map(|c| (c.clone(), false)).collect(),
                unrecorded: Vec::new(),
            }),
        })
    }

    /// The reads asked for that the case did not hold, described.
    pub fn unrecorded(&self) -> Vec<String> {
        self.lock().unrecorded.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The rows the case holds for `asked` on `channel`: the first such
    /// read not answered yet, else one answered before.
    fn answer(&self, channel: &str, asked: &Asked, caller: &Caller) -> Result<Reading, ChannelError> {
        let mut inner = self.lock();
        let fits = |t: &Taped| t.channel == channel && &t.asked == asked;
        let found = inner
            .reads
            .iter()
            .position(|(t, used)| !used && fits(t))
            .or_else(|| inner.reads.iter().position(|(t, _)| fits(t)));
        let Some(index) = found else {
            let by = caller.service.as_deref().unwrap_or("the host");
            let what = describe(asked);
            inner.unrecorded.push(format!("{what} on {channel} by {by}"));
            return Err(ChannelError::Invalid(format!("the case holds no read {what} on {channel}")));
        };
        inner.reads[index].1 = true;
        let rows = json_rows(&inner.reads[index].0.rows)
            .ok_or_else(|| ChannelError::Invalid(format!("the case's rows of {} are malformed", describe(asked))))?;
        Ok(Reading { rows, digest: 0, tables: Vec::new(), volatile: false, recheck: None })
    }

    /// The outcome the case expects for `op` on `channel`: that of the first
    /// expected command equal to it not used yet; else a neutral one (the
    /// comparison then shows the difference).
    fn outcome(&self, channel: &str, op: &Operation) -> Outcome {
        let op_json = serde_json::to_value(op).unwrap_or_default();
        let mut inner = self.lock();
        let found = inner.commands.iter().position(|(c, used)| {
            !used && c.get("channel").and_then(Json::as_str) == Some(channel) && c.get("op") == Some(&op_json)
        });
        if let Some(index) = found {
            inner.commands[index].1 = true;
            if let Some(outcome) = inner.commands[index].0.get("outcome").and_then(outcome_from) {
                return outcome;
            }
        }
        match op {
            Operation::Sql(SqlOp::Insert { .. }) => Outcome::Inserted(0),
            _ => Outcome::Affected(1),
        }
    }
}

/// An outcome from its JSON form: `{"affected": n}` or `{"inserted": id}`.
fn outcome_from(json: &Json) -> Option<Outcome> {
    if let Some(n) = json.get("affected").and_then(Json::as_u64) {
        return Some(Outcome::Affected(n));
    }
    json.get("inserted").and_then(Json::as_i64).map(Outcome::Inserted)
}

/// A read for people: `` `SELECT …` with [1] ``, `get cart/ann/1`.
pub fn describe(asked: &Asked) -> String {
    match asked {
        Asked::Query { statement, params } => {
            format!(
                "`{}` with {}",
                statement.split_whitespace().collect::<Vec<_>>().join(" "),
                Json::from(params.clone())
            )
        }
        Asked::Get { key } => format!("get {key}"),
        Asked::List { prefix, limit } => format!("list {prefix} (at most {limit})"),
        Asked::Fetch { method, path, .. } => format!("fetch {method} {path}"),
    }
}

/// A channel of a replay.
pub struct ReplayChannel {
    name: String,
    kind: Kind,
    state: Arc<State>,
}

impl ReplayChannel {
    /// The channel `name` of kind `kind` (its name in `sluice.toml`).
    pub fn new(name: &str, kind: &str, state: &Arc<State>) -> Result<ReplayChannel, String> {
        let kind = [
            crate::channels::sql::KIND,
            crate::channels::kv::KIND,
            crate::channels::bus::KIND,
            crate::channels::http_out::KIND,
            crate::channels::http::KIND,
            crate::channels::secrets::KIND,
        ]
        .into_iter()
        .find(|k| k.name() == kind)
        .ok_or_else(|| {
            format!("channel {name}: {kind:?} is not a channel kind (sql, kv, bus, http-out, http, secrets)")
        })?;
        Ok(ReplayChannel { name: name.to_string(), kind, state: Arc::clone(state) })
    }
}

/// A replay answers reads of its channel's kind, from the tape.
impl SqlChannel for ReplayChannel {
    fn query(&self, sql: &str, params: &[Value], caller: &Caller, _: usize) -> Result<Reading, ChannelError> {
        let params = params.iter().map(crate::command::value_json).collect();
        self.state.answer(&self.name, &Asked::Query { statement: sql.to_string(), params }, caller)
    }

    fn check(&self, _: &str, _: &Caller) -> Result<(), ChannelError> {
        Ok(())
    }

    fn dialect(&self) -> &'static str {
        "sqlite"
    }

    fn migrate(&self, _: &[(String, String)]) -> Result<Vec<(String, bool)>, ChannelError> {
        Err(ChannelError::Invalid("a replay has no migrations".into()))
    }
}

impl KeyReads for ReplayChannel {
    fn get(&self, key: &str, caller: &Caller, _: usize) -> Result<Reading, ChannelError> {
        if self.kind == crate::channels::secrets::KIND {
            return Err(ChannelError::Invalid(format!(
                "a replay has no secrets: a recorded scope keeps no read of {key}, nor its value"
            )));
        }
        self.state.answer(&self.name, &Asked::Get { key: key.to_string() }, caller)
    }

    fn list(&self, prefix: &str, limit: u32, caller: &Caller, _: usize) -> Result<Reading, ChannelError> {
        self.state.answer(&self.name, &Asked::List { prefix: prefix.to_string(), limit }, caller)
    }
}

/// A fetch is answered from the tape, with no network, once the
/// service's grant allows it (a gate that needs no server).
impl Fetches for ReplayChannel {
    fn fetch(&self, asked: &Fetch, caller: &Caller, _: usize) -> Result<Reading, ChannelError> {
        crate::channels::http::granted(asked, caller)?;
        let taped = Asked::Fetch {
            method: asked.method.clone(),
            path: asked.path.clone(),
            headers: asked.headers.clone(),
            body: asked.body.clone(),
        };
        self.state.answer(&self.name, &taped, caller)
    }

    fn per_scope(&self) -> u32 {
        u32::MAX
    }
}

impl Channel for ReplayChannel {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn sql(&self) -> Option<&dyn SqlChannel> {
        (self.kind == crate::channels::sql::KIND).then_some(self as &dyn SqlChannel)
    }

    fn keys(&self) -> Option<&dyn KeyReads> {
        [crate::channels::kv::KIND, crate::channels::secrets::KIND]
            .contains(&self.kind)
            .then_some(self as &dyn KeyReads)
    }

    fn fetches(&self) -> Option<&dyn Fetches> {
        (self.kind == crate::channels::http::KIND).then_some(self as &dyn Fetches)
    }

    /// The gates that need no server, as the real kinds apply them: a
    /// table and operation, a key's prefix. The service's own SQL and an
    /// `http-out` destination need the real channel, which a replay lacks.
    fn check_command(&self, op: &Operation, caller: &Caller) -> Result<(), ChannelError> {
        if op.kind() != self.kind {
            return Err(crate::channels::wrong_kind(self.kind, op.kind(), &op.describe()));
        }
        match op {
            Operation::Sql(op) => crate::channels::sql::check_table_grant(op, caller).map_err(ChannelError::Denied),
            Operation::Kv(_) => crate::channels::kv::check_command(op, caller).map(drop),
            _ => Ok(()),
        }
    }

    fn begin(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        Ok(Box::new(ReplayTransaction { name: self.name.clone(), state: Arc::clone(&self.state) }))
    }
}

/// A replay's transaction: applies nothing.
struct ReplayTransaction {
    name: String,
    state: Arc<State>,
}

impl Transaction for ReplayTransaction {
    fn apply(&mut self, op: &Operation, _: &Caller) -> Result<Outcome, ChannelError> {
        Ok(self.state.outcome(&self.name, op))
    }

    fn digest(&mut self, _: &str, _: &[Value], _: &Caller, _: usize) -> Result<u64, ChannelError> {
        Ok(0)
    }

    fn commit(self: Box<Self>) -> Result<(), ChannelError> {
        Ok(())
    }
}
