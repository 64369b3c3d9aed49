//! The unit of work: one `Store`, services instantiated lazily on first use,
//! one command queue, and a save that applies the queue all-or-nothing.
//!
//! Lifecycle: [`Scope::new`] once per unit of work → [`Scope::call`] any
//! number of times → [`Scope::save`] or [`Scope::dry_run`] once → drop (or
//! [`Scope::end`]), which calls the services' `dispose` hooks. A failure
//! (trap, deadline, call cycle) discards the scope: nothing is applied and it
//! accepts no more calls.

mod finish;
mod http;
mod report;
mod retry;
mod save;
pub(crate) mod transactions;
mod validate;

pub use finish::{Answer, Ending, Mode};
pub use http::{HttpAnswer, HttpReply, ResponseSender};
pub use report::{Applied, AppliedList, Conflicted, SaveReport};

use std::sync::Arc;

use serde::Serialize;
use wasmtime::component::Val;
use wasmtime::{AsContextMut, Store, Trap};

use crate::channels::Channels;
use crate::command::BusOp;
use crate::command::Command;
use crate::invoke::{self, Target};
use crate::limits::Breach;
use crate::registry::{Callee, LookupError, Registry, chain};
use crate::state::{ScopeId, ScopeState};

/// Why a call or a save failed. Every variant names the service (or the
/// command and the calls that queued it) and the cause.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    /// The service or function does not exist.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The arguments do not fit the function's parameters.
    #[error("{service}.{function}: {message}")]
    Arguments {
        /// The service.
        service: String,
        /// The function.
        function: String,
        /// What is wrong, naming the parameter.
        message: String,
    },
    /// The guest trapped, ran past its deadline, made a call cycle, or could
    /// not be instantiated; the scope is discarded.
    #[error("{service}.{function} failed: {reason}")]
    Failed {
        /// The service called from the host (for a nested call, the outer one;
        /// the reason names the inner call).
        service: String,
        /// The function or hook that was called.
        function: String,
        /// The cause, and the guest's last words on stderr when it left any.
        reason: String,
        /// The kind of failure, for callers that sort failures (HTTP statuses,
        /// metrics).
        cause: Cause,
    },
    /// The scope failed earlier, so nothing more may run in it or be saved.
    #[error("{scope} is discarded after an earlier failure ({reason}); nothing was applied")]
    Discarded {
        /// The scope.
        scope: ScopeId,
        /// The earlier failure.
        reason: String,
    },
    /// A guest was denied a grant, so the scope may not be saved: a request
    /// that could not do all it meant to is not half applied.
    #[error("{scope} is not saved: a guest was denied a grant ({}); nothing was applied", denials.join("; "))]
    Denied {
        /// The scope.
        scope: ScopeId,
        /// The refusals, each naming the manifest line that would allow it.
        denials: Vec<String>,
    },
    /// The scope was already saved or dry-run; a scope settles once.
    #[error("{scope} is already {stage}; start a new scope")]
    Settled {
        /// The scope.
        scope: ScopeId,
        /// `saved` or `dry-run`.
        stage: &'static str,
    },
    /// A command failed at save; every round of every channel was rolled back.
    #[error("save failed in round {round} at command {position} ({command}): {reason}; nothing was applied")]
    Command {
        /// The save round (1 for the commands queued by calls).
        round: usize,
        /// The command's 1-based position among all commands of the save.
        position: usize,
        /// The command, described with the calls that queued it.
        command: String,
        /// The service that queued it.
        service: String,
        /// What the channel said.
        reason: String,
        /// Whether the channel was unavailable (busy, locked, failing), so
        /// that the same request may succeed later; otherwise the data or
        /// the statement refused it (a constraint, a missing table).
        retryable: bool,
    },
    /// What the scope read changed before its save, or a command changed
    /// another number of rows than it expected (`to.expect`): nothing was
    /// applied. The scope ran as many times as the host allows
    /// (`[scopes] retries`), each time from the start.
    #[error("conflict after {attempts} attempt(s): {reason}; nothing was applied")]
    Conflict {
        /// The service whose read or command conflicted.
        service: String,
        /// The read that changed or the command that missed its count, with
        /// the calls that made it.
        reason: String,
        /// How many times the scope ran.
        attempts: usize,
        /// The conflicts of the runs before the last.
        earlier: Vec<Conflicted>,
    },
    /// A service's `on-save` refused the save with a business error: every
    /// round was rolled back.
    #[error("{service} refused the save: {code}: {message}; nothing was applied")]
    Refused {
        /// The service.
        service: String,
        /// Its `refusal.code`.
        code: String,
        /// Its `refusal.message`.
        message: String,
    },
    /// `on-save` hooks kept queueing past the round limit.
    #[error(
        "save did not settle: {services} still queueing in round {round}, past the limit of {limit} round(s) \
         (limits.save-rounds); nothing was applied"
    )]
    TooManyRounds {
        /// The round that was refused.
        round: usize,
        /// The limit of the first service that broke it.
        limit: usize,
        /// The services that queued past their limit, comma separated.
        services: String,
    },
    /// A channel could not begin or commit its transaction.
    #[error("save failed: channel {channel}: {reason}; {}", applied_anyway(.channel, .committed))]
    Channel {
        /// The channel.
        channel: String,
        /// What the channel said.
        reason: String,
        /// The channels that had already committed when this one's commit
        /// failed (the save's commit order, docs/channels.md): what they
        /// applied stays applied. Empty when nothing was applied. It names
        /// `channel` itself when its commit went unanswered, and so may
        /// have applied.
        committed: Vec<String>,
    },
}

