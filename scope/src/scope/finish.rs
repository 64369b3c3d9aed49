//! The save rule, in one place: how a scope ends once its call has
//! answered. A scope whose guests were denied a grant, whose function
//! returned a WIT `result` holding `err`, or whose `wasi:http` handler
//! answered 400 or more is discarded; any other is saved (or dry-run). The
//! CLI, the typed HTTP routes and mounted `wasi:http` components all end
//! their scopes here, so none of them can save what this rule discards.

use std::sync::Arc;

use serde::Serialize;
use wasmtime::component::Val;

use super::http::HttpReply;
use super::{SaveReport, Scope, ScopeError};
use crate::command::{Command, Operation};
use crate::idempotent::{Key, Stored};
use crate::state::ScopeId;

/// How a scope ended.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum Ending {
    /// Its queue was applied.
    Saved(SaveReport),
    /// Its queue was applied in rounds and rolled back: the report is what a
    /// save would have done.
    DryRun(SaveReport),
    /// Its queue was thrown away because a guest was denied something by
    /// its grants: a request that could not do all it meant to is not half
    /// applied, even when the service carried on.
    Denied {
        /// The grant refusals, in order; each names the manifest line that
        /// would allow it.
        denials: Vec<String>,
        /// What had been queued.
        commands: Vec<Command>,
    },
    /// Its queue was thrown away, unapplied.
    Discarded {
        /// Why.
        reason: String,
        /// What had been queued.
        commands: Vec<Command>,
    },
}

impl Ending {
    /// Its `status`, as it is serialized: `saved`, `dry-run`, `denied` or
    /// `discarded`.
    pub fn status(&self) -> &'static str {
        match self {
            Ending::Saved(_) => "saved",
            Ending::DryRun(_) => "dry-run",
            Ending::Denied { .. } => "denied",
            Ending::Discarded { .. } => "discarded",
        }
    }
}

/// What to do with the queue when the rule allows a save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Apply it.
    Save,
    /// Run the save and roll it back ([`Scope::dry_run`]).
    DryRun,
}

/// What the scope's call answered, which the rule judges.
#[derive(Debug, Clone, Copy)]
pub enum Answer<'a> {
    /// A function returned.
    Results {
        /// The service called.
        service: &'a str,
        /// The function called.
        function: &'a str,
        /// What it returned.
        results: &'a [Val],
    },
    /// A mounted `wasi:http` component answered.
    Http {
        /// The component's service.
        service: &'a str,
        /// What it answered.
        reply: &'a HttpReply,
    },
}

impl Answer<'_> {
    /// What the client is told when the scope saves, as an idempotent
    /// request keeps it: for a function, the body `sluice serve` answers
    /// (`{"scope", "result", "ending": {"status": "saved", "attempt"}}`);
    /// for a component, its response.
    fn stored(&self, scope: ScopeId, attempt: usize) -> Stored {
        let scope_header = ("x-sluice-scope".to_string(), scope.to_string());
        match self {
            Answer::Results { results, .. } => {
                let result = match results {
                    [] => serde_json::Value::Null,
                    [one] => crate::values::to_json(one),
                    many => serde_json::Value::Array(many.iter().map(crate::values::to_json).collect()),
                };
                let body = serde_json::json!({
                    "scope": scope, "result": result, "ending": { "status": "saved", "attempt": attempt }
                });
                Stored {
                    status: 200,
                    headers: vec![("content-type".into(), "application/json".into()), scope_header],
                    body: body.to_string().into_bytes(),
                }
            }
            Answer::Http { reply, .. } => {
                let mut headers: Vec<(String, String)> = reply
                    .headers
                    .iter()
                    .filter(|(name, _)| {
                        **name != hyper::header::CONTENT_LENGTH && **name != hyper::header::TRANSFER_ENCODING
                    })
                    .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
                    .collect();
                headers.push(scope_header);
                Stored { status: reply.status.as_u16(), headers, body: reply.body.to_vec() }
            }
        }
    }
}

impl Scope {
    /// Ends the scope by the save rule (see the module docs): saves or
    /// dry-runs it, or discards it and says why.
    pub fn finish(&mut self, answer: Answer<'_>, mode: Mode) -> Result<Ending, ScopeError> {
        let id = self.id();
        let (service, what) = match answer {
            Answer::Results { service, function, .. } => (service, format!("{service}.{function}")),
            Answer::Http { service, .. } => (service, format!("{service}'s HTTP handler")),
        };
        if !self.denials().is_empty() {
            let denials = self.denials().to_vec();
            let commands = self.discard();
            tracing::info!(scope = %id, service, "{what} was denied a grant; discarding {} queued command(s)", commands.len());
            return Ok(Ending::Denied { denials, commands });
        }
        let refused = match answer {
            Answer::Results { results, .. } => {
                matches!(results.first(), Some(Val::Result(Err(_)))).then(|| format!("{what} returned an error"))
            }
            Answer::Http { reply, .. } => {
                let status = reply.status.as_u16();
                (status >= 400).then(|| format!("{what} answered {status}"))
            }
        };
        if let Some(reason) = refused {
            let commands = self.discard();
            tracing::info!(scope = %id, service, "{reason}; discarding {} queued command(s)", commands.len());
            return Ok(Ending::Discarded { reason, commands });
        }
        // An idempotent request's answer is saved with its effects.
        if let (Mode::Save, Some(key)) = (mode, self.attempt.key.clone()) {
            let stored = answer.stored(id, self.attempt());
            self.queue_host(service, "the answer of its Idempotency-Key", key.channel(), key.record(&stored))?;
        }
        Ok(match mode {
            Mode::Save => Ending::Saved(self.save()?),
            Mode::DryRun => Ending::DryRun(self.dry_run()?),
        })
    }

    /// Queues a command of the host's own (`what`, for the report) for
    /// `channel`, applied in the save as the host; it must change one row,
    /// else the save is a conflict. For the request of `service`.
    pub fn queue_host(&mut self, service: &str, what: &str, channel: &str, op: Operation) -> Result<(), ScopeError> {
        let id = self.id();
        let queued = self.store.data_mut().queue_mut().push_host(id, what, channel, op, Some(1));
        queued.map(drop).map_err(|reason| ScopeError::Failed {
            service: service.to_string(),
            function: "save".into(),
            reason: format!("{what} could not be queued: {reason}"),
            cause: super::Cause::Other,
        })
    }

    /// Makes the scope's runs hold `key`: a save writes its answer there.
    pub fn keyed(&mut self, key: Arc<Key>) {
        self.attempt.key = Some(key);
    }
}
