//! `sluice call`: one scope from the command line, its arguments (JSON or
//! WAVE), its idempotency key, and what it prints.

use std::process::ExitCode;
use std::sync::Arc;

use sluice_host::call::{self, Ending, Mode};
use sluice_host::scope::SaveReport;
use sluice_host::{Host, Scope, ScopeError, idempotent, values};
use wasmtime::component::wasm_wave::untyped::UntypedFuncCall;

/// What `sluice call --idempotency-key` says of a call it did not run.
fn repeated(target: &str, unrun: idempotent::Unrun, json: bool) -> anyhow::Result<ExitCode> {
    match unrun {
        idempotent::Unrun::Stored(stored) => {
            let body: serde_json::Value = serde_json::from_slice(&stored.body).unwrap_or_default();
            if json {
                say!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                say!("result: {}", body["result"]);
                say!(
                    "saved {} by an earlier call with this idempotency key; this one ran nothing",
                    body["scope"].as_str().unwrap_or("?")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        idempotent::Unrun::Running => {
            eprintln!("error: {target}: a call with this idempotency key is still running; this one ran nothing");
            Ok(ExitCode::from(4))
        }
        idempotent::Unrun::Different => anyhow::bail!(
            "{target}: this idempotency key was used for a call with other arguments; this one ran nothing"
        ),
        idempotent::Unrun::Refused(e) => Err(e.into()),
    }
}

pub(crate) fn call(
    host: &Host,
    target: &str,
    args: &[String],
    json: bool,
    mode: Mode,
    record: Option<(&std::path::Path, &[sluice_host::case::redact::Rule])>,
    key: Option<&str>,
) -> anyhow::Result<ExitCode> {
    // `orders.place("ann", 1, 3)`: a WAVE call, as `wasmtime run --invoke`
    // takes; otherwise the name, then one JSON value per parameter.
    let wave = if target.contains('(') {
        if !args.is_empty() {
            anyhow::bail!("{target}: give the arguments inside the parentheses or after the name, not both");
        }
        Some(UntypedFuncCall::parse(target).map_err(|e| wave_error(target, &e))?)
    } else {
        None
    };
    let name = wave.as_ref().map_or(target, |w| w.name());
    let (service, function) = call::parse_target(name).map_err(anyhow::Error::msg)?;
    let registry = host.registry();
    let func = registry.service(service)?.function(function)?;
    let vals = match &wave {
        Some(wave) => wave
            .to_wasm_params::<wasmtime::component::Val>(func.params.iter().map(|(_, ty)| ty))
            .map_err(|e| wave_error(target, &e))?,
        None => json_args(service, func, args)?,
    };
    let scope = Scope::new(Arc::clone(&registry), Arc::clone(&host.channels));
    let work = |scope: Scope| match record {
        Some((path, rules)) => {
            let (ran, case) = sluice_host::case::record(scope, service, function, &vals, mode, rules);
            let case = case.map_err(|e| anyhow::anyhow!("cannot redact the case: {e}"))?;
            sluice_host::case::diff::write(path, &case).map_err(anyhow::Error::msg)?;
            eprintln!("recorded the scope as a test case in {}", path.display());
            Ok(ran)
        }
        None => Ok(call::run_in(scope, service, function, &vals, mode)),
    };
    let fingerprint = || idempotent::call_fingerprint(service, function, &vals);
    let saved = |ran: &anyhow::Result<Result<call::CallReport, ScopeError>>| matches!(ran, Ok(Ok(r)) if matches!(r.ending, Ending::Saved(_)));
    let ran = match idempotent::run(host, key, fingerprint, scope, work, saved) {
        Ok(ran) => ran?,
        Err(unrun) => return repeated(target, unrun, json),
    };
    let report = match ran {
        Ok(report) => report,
        // The service refused the save: a business error, like an `err`.
        Err(e @ ScopeError::Refused { .. }) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
        // Other saves kept changing what it read: running it later may work.
        Err(e @ ScopeError::Conflict { .. }) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(4));
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        say!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        say!("result: {}", wave_results(&report));
        match &report.ending {
            Ending::Saved(saved) => {
                print_applied(&format!("saved {}", saved.scope), "", saved);
                for failure in &saved.after_commit {
                    say!("warning: {failure}");
                }
            }
            Ending::DryRun(plan) => {
                print_applied(&format!("dry run of {}", plan.scope), "; rolled back, nothing was applied", plan);
            }
            Ending::Denied { denials, commands } => {
                say!(
                    "denied {}: {}; nothing was applied ({} command(s) were queued)",
                    report.scope,
                    denials.join("; "),
                    commands.len()
                );
            }
            Ending::Discarded { reason, commands } => {
                say!(
                    "discarded {}: {reason}; nothing was applied ({} command(s) were queued)",
                    report.scope,
                    commands.len()
                );
                for c in commands {
                    say!("  {}", c.describe());
                }
            }
        }
    }
    Ok(match report.ending {
        Ending::Saved(_) | Ending::DryRun(_) => ExitCode::SUCCESS,
        // The service refused the request: a distinct code scripts can test.
        Ending::Discarded { .. } => ExitCode::from(2),
        // A grant was denied: the operator's manifest, not the request.
        Ending::Denied { .. } => ExitCode::from(3),
    })
}

/// What the function returned, in WAVE (`ok({total-cents: 750})`): nothing
/// for no result, the values separated by commas for several. A value WAVE
/// cannot write is shown as JSON.
fn wave_results(report: &call::CallReport) -> String {
    if report.results.is_empty() {
        return "()".into();
    }
    let each = report.results.iter().map(|v| v.to_wave().unwrap_or_else(|_| values::to_json(v).to_string()));
    each.collect::<Vec<_>>().join(", ")
}

/// One JSON value per parameter (plain text for a string, char or enum),
/// typed by `func`'s signature.
fn json_args(
    service: &str,
    func: &sluice_host::registry::Function,
    args: &[String],
) -> anyhow::Result<Vec<wasmtime::component::Val>> {
    func.check_arity(args.len()).map_err(|e| anyhow::anyhow!("{service}.{} {e}", func.name))?;
    let mut vals = Vec::with_capacity(args.len());
    for (i, (arg, (name, ty))) in args.iter().zip(&func.params).enumerate() {
        let names = func.names.param(i);
        let val = values::from_arg(ty, names, arg, name).map_err(|e| {
            // The path starts at the parameter; only name it when the problem
            // is deeper inside the value.
            let at = if e.path == *name { String::new() } else { format!("{}: ", e.path) };
            anyhow::anyhow!(
                "{service}.{}: argument {} ({name}: {}): {at}{}",
                func.name,
                i + 1,
                values::type_name(ty, names),
                e.message
            )
        })?;
        vals.push(val);
    }
    Ok(vals)
}

/// A WAVE value or call that does not parse or fit the function, with the
/// place it went wrong marked under the text.
fn wave_error(source: &str, e: &wasmtime::component::wasm_wave::parser::ParserError) -> anyhow::Error {
    let at = source.get(..e.span().start).map_or(0, |before| before.chars().count());
    anyhow::anyhow!("{source}: {e}\n  {source}\n  {}^", " ".repeat(at))
}

/// `saved scope-3: 3 command(s) applied in 2 round(s)`, then one line per
/// command with its round, provenance and outcome.
fn print_applied(what: &str, note: &str, report: &SaveReport) {
    say!("{what}: {} command(s) applied in {} round(s){note}", report.applied.len(), report.rounds);
    for (run, conflict) in report.conflicts.iter().enumerate() {
        say!("  run {} was a conflict and ran again: {}", run + 1, conflict.reason);
    }
    for a in &report.applied {
        say!("  round {}: {} -> {}", a.round, a.command.describe(), a.outcome);
    }
}