impl ScopeError {
    /// Whether the save failed after some of its channels had committed:
    /// what they applied stays, and running the scope again would apply
    /// it twice.
    pub fn partially_applied(&self) -> bool {
        matches!(self, ScopeError::Channel { committed, .. } if !committed.is_empty())
    }
}

/// What a save that failed at `committed`'s heels left applied, for its
/// error: nothing, or the channels that keep what they committed, and why
/// the scope is not run again.
fn applied_anyway(channel: &str, committed: &[String]) -> String {
    let before: Vec<&str> = committed.iter().map(String::as_str).filter(|c| *c != channel).collect();
    let mut told = String::new();
    if !before.is_empty() {
        told =
            format!("channel(s) {} had already committed and keep what this save applied there; ", before.join(", "));
    }
    if before.len() < committed.len() {
        told.push_str(&format!("channel {channel} may have applied it too; "));
    }
    if told.is_empty() {
        return "nothing was applied".into();
    }
    format!("{told}the scope is not run again, which would apply that twice (see docs/channels.md, Commit order)")
}

/// What kind of failure ended a scope in [`ScopeError::Failed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "detail")]
pub enum Cause {
    /// The guest trapped (a panic, `unreachable`, a stack overflow…).
    Trap,
    /// A service broke one of its limits.
    Limit {
        /// The service that broke it (for a nested call, the inner one).
        service: String,
        /// The limit, as manifests spell it (`deadline-ms`, `memory-mb`,
        /// `scope-timeout`…).
        limit: String,
    },
    /// The guest failed after one of its host calls was denied by its grants
    /// (typically by unwrapping the denial); the first denial.
    Denied(String),
    /// The guest called `exit`.
    Exit,
    /// Whoever waited for the scope went away (an HTTP client hung up), so
    /// it was cancelled.
    Cancelled,
    /// Anything else: a call cycle, an instantiation that failed.
    Other,
}

