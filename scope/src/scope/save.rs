//! Save: the queue applied in rounds inside one transaction per channel.
//!
//! Round 1 applies what the calls queued. Each service whose commands were
//! applied gets `on-save` with their outcomes; what those hooks queue is
//! round 2, and so on until the queue is empty or the round limit is hit.
//! Every round runs in the same transactions, so the commit comes after the
//! last round and a failure in any round rolls back all of them. A dry run
//! does the same and rolls back instead of committing.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::AsContextMut;
use wasmtime::component::Val;

use super::transactions::{Begin, Transactions};
use super::{AppliedList, Cause, SaveReport, Scope, ScopeError, Stage};
use crate::channels::{Caller, ChannelError};
use crate::command::BusOp;
use crate::command::{Command, Operation, Outcome, same_name};
use crate::invoke::{self, Target};
use crate::limits::Breach;

impl Scope {
    /// Applies the queue in rounds (see the module docs) and commits, then
    /// calls `on-finally`. On any failure every channel is rolled back, the
    /// scope is discarded and the error names the command or hook.
    pub fn save(&mut self) -> Result<SaveReport, ScopeError> {
        self.settle(true)
    }

    /// Runs the save exactly as [`Scope::save`] would, rounds and `on-save`
    /// hooks included, against transactions that are then rolled back. The
    /// report shows every command with its real outcome; nothing is applied
    /// and `on-finally` is not called.
    pub fn dry_run(&mut self) -> Result<SaveReport, ScopeError> {
        self.settle(false)
    }

    fn settle(&mut self, commit: bool) -> Result<SaveReport, ScopeError> {
        self.check_open()?;
        let state = self.store.data();
        // The service whose call began the scope was instantiated first.
        let service = state.instantiated().first().map_or("", String::as_str);
        let _span = sluice_core::work_span!("save", scope = %state.id(), service, commit).entered();
        // The save rule lives in `Scope::finish`; this is its last line of
        // defence for a caller that saves directly.
        if !self.denials().is_empty() {
            self.stage = Stage::Unsaved("a guest was denied a grant".into());
            return Err(ScopeError::Denied { scope: self.id(), denials: self.denials().to_vec() });
        }
        let Settled { open, applied, rounds, checked, touched } = match self.rounds().and_then(|s| self.journal(s)) {
            Ok(done) => done,
            Err(e) => {
                // `rounds` already dropped its transactions, rolling back.
                if matches!(self.stage, Stage::Open) {
                    self.stage = Stage::Unsaved(e.to_string());
                }
                return Err(e);
            }
        };
        let scope = self.id();
        let mut report = SaveReport {
            scope,
            dry_run: !commit,
            rounds,
            applied,
            after_commit: Vec::new(),
            attempt: self.attempt.number,
            conflicts: self.attempt.conflicts.clone(),
            reads_checked: checked,
        };
        if !commit {
            drop(open);
            self.stage = Stage::Settled("dry-run");
            return Ok(report);
        }
        // Every channel checks it can commit before any does: a failure
        // here applies nothing anywhere.
        let mut open = open;
        let names = open.names();
        if let Err((name, e)) = open.prepare() {
            return Err(self.commit_failed(&names, &name, e, &[]));
        }
        let mut committed: Vec<String> = Vec::new();
        for (name, tx) in open.in_commit_order(self.store.data().channels()) {
            if let Err(e) = tx.commit() {
                return Err(self.commit_failed(&names, &name, e, &committed));
            }
            committed.push(name);
        }
        self.stage = Stage::Settled("saved");
        // Effect channels wake their relays: their rows are committed.
        let channels = Arc::clone(self.store.data().channels());
        // By the commands' own channels: one that shares another's
        // transaction (bus, http-out) is not among the committed names.
        for name in &touched {
            if let Some(channel) = channels.get(name) {
                channel.committed();
            }
        }
        if tracing::level_enabled!(tracing::Level::INFO) {
            for a in &report.applied {
                tracing::info!(scope = %scope, service = %a.command.service, round = a.round, "applied {} -> {}", a.command.describe(), a.outcome);
            }
        }
        report.after_commit = self.on_finally();
        Ok(report)
    }

