//! One request, start to finish: a new scope, one call, then the save rule
//! of [`Scope::finish`]: save (or dry run), or discard. The CLI and the typed
//! HTTP routes both go through here.

use wasmtime::component::Val;

use crate::host::Host;
use crate::registry::Callee;
use crate::scope::{Answer, Scope, ScopeError};
pub use crate::scope::{Ending, Mode};
use crate::state::ScopeId;

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

    /// What a client of `sluice serve` is told when the operator did not
    /// turn reports on (`--reports`): the scope, the result, and only the
    /// status and attempt of the ending. The save report (each applied
    /// command, with its SQL, parameters and tables) is the operator's.
    pub fn to_public_json(&self) -> serde_json::Value {
        let mut ending = serde_json::json!({ "status": self.ending.status() });
        if let Ending::Saved(report) | Ending::DryRun(report) = &self.ending {
            ending["attempt"] = report.attempt.into();
        }
        serde_json::json!({ "scope": self.scope, "result": self.result_json(), "ending": ending })
    }
}

/// Splits `service.function` at the first dot (service names have none).
pub fn parse_target(target: &str) -> Result<(&str, &str), String> {
    match target.split_once('.') {
        Some((s, f)) if !s.is_empty() && !f.is_empty() => Ok((s, f)),
        _ => Err(format!("{target:?} is not SERVICE.FUNCTION (for example orders.place)")),
    }
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
///
/// A save that is a conflict runs the call again in a fresh scope, as many
/// times as the host allows ([`Scope::run`]).
pub fn run_in(scope: Scope, service: &str, function: &str, args: &[Val], mode: Mode) -> Result<CallReport, ScopeError> {
    let callee = scope.registry().callee(service, function)?;
    run_callee(scope, &callee, args, mode)
}

/// [`run_in`] for a function the caller resolved already: every run of the
/// scope calls it without looking its names up again.
pub fn run_callee(scope: Scope, callee: &Callee, args: &[Val], mode: Mode) -> Result<CallReport, ScopeError> {
    let (service, function) = (callee.service().name.as_str(), callee.function().name.as_str());
    scope.run(|scope| {
        let id = scope.id();
        let results = scope.call_to(callee, args)?;
        let ending = scope.finish(Answer::Results { service, function, results: &results }, mode)?;
        Ok(CallReport { scope: id, results, ending })
    })
}