/// What the scope's guests printed, returned by [`Scope::end`].
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    /// Everything written to stdout, in order.
    pub stdout: String,
    /// Everything written to stderr, in order.
    pub stderr: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Stage {
    Open,
    Settled(&'static str),
    /// The save failed without a trap (a command, the round limit, a
    /// commit): nothing is applied, but the instances are intact, so
    /// `dispose` still runs.
    Unsaved(String),
    /// A guest trapped or was interrupted; its instance cannot be entered again.
    Failed(String),
    Ended,
}

/// One unit of work. See the module docs for its lifecycle.
pub struct Scope {
    store: Store<ScopeState>,
    stage: Stage,
    /// Which run of the unit of work this is, and what the runs before it
    /// left (see [`retry`]).
    attempt: retry::Attempt,
}

impl Scope {
    /// Starts an empty scope over a registry snapshot. Cheap: nothing is
    /// instantiated until the first call to a service.
    pub fn new(registry: Arc<Registry>, channels: Arc<Channels>) -> Scope {
        Scope::from_state(ScopeState::new(registry, channels), retry::Attempt::first())
    }

    fn from_state(state: ScopeState, attempt: retry::Attempt) -> Scope {
        let engine = state.registry().runtime().engine().clone();
        let meters_fuel = state.registry().runtime().options().meters_fuel();
        let mut store = Store::new(&engine, state);
        store.limiter(|state| state);
        // The callback runs on every epoch tick while a guest runs and
        // decides, by the clock, whether its deadline has passed.
        store.epoch_deadline_callback(crate::budget::on_epoch);
        store.set_epoch_deadline(1);
        if meters_fuel {
            let _ = store.set_fuel(crate::budget::SCOPE_FUEL);
        }
        Scope { store, stage: Stage::Open, attempt }
    }

    /// This scope's id.
    pub fn id(&self) -> ScopeId {
        self.store.data().id()
    }

    /// The scope's cancel flag, to set from another thread when whoever
    /// waits for the scope goes away: its guests, statements and waits stop
    /// at once, and nothing it queued is applied.
    pub fn canceller(&self) -> crate::budget::Canceller {
        self.store.data().canceller().clone()
    }

    /// The registry this scope runs against.
    pub fn registry(&self) -> &Arc<Registry> {
        self.store.data().registry()
    }

    /// The commands queued and not yet applied, in the order save would
    /// apply them (the commands of later rounds do not exist yet; see
    /// [`Scope::dry_run`]).
    pub fn pending(&self) -> &[Command] {
        self.store.data().queue().commands()
    }

    /// The channels the scope reads from and saves to.
    pub fn channels(&self) -> &Arc<Channels> {
        self.store.data().channels()
    }

    /// Starts recording this scope's reads with their rows (an empty tape);
    /// [`Scope::take_tape`] gives them back.
    pub fn record(&mut self) {
        self.store.data_mut().record();
    }

    /// The reads recorded since [`Scope::record`], in order.
    pub fn take_tape(&mut self) -> crate::reads::Tape {
        self.store.data_mut().take_tape()
    }

    /// Queues the receipt of message `id` by `consumer` (a service's
    /// subscription) on the `bus` channel `channel`, as the command of
    /// `service`: the scope's save records that the message was handled,
    /// in the same transaction as the handler's commands ([`crate::triggers`]).
    pub fn queue_receipt(&mut self, service: &str, channel: &str, consumer: &str, id: &str) -> Result<(), ScopeError> {
        self.check_open()?;
        let scope = self.id();
        let op = crate::command::Operation::Bus(BusOp::Receipt { consumer: consumer.to_string(), id: id.to_string() });
        let chain = std::sync::Arc::from([format!("{service}.handle")]);
        self.store.data_mut().queue_mut().push(scope, service, chain, channel, op).map_err(|reason| {
            ScopeError::Failed { service: service.to_string(), function: "handle".into(), reason, cause: Cause::Other }
        })?;
        Ok(())
    }

    /// The services instantiated in this scope, in order.
    pub fn instantiated(&self) -> &[String] {
        self.store.data().instantiated()
    }

    /// Calls `service.function` with `args`, instantiating the service in
    /// this scope first if this is its first use.
    pub fn call(&mut self, service: &str, function: &str, args: &[Val]) -> Result<Vec<Val>, ScopeError> {
        self.check_open()?;
        let callee = self.registry().callee(service, function)?;
        self.call_to(&callee, args)
    }

    /// Calls the function `callee` resolved with `args`, instantiating its
    /// service in this scope first if this is its first use.
    pub fn call_to(&mut self, callee: &Callee, args: &[Val]) -> Result<Vec<Val>, ScopeError> {
        self.check_open()?;
        let (svc, func) = (callee.service(), callee.function());
        let failure =
            |message: String| ScopeError::Arguments { service: svc.name.clone(), function: func.name.clone(), message };
        func.check_arity(args.len()).map_err(failure)?;
        for (i, (arg, (name, ty))) in args.iter().zip(&func.params).enumerate() {
            crate::values::check(ty, func.names.param(i), arg, name).map_err(|e| failure(format!("argument {e}")))?;
        }
        let mut results = vec![Val::Bool(false); func.results.len()];
        let index = svc.code().map_err(|e| self.fail(&svc.name, &func.name, &e))?.functions[func.slot];
        let target = Target { service: svc, function: &func.name, index };
        let outcome = invoke::call(&mut self.store.as_context_mut(), target, args, &mut results);
        match outcome {
            Ok(()) => Ok(results),
            Err(e) => Err(self.fail(&svc.name, &func.name, &e)),
        }
    }

    /// Ends the scope now: calls `dispose` on every service that exports it
    /// (unless the scope failed) and returns what the guests printed.
    /// Dropping a scope does the same, without the transcript.
    pub fn end(mut self) -> Transcript {
        self.dispose();
        let state = self.store.data();
        Transcript {
            stdout: String::from_utf8_lossy(&state.stdout()).into_owned(),
            stderr: String::from_utf8_lossy(&state.stderr()).into_owned(),
        }
    }

    fn check_open(&self) -> Result<(), ScopeError> {
        match &self.stage {
            Stage::Open => Ok(()),
            Stage::Settled(stage) => Err(ScopeError::Settled { scope: self.id(), stage }),
            Stage::Unsaved(reason) | Stage::Failed(reason) => {
                Err(ScopeError::Discarded { scope: self.id(), reason: reason.clone() })
            }
            Stage::Ended => Err(ScopeError::Settled { scope: self.id(), stage: "ended" }),
        }
    }

    /// The grant refusals guests got in this scope so far. A scope with any
    /// is not saved ([`Scope::finish`]).
    pub fn denials(&self) -> &[String] {
        self.store.data().denials()
    }

    /// Throws the queue away and closes the scope to saving: it can still
    /// end (and `dispose`), never save. Returns what had been queued.
    fn discard(&mut self) -> Vec<Command> {
        if matches!(self.stage, Stage::Open) {
            self.stage = Stage::Unsaved("its queue was discarded".into());
        }
        self.store.data_mut().queue_mut().take()
    }

    /// Marks the scope failed and builds the error for `service.function`.
    fn fail(&mut self, service: &str, function: &str, e: &wasmtime::Error) -> ScopeError {
        let (cause, reason) = self.diagnose(e);
        tracing::warn!(scope = %self.id(), service, "{service}.{function} failed: {}", chain(e));
        self.stage = Stage::Failed(format!("{service}.{function} failed"));
        ScopeError::Failed { service: service.to_string(), function: function.to_string(), reason, cause }
    }

    /// A short reason for a failed entry into a guest: the trap or error,
    /// plus the last lines the guest wrote to stderr (a Rust panic message)
    /// and the denial that likely led to it.
    fn diagnose(&self, e: &wasmtime::Error) -> (Cause, String) {
        let (mut cause, mut reason) = if let Some(cancelled) = e.downcast_ref::<crate::budget::Cancelled>() {
            (Cause::Cancelled, cancelled.to_string())
        } else if let Some(breach) = e.downcast_ref::<Breach>() {
            (Cause::Limit { service: breach.service.clone(), limit: breach.limit.to_string() }, breach.to_string())
        } else if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            let text =
                format!("the guest called exit({}); a service cannot end the host, so its scope ends instead", exit.0);
            (Cause::Exit, text)
        } else if let Some(trap) = e.downcast_ref::<Trap>() {
            (Cause::Trap, trap.to_string())
        } else {
            (Cause::Other, e.root_cause().to_string())
        };
        let stderr = self.store.data().stderr();
        let said = last_words(&String::from_utf8_lossy(&stderr));
        if !said.is_empty() {
            reason.push_str(&format!(" (guest stderr: {said})"));
        }
        if let (Cause::Trap | Cause::Exit | Cause::Other, Some(denial)) = (&cause, self.denials().first()) {
            reason.push_str(&format!(" (after a denial: {denial})"));
            cause = Cause::Denied(denial.clone());
        }
        (cause, reason)
    }

    fn reason(&self, e: &wasmtime::Error) -> String {
        self.diagnose(e).1
    }

    /// Calls `dispose` on every instantiated service that exports it, in
    /// instantiation order, once. Skipped after a failure: a trapped
    /// instance cannot be entered again.
    fn dispose(&mut self) {
        // A last run that never saved gives its channels back first: no
        // guest code runs while it holds them for nothing.
        self.attempt.held = transactions::Transactions::default();
        if matches!(self.stage, Stage::Failed(_) | Stage::Ended) {
            return;
        }
        self.stage = Stage::Ended;
        self.store.data_mut().queue_mut().close("the scope is ending; commands queued in dispose are not applied");
        let registry = Arc::clone(self.registry());
        for name in self.store.data().instantiated().to_vec() {
            let Ok(service) = registry.service(&name) else { continue };
            let Some(index) = service.code().ok().and_then(|c| c.hooks.dispose) else { continue };
            let target = Target { service, function: "dispose", index };
            if let Err(e) = invoke::call(&mut self.store.as_context_mut(), target, &[], &mut []) {
                tracing::warn!(scope = %self.id(), service = %name, "{name}.dispose failed: {}", self.reason(&e));
            }
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        self.dispose();
    }
}

/// The last few meaningful lines a guest wrote to stderr, on one line. The
/// hint Rust adds to every panic about `RUST_BACKTRACE` is left out: guests
/// have no environment to set it in.
fn last_words(stderr: &str) -> String {
    const LINES: usize = 3;
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    lines[lines.len().saturating_sub(LINES)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::last_words;

    #[test]
    fn last_words_keep_the_panic_and_drop_the_backtrace_hint() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:9:9:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(last_words(stderr), "thread '<unnamed>' panicked at src/lib.rs:9:9: | boom");
        assert_eq!(last_words(""), "");
    }
}