    /// The error for channel `name` failing to prepare or commit after the
    /// channels in `committed` did. A concurrent save that won (a
    /// serialization failure) before anything committed is a conflict: the
    /// scope may run again, as for a read that changed.
    fn commit_failed(&mut self, held: &[String], name: &str, e: ChannelError, committed: &[String]) -> ScopeError {
        if let (ChannelError::Conflict(why), true) = (&e, committed.is_empty()) {
            let service = self.store.data().instantiated().first().cloned().unwrap_or_default();
            let reason = format!("channel {name} refused the save: {why}");
            self.attempt.touched = held.to_vec();
            let conflict = self.conflict_with(&service, reason);
            self.stage = Stage::Unsaved(conflict.to_string());
            return conflict;
        }
        self.stage = Stage::Unsaved(format!("channel {name} failed to commit"));
        // A commit that went unanswered may have applied: it counts with
        // those that did, so the save is reported as partly applied.
        let mut committed = committed.to_vec();
        if matches!(e, ChannelError::Unknown(_)) {
            committed.push(name.to_string());
        }
        ScopeError::Channel { channel: name.to_string(), reason: e.to_string(), committed }
    }

    /// Runs rounds until the queue is empty. Returns the open transactions,
    /// every applied command, and the number of rounds.
    fn rounds(&mut self) -> Result<Settled, ScopeError> {
        let registry = Arc::clone(self.registry());
        let channels = Arc::clone(self.store.data().channels());
        let scope_deadline = self.store.data().deadline();
        let cancel = self.store.data().canceller().clone();
        let started = Instant::now();
        // A last attempt began its transactions before it ran; any other
        // save shares its claims, to wait for another scope's last run.
        let mut open = std::mem::take(&mut self.attempt.held);
        if open.is_empty() {
            open.claim(self.claims(channels.names()));
        }
        // Reads from here on (in `on-save`) see the data the save holds:
        // nothing to check them against.
        let kept = self.store.data_mut().take_reads();
        let checked = self.validate(&mut open, started, kept)?;
        let mut applied = AppliedList::default();
        let mut touched: Vec<Arc<str>> = Vec::new();
        let mut round = 0;
        loop {
            let batch = self.store.data_mut().queue_mut().take();
            if batch.is_empty() {
                return Ok(Settled { open, applied, rounds: round, checked, touched });
            }
            round += 1;
            // Each service may queue up to its own last round (limits.save-rounds).
            let mut over: Vec<(String, usize)> = Vec::new();
            let mut last: Option<&Arc<str>> = None;
            for command in &batch {
                // Looked up once for each service's commands in a row.
                if last.is_some_and(|l| same_name(l, &command.service)) {
                    continue;
                }
                last = Some(&command.service);
                let limit = registry.service(&command.service).map_or(1, |s| s.limits.save_rounds);
                if round > limit && !over.iter().any(|(s, _)| **s == *command.service) {
                    over.push((command.service.to_string(), limit));
                }
            }
            if let Some((_, limit)) = over.first() {
                let services: Vec<String> = over.iter().map(|(s, _)| s.clone()).collect();
                return Err(ScopeError::TooManyRounds { round, limit: *limit, services: services.join(", ") });
            }
            let mut by_service: Vec<(String, Vec<Val>)> = Vec::new();
            // Commands are applied in runs: the commands one service queued
            // one after another for one channel share a caller (looked up
            // once), and the channel applies them together
            // ([`Transaction::apply_run`]: one prepared statement for a run
            // of the same SQL).
            // The round's outcomes, one for each command of `batch` applied so far.
            let mut outcomes: Vec<Outcome> = Vec::with_capacity(batch.len());
            while let Some(first) = batch.get(outcomes.len()) {
                let at = outcomes.len();
                let run = batch.get(at..).unwrap_or_default();
                let len = run.iter().take_while(|c| c.same_source(first)).count();
                let run = run.get(..len).unwrap_or_default();
                let position = applied.len() + at + 1;
                let fail = |reason: String| command_failed(round, position, first, reason, false);
                let Some(channel) = channels.get(&first.channel) else {
                    return Err(fail(format!("no channel {:?}", first.channel)));
                };
                // A channel that shares another's transaction (a kv table in
                // a sql channel) applies its commands in that one.
                let held = channel.shares().unwrap_or(&first.channel);
                if channels.get(held).is_none() {
                    return Err(fail(format!("no channel {held:?}")));
                }
                let tx = open.begin(&channels, held, Begin::Save)?;
                // Each command runs under the grant of the service that
                // queued it, and ends by that service's deadline counted from
                // the start of the save (within the scope's own).
                // The host's own commands (an idempotent request's answer)
                // run as the host, by the scope's deadline.
                let service = registry.service(&first.service).ok().cloned();
                let caller = if first.is_host() {
                    Caller::host(scope_deadline)
                } else {
                    Caller::service(
                        &first.service,
                        service.as_ref().and_then(|s| s.grants().on(&first.channel)),
                        service.as_ref().map_or(scope_deadline, |s| (started + s.limits.deadline).min(scope_deadline)),
                    )
                }
                .cancelled_by(&cancel);
                let service = service.as_ref();
                // Returning early drops `open`, which rolls every channel back.
                let ops: Vec<&Operation> = run.iter().map(|c| &c.op).collect();
                let result = match channel.shares() {
                    Some(_) => ops.iter().try_for_each(|op| {
                        outcomes.push(channel.apply_shared(tx.as_mut(), op, &caller)?);
                        Ok(())
                    }),
                    None => tx.apply_run(&ops, &caller, &mut outcomes),
                };
                // One outcome for each command, or the failed command is the
                // one after the last outcome (a channel that pushed one for
                // every command failed on its last).
                let Some(given) = outcomes.len().checked_sub(at) else {
                    return Err(fail("the channel took back the outcomes of earlier commands".into()));
                };
                let result = result.and_then(|()| match given == len {
                    true => Ok(()),
                    false => {
                        Err(ChannelError::Invalid(format!("the channel gave {given} outcome(s) for {len} command(s)")))
                    }
                });
                if result.is_err() {
                    outcomes.truncate(at + given.min(len - 1));
                }
                // The outcomes come first: a command whose count was not the
                // one expected is the save's error even when a later command
                // of the run failed.
                let hooked = service.is_some_and(|s| s.hooks.on_save);
                // Looked at one by one only when there is something to see.
                let checked = hooked || run.iter().any(|c| c.expect.is_some());
                let done = if checked { outcomes.get(at..).unwrap_or_default() } else { &[] };
                for (command, &outcome) in run.iter().zip(done) {
                    if let (Some(expected), Outcome::Affected(changed)) = (command.expect, outcome)
                        && changed != expected
                    {
                        let reason = format!(
                            "{} changed {changed} row(s) where it expected {expected} (to.expect)",
                            command.describe()
                        );
                        return Err(self.conflict(&open, &command.service, reason));
                    }
                    // Outcomes are only built for services that have an on-save hook.
                    // A receipt is the host's, not the service's.
                    if hooked && !matches!(command.op, Operation::Bus(BusOp::Receipt { .. })) {
                        outcome_for(&mut by_service, command, outcome);
                    }
                }
                if !touched.iter().any(|t| same_name(t, &first.channel)) {
                    touched.push(Arc::clone(&first.channel));
                }
                if let Err(e) = result
                    && let Some(command) = batch.get(outcomes.len())
                {
                    let position = applied.len() + outcomes.len() + 1;
                    return Err(self.refused(&open, e, command, service, round, position));
                }
            }
            // The round's commands move into the report together.
            applied.extend(round, batch, outcomes);
            self.on_save(by_service)?;
            // A hook that was denied a grant ends the save like a call that
            // was: nothing is applied.
            if !self.denials().is_empty() {
                return Err(ScopeError::Denied { scope: self.id(), denials: self.denials().to_vec() });
            }
        }
    }

