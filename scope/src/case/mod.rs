//! Test cases of services as data: a scope recorded (`sluice call
//! --record FILE`) or written by hand, replayed against the current
//! components with no channel at all (`sluice test`).
//!
//! A case is one JSON file: the call and its arguments, the channels the
//! scope used with their kinds, every read with the rows it returned, and
//! what is expected: the result, how the scope ended, and every command
//! with its provenance (round, service, calls) and outcome. Replaying answers
//! each read from the case ([`replay`]); a read the case does not hold fails
//! the case with its statement. The commands and the result are compared
//! with the expected ones, and a difference is shown command by command
//! ([`diff`]).

pub mod diff;
pub mod http;
pub mod redact;
pub mod replay;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use wasmtime::component::Val;

use crate::call::CallReport;
use crate::channels::Channels;
use crate::reads::Taped;
use crate::registry::Registry;
use crate::scope::{Answer, Ending, Mode, Scope, ScopeError};

/// One case: a call, what it reads, and what it must do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case shows, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub about: String,
    /// `SERVICE.FUNCTION` (none for a request to a `wasi:http` component).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub call: String,
    /// One JSON value per parameter, as `sluice call --json` prints values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Json>,
    /// The request, for a scope of a `wasi:http` component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<http::HttpCall>,
    /// The channels the scope used, by name, with their kind (`sql`, `kv`,
    /// `bus`, `http-out`).
    #[serde(default)]
    pub channels: BTreeMap<String, String>,
    /// Every read, in order, with the rows it returned.
    #[serde(default)]
    pub reads: Vec<Taped>,
    /// What the scope must do.
    pub expect: Expected,
}

/// What a scope did, or must do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// The function's result as JSON (`{"ok": …}`, `{"err": …}`), the
    /// refusal of a save (`{"code", "message"}`), or the error.
    pub result: Json,
    /// `saved`, `discarded` (an `err` result), `denied` (a grant),
    /// `refused` (an `on-save` refusal) or `failed` (a trap, a limit…).
    pub ending: String,
    /// The commands: applied ones with their round and outcome when saved,
    /// else the ones that were queued.
    #[serde(default)]
    pub commands: Vec<Json>,
    /// The calls between services, in the order they returned: who called
    /// (`by`), what (`call`), with which `args`, and its `results`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<Json>,
}

/// Runs `service.function(args)` in `scope` with its reads recorded, and
/// ends it as [`crate::call::run_in`] does. Returns the call's report (or
/// error) and the case it makes, redacted by `rules` ([`redact`]).
pub fn record(
    scope: Scope,
    service: &str,
    function: &str,
    args: &[Val],
    mode: Mode,
    rules: &[redact::Rule],
) -> (Result<CallReport, ScopeError>, Result<Case, String>) {
    let channels = Arc::clone(scope.channels());
    let params: Vec<String> = scope
        .registry()
        .service(service)
        .ok()
        .and_then(|s| s.function(function).ok())
        .map(|f| f.params.iter().map(|(name, _)| name.clone()).collect())
        .unwrap_or_default();
    let (ran, tape) = run_recorded(scope, service, function, args, mode);
    if tape.full {
        return (ran, Err(full()));
    }
    let mut case = assemble(&channels, tape, expected(&ran));
    case.call = format!("{service}.{function}");
    case.args = args.iter().map(crate::values::to_json).collect();
    let redacted = redact::apply(&mut case, &params, rules).map(|()| case);
    (ran, redacted)
}

/// Why a scope was not recorded: its tape passed the cap.
pub(crate) fn full() -> String {
    format!(
        "the scope read or called more than {} MiB, past what one case holds; it ran as usual and is not recorded",
        crate::reads::TAPE_CAP >> 20
    )
}

/// A case of what a recorded scope did: its reads and calls from `tape`,
/// the kinds of the channels it used, and `expect`; the entry (call or
/// request) is the caller's to set.
pub(crate) fn assemble(channels: &Channels, tape: crate::reads::Tape, mut expect: Expected) -> Case {
    expect.calls = tape.calls;
    let mut kinds = BTreeMap::new();
    let used = tape
        .reads
        .iter()
        .map(|t| t.channel.clone())
        .chain(expect.commands.iter().filter_map(|c| c.get("channel").and_then(Json::as_str).map(str::to_string)));
    for name in used {
        if let Some(channel) = channels.get(&name) {
            kinds.insert(name, channel.kind().name().to_string());
        }
    }
    Case {
        about: String::new(),
        call: String::new(),
        args: Vec::new(),
        http: None,
        channels: kinds,
        reads: tape.reads,
        expect,
    }
}

