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
            let state = scope.store.data().next_attempt(conflict);
            let touched = std::mem::take(&mut scope.store.data_mut().touched);
            drop(scope);
            scope = Scope::from_state(state);
            if scope.attempt() > scope.registry().runtime().options().retries {
                scope.hold(&touched)?;
            }
        }
    }

    /// Which run of its unit of work this scope is, from 1.
    pub fn attempt(&self) -> usize {
        self.store.data().attempt
    }

    /// Whether a conflicted save may run again: retries are left, and the
    /// scope is neither cancelled, past its timeout, nor failed.
    fn may_retry(&self) -> bool {
        let state = self.store.data();
        state.attempt <= state.registry.runtime().options().retries
            && !state.cancel.is_cancelled()
            && Instant::now() < state.scope_deadline
            && matches!(self.stage, Stage::Unsaved(_))
    }

    /// Begins the write transactions of `channels` (in name order) before
    /// the scope runs; its save applies in them.
    fn hold(&mut self, channels: &[String]) -> Result<(), ScopeError> {
        let all = std::sync::Arc::clone(&self.store.data().channels);
        self.store.data_mut().held = Transactions::hold(&all, channels)?;
        tracing::debug!(scope = %self.id(), attempt = self.attempt(), "holding {} for the last run", channels.join(", "));
        Ok(())
    }
}
