//! The save rule, in one place: how a scope ends once its call has
//! answered. A scope whose guests were denied a grant, whose function
//! returned a WIT `result` holding `err`, or whose `wasi:http` handler
//! answered 400 or more is discarded; any other is saved (or dry-run). The
//! CLI, the typed HTTP routes and mounted `wasi:http` components all end
//! their scopes here, so none of them can save what this rule discards.

use serde::Serialize;
use wasmtime::component::Val;

use super::{SaveReport, Scope, ScopeError};
use crate::command::Command;

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
        /// The status it answered with.
        status: u16,
    },
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
            Answer::Http { status, .. } => (status >= 400).then(|| format!("{what} answered {status}")),
        };
        if let Some(reason) = refused {
            let commands = self.discard();
            tracing::info!(scope = %id, service, "{reason}; discarding {} queued command(s)", commands.len());
            return Ok(Ending::Discarded { reason, commands });
        }
        Ok(match mode {
            Mode::Save => Ending::Saved(self.save()?),
            Mode::DryRun => Ending::DryRun(self.dry_run()?),
        })
    }
}