    /// The save's error for `command` (at `position` in round `round`),
    /// which its channel refused with `e`.
    fn refused(
        &mut self,
        open: &Transactions,
        e: ChannelError,
        command: &Command,
        service: Option<&Arc<crate::registry::Service>>,
        round: usize,
        position: usize,
    ) -> ScopeError {
        match e {
            ChannelError::Denied(denial) => {
                let why = match service {
                    Some(s) => s.grants().refusal(&command.channel, &denial).to_string(),
                    None => format!("{denial:?}"),
                };
                command_failed(round, position, command, why, false)
            }
            ChannelError::Timeout if self.store.data().canceller().is_cancelled() => ScopeError::Failed {
                service: command.service.to_string(),
                function: "save".into(),
                reason: format!("the save was cancelled at {}: the client went away", command.describe()),
                cause: Cause::Cancelled,
            },
            ChannelError::Timeout => {
                let what = format!("its command {}", command.describe());
                overdue(&command.service, &what, service.map(|s| s.limits.deadline))
            }
            ChannelError::Conflict(why) => {
                let reason = format!("{} was refused by a concurrent save: {why}", command.describe());
                self.conflict(open, &command.service, reason)
            }
            e => {
                let retryable = e.retryable();
                command_failed(round, position, command, e.to_string(), retryable)
            }
        }
    }

    /// Writes each journaled channel's commit into the transaction of the
    /// channel that journals it ([`crate::channels::Channel::journal`]),
    /// after the last round
    /// and before anything commits.
    fn journal(&mut self, mut settled: Settled) -> Result<Settled, ScopeError> {
        let channels = Arc::clone(self.store.data().channels());
        let host = Caller::host(self.store.data().deadline());
        settled.open.journal(&channels, &host)?;
        Ok(settled)
    }

