//! One request, start to finish: a new scope, one call, then save (or dry
//! run), or discard when the service answered with an error. The CLI and
//! (later) the HTTP server both go through here, so they apply the same rule.

use serde::Serialize;
use wasmtime::component::Val;

use crate::command::Command;
use crate::host::Host;
use crate::scope::{SaveReport, Scope, ScopeError};
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

/// What one call did.
#[derive(Debug, Clone)]
pub struct CallReport {
    /// The scope it ran in.
    pub scope: ScopeId,
    /// What the function returned.
    pub results: Vec<Val>,
    /// Whether the queue was applied.
    pub ending: Ending,
}

impl CallReport {
    /// What the function returned, as JSON: `null` without a result, the
    /// value, or an array when there are several.
    pub fn result_json(&self) -> serde_json::Value {
        match self.results.as_slice() {
            [] => serde_json::Value::Null,
            [one] => crate::values::to_json(one),
            many => serde_json::Value::Array(many.iter().map(crate::values::to_json).collect()),
        }
    }

    /// `{"scope", "result", "ending"}`: what `sluice call --json` prints and
    /// what `sluice serve` answers.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "scope": self.scope, "result": self.result_json(), "ending": self.ending })
    }
}

/// Splits `service.function` at the first dot (service names have none).
pub fn parse_target(target: &str) -> Result<(&str, &str), String> {
    match target.split_once('.') {
        Some((s, f)) if !s.is_empty() && !f.is_empty() => Ok((s, f)),
        _ => Err(format!("{target:?} is not SERVICE.FUNCTION (for example orders.place)")),
    }
}

/// What to do with the queue after a successful call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Apply it.
    Save,
    /// Run the save and roll it back ([`crate::Scope::dry_run`]).
    DryRun,
}

/// Runs `service.function(args)` in a fresh scope. The queue is saved (or
/// dry-run) when the call returns normally, and discarded when the
/// function's result is a WIT `result` holding `err`, or when a grant was
/// denied during the call: a request must not leave half of it applied.
pub fn run(host: &Host, service: &str, function: &str, args: &[Val], mode: Mode) -> Result<CallReport, ScopeError> {
    run_in(host.scope(), service, function, args, mode)
}

/// [`run`] in a scope the caller started, for a caller that converted the
/// arguments with the types of that scope's registry.
pub fn run_in(
    mut scope: Scope,
    service: &str,
    function: &str,
    args: &[Val],
    mode: Mode,
) -> Result<CallReport, ScopeError> {
    let id = scope.id();
    let results = scope.call(service, function, args)?;
    if !scope.denials().is_empty() {
        let denials = scope.denials().to_vec();
        let commands = scope.pending().to_vec();
        tracing::info!(scope = %id, service, "{service}.{function} was denied a grant; discarding {} queued command(s)", commands.len());
        return Ok(CallReport { scope: id, results, ending: Ending::Denied { denials, commands } });
    }
    if let Some(Val::Result(Err(_))) = results.first() {
        let commands = scope.pending().to_vec();
        tracing::info!(scope = %id, service, "{service}.{function} returned an error; discarding {} queued command(s)", commands.len());
        let reason = format!("{service}.{function} returned an error");
        return Ok(CallReport { scope: id, results, ending: Ending::Discarded { reason, commands } });
    }
    let ending = match mode {
        Mode::Save => Ending::Saved(scope.save()?),
        Mode::DryRun => Ending::DryRun(scope.dry_run()?),
    };
    Ok(CallReport { scope: id, results, ending })
}
