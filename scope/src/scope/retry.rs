//! A conflicted scope runs again. Nothing is applied before a save, so a
//! scope whose save was a conflict ([`ScopeError::Conflict`]) can simply run
//! again from the start: a new store, fresh instances, the same call. The
//! host allows `[scopes] retries` more runs (1 by default); the last one holds the channels
//! the previous run needed from its start (their write transactions are
//! begun before it runs), so this host's other saves cannot change what it
//! reads, and contention alone cannot make it conflict.

use std::time::Instant;

use super::transactions::Transactions;
use super::{Conflicted, Scope, ScopeError, Stage};

/// Which run of its unit of work a scope is, and what the runs before it
/// left: the scope owns it, beside its store, since a run's store is new.
#[derive(Default)]
pub(super) struct Attempt {
    /// The run, from 1.
    pub number: usize,
    /// Why each earlier run was a conflict.
    pub conflicts: Vec<Conflicted>,
    /// Transactions begun before the run (a last run holds its channels from
    /// the start); the save applies in them.
    pub held: Transactions,
    /// The channels the save opened, for a next run that holds them.
    pub touched: Vec<String>,
}

impl Attempt {
    /// The first run.
    pub fn first() -> Attempt {
        Attempt { number: 1, ..Attempt::default() }
    }

    /// The run after this one, which ended in `conflict`.
    fn next(&self, conflict: Conflicted) -> Attempt {
        let mut conflicts = self.conflicts.clone();
        conflicts.push(conflict);
        Attempt { number: self.number + 1, conflicts, ..Attempt::default() }
    }
}

impl Scope {
    /// Runs `attempt` on this scope and, while it ends in a conflict and the
    /// host allows another run, again on a fresh scope of the same unit of
    /// work (same id, cancel flag and scope deadline; see the module docs).
    /// Each scope ends (`dispose`) before the next begins. Returns the last
    /// run's answer.
    pub fn run<T>(self, mut attempt: impl FnMut(&mut Scope) -> Result<T, ScopeError>) -> Result<T, ScopeError> {
        let mut scope = self;
        loop {
            let outcome = attempt(&mut scope);
            let Err(ScopeError::Conflict { service, reason, .. }) = &outcome else { return outcome };
            if !scope.may_retry() {
                return outcome;
            }
            let conflict = Conflicted { service: service.clone(), reason: reason.clone() };
            let state = scope.store.data().next_attempt();
            let next = scope.attempt.next(conflict);
            let touched = std::mem::take(&mut scope.attempt.touched);
            drop(scope);
            scope = Scope::from_state(state, next);
            if scope.attempt() > scope.registry().runtime().options().retries {
                scope.hold(&touched)?;
            }
        }
    }

    /// Which run of its unit of work this scope is, from 1.
    pub fn attempt(&self) -> usize {
        self.attempt.number
    }

    /// Whether a conflicted save may run again: retries are left, and the
    /// scope is neither cancelled, past its timeout, nor failed.
    fn may_retry(&self) -> bool {
        let state = self.store.data();
        self.attempt.number <= state.registry().runtime().options().retries
            && !state.canceller().is_cancelled()
            && Instant::now() < state.deadline()
            && matches!(self.stage, Stage::Unsaved(_))
    }

    /// Begins the write transactions of `channels` (in name order) before
    /// the scope runs; its save applies in them.
    fn hold(&mut self, channels: &[String]) -> Result<(), ScopeError> {
        let all = std::sync::Arc::clone(self.store.data().channels());
        self.attempt.held = Transactions::hold(&all, channels)?;
        tracing::debug!(scope = %self.id(), attempt = self.attempt(), "holding {} for the last run", channels.join(", "));
        Ok(())
    }
}