    /// Hands each service the outcomes of its commands from this round.
    fn on_save(&mut self, by_service: Vec<(String, Vec<Val>)>) -> Result<(), ScopeError> {
        let registry = Arc::clone(self.registry());
        for (name, outcomes) in by_service {
            let Ok(service) = registry.service(&name) else { continue };
            let Some(code) = service.code().ok() else { continue };
            let Some(index) = code.hooks.on_save else { continue };
            let args = [Val::List(outcomes)];
            let target = Target { service, function: "on-save", index };
            let mut results = if code.hooks.on_save_refuses { vec![Val::Bool(false)] } else { Vec::new() };
            let called = invoke::call(&mut self.store.as_context_mut(), target, &args, &mut results);
            called.map_err(|e| self.fail(&name, "on-save", &e))?;
            if let Some(Val::Result(Err(refusal))) = results.first() {
                let field = |key: &str| match refusal.as_deref() {
                    Some(Val::Record(fields)) => fields
                        .iter()
                        .find(|(k, _)| k == key)
                        .and_then(|(_, v)| if let Val::String(s) = v { Some(s.clone()) } else { None })
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                let (code, message) = (field("code"), field("message"));
                tracing::info!(scope = %self.id(), service = %name, "{name}.on-save refused the save: {code}: {message}");
                return Err(ScopeError::Refused { service: name, code, message });
            }
        }
        Ok(())
    }

    /// Calls `on-finally` on every instantiated service that exports it. The
    /// data is committed, so failures are reported, not raised.
    fn on_finally(&mut self) -> Vec<String> {
        self.store.data_mut().queue_mut().close("the scope is saved; commands queued in on-finally are not applied");
        let registry = Arc::clone(self.registry());
        let mut failures = Vec::new();
        for name in self.store.data().instantiated().to_vec() {
            let Ok(service) = registry.service(&name) else { continue };
            let Some(index) = service.code().ok().and_then(|c| c.hooks.on_finally) else { continue };
            let target = Target { service, function: "on-finally", index };
            let called = invoke::call(&mut self.store.as_context_mut(), target, &[], &mut []);
            if let Err(e) = called {
                let message = format!("{name}.on-finally failed after the commit: {}", self.reason(&e));
                tracing::warn!(scope = %self.id(), service = %name, "{message}");
                failures.push(message);
                // The instance trapped: no more hooks may enter it.
                self.stage = Stage::Failed(format!("{name}.on-finally failed"));
                break;
            }
        }
        failures
    }
}

/// Where the rounds left off: the still-open transactions (commit or drop
/// them), every applied command, and how many rounds ran.
struct Settled {
    open: Transactions,
    applied: AppliedList,
    rounds: usize,
    /// How many reads were checked before round 1.
    checked: usize,
    /// The channels that commands were applied to, each once.
    touched: Vec<Arc<str>>,
}

/// Work of the save done for `service` (its command, or checking its read:
/// `what`) still running at its deadline: a breach of that service's limit
/// (the scope's timeout when it has none).
pub(super) fn overdue(service: &str, what: &str, deadline: Option<std::time::Duration>) -> ScopeError {
    let (limit, detail) = match deadline {
        Some(d) => (
            "deadline-ms",
            format!(
                "{what} was still running {} ms into the save (limits.deadline-ms); nothing was applied",
                d.as_millis()
            ),
        ),
        None => ("scope-timeout", format!("{what} ran past the scope's timeout")),
    };
    let breach = Breach::new(service, limit, detail);
    ScopeError::Failed {
        service: service.to_string(),
        function: "save".into(),
        reason: breach.to_string(),
        cause: Cause::Limit { service: service.to_string(), limit: limit.into() },
    }
}

/// The save's error for `command`, the `position`th applied in `round`.
fn command_failed(round: usize, position: usize, command: &Command, reason: String, retryable: bool) -> ScopeError {
    ScopeError::Command {
        round,
        position,
        command: command.describe(),
        service: command.service.to_string(),
        reason,
        retryable,
    }
}

/// Adds `(ticket, outcome)` to the list of the service that queued the
/// command, keeping services in the order of their first command.
fn outcome_for(by_service: &mut Vec<(String, Vec<Val>)>, command: &Command, outcome: Outcome) {
    let value = Val::Tuple(vec![Val::U64(command.ticket), outcome_val(outcome)]);
    match by_service.iter_mut().find(|(s, _)| **s == *command.service) {
        Some((_, list)) => list.push(value),
        None => by_service.push((command.service.to_string(), vec![value])),
    }
}

/// An outcome as the WIT `outcome` variant.
fn outcome_val(outcome: Outcome) -> Val {
    match outcome {
        Outcome::Affected(n) => Val::Variant("affected".into(), Some(Box::new(Val::U64(n)))),
        Outcome::Inserted(id) => Val::Variant("inserted".into(), Some(Box::new(Val::S64(id)))),
    }
}