/// Runs `service.function(args)` in `scope` (again on a conflict, as
/// [`crate::call::run_in`] does) with the scope recorded; returns how it
/// ended and the last run's tape.
fn run_recorded(
    scope: Scope,
    service: &str,
    function: &str,
    args: &[Val],
    mode: Mode,
) -> (Result<CallReport, ScopeError>, crate::reads::Tape) {
    let mut tape = crate::reads::Tape::default();
    let ran = scope.run(|scope| {
        scope.record();
        let id = scope.id();
        let called = scope.call(service, function, args);
        let ended = called.and_then(|results| {
            let ending = scope.finish(Answer::Results { service, function, results: &results }, mode)?;
            Ok(CallReport { scope: id, results, ending })
        });
        tape = scope.take_tape();
        ended
    });
    (ran, tape)
}

/// What a finished call did, in a case's terms.
pub fn expected(ran: &Result<CallReport, ScopeError>) -> Expected {
    match ran {
        Ok(report) => ended(report.result_json(), &report.ending),
        Err(e) => failed(e),
    }
}

/// A scope that answered `result` and ended so, in a case's terms.
pub(crate) fn ended(result: Json, ending: &Ending) -> Expected {
    let queued = |commands: &[crate::command::Command]| commands.iter().map(|c| command_json(c, None)).collect();
    let (ending, commands) = match ending {
        Ending::Saved(saved) | Ending::DryRun(saved) => (
            if matches!(ending, Ending::Saved(_)) { "saved" } else { "dry-run" },
            saved.applied.iter().map(|a| command_json(a.command, Some((a.round, a.outcome)))).collect(),
        ),
        Ending::Discarded { commands, .. } => ("discarded", queued(commands)),
        Ending::Denied { commands, .. } => ("denied", queued(commands)),
    };
    Expected { result, ending: ending.into(), commands, calls: Vec::new() }
}

/// A scope that ended in an error, in a case's terms.
pub(crate) fn failed(error: &ScopeError) -> Expected {
    let (result, ending) = match error {
        ScopeError::Refused { service, code, message } => {
            (json!({ "service": service, "code": code, "message": message }), "refused")
        }
        e => (Json::String(e.to_string()), "failed"),
    };
    Expected { result, ending: ending.into(), commands: Vec::new(), calls: Vec::new() }
}

/// One command as a case holds it: provenance, channel, operation and, when
/// applied, round and outcome.
fn command_json(command: &crate::command::Command, applied: Option<(usize, crate::command::Outcome)>) -> Json {
    let mut out = json!({
        "service": command.service,
        "chain": command.chain,
        "channel": command.channel,
        "op": command.op,
    });
    if let Some(expect) = command.expect {
        out["expect"] = json!(expect);
    }
    if let Some((round, outcome)) = applied {
        out["round"] = json!(round);
        out["outcome"] = json!(outcome);
    }
    out
}

/// What replaying a case did: the scope's doings, and the reads it asked
/// for that the case did not hold.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// What the scope did.
    pub actual: Expected,
    /// Reads the case had no answer for, described.
    pub unrecorded: Vec<String>,
}

/// Replays `case` against the services of `registry`, with no channel:
/// every read is answered from the case.
pub fn replay(registry: &Arc<Registry>, case: &Case) -> Result<Replayed, String> {
    let state = replay::State::new(case);
    let mut channels = Channels::default();
    for (name, kind) in &case.channels {
        channels.insert(name.clone(), Arc::new(replay::ReplayChannel::new(name, kind, &state)?));
    }
    let scope = Scope::new(Arc::clone(registry), Arc::new(channels));
    if let Some(request) = &case.http {
        let actual = http::replay(registry, scope, request)?;
        return Ok(Replayed { actual, unrecorded: state.unrecorded() });
    }
    let (service, function) = crate::call::parse_target(&case.call)?;
    let func = registry.service(service).map_err(|e| e.to_string())?.function(function).map_err(|e| e.to_string())?;
    if func.params.len() != case.args.len() {
        return Err(format!(
            "{} takes {} argument(s); the case gives {}",
            case.call,
            func.params.len(),
            case.args.len()
        ));
    }
    let args = func
        .params
        .iter()
        .zip(&case.args)
        .enumerate()
        .map(|(i, ((name, ty), json))| {
            crate::values::from_json(ty, func.names.param(i), json, name).map_err(|e| format!("argument {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (ran, tape) = run_recorded(scope, service, function, &args, Mode::Save);
    let mut actual = expected(&ran);
    actual.calls = tape.calls;
    Ok(Replayed { actual, unrecorded: state.unrecorded() })
}
