//! A conflicted scope runs again. Nothing is applied before a save, so a
//! scope whose save was a conflict ([`ScopeError::Conflict`]) can simply run
//! again from the start: a new store, fresh instances, the same call. The
//! host allows `[scopes] retries` more runs (1 by default); the last one
//! holds, from its start, the channels the previous run's save needed, and
//! on each the tables its services are granted ([`Claim`]): their write
//! transactions are begun, and the tables locked against other writers,
//! before it runs. So no other save, of this host or of another on the
//! same database, can change what it reads, and contention alone cannot
//! make it conflict.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::transactions::Transactions;
use super::{Conflicted, Scope, ScopeError, Stage};
use crate::channels::Claim;
use crate::idempotent::Key;

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
    /// The idempotency key the unit of work holds, whose answer its save
    /// writes ([`crate::idempotent`]); the same for every run.
    pub key: Option<Arc<Key>>,
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
        Attempt { number: self.number + 1, conflicts, key: self.key.clone(), ..Attempt::default() }
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
            let claims = scope.held_claims();
            drop(scope);
            scope = Scope::from_state(state, next);
            if scope.attempt() > scope.registry().runtime().options().retries {
                scope.hold(claims);
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

    /// What a next run must hold on each channel this run's save opened:
    /// every one of them, with its claim where it takes claims
    /// ([`Scope::claims`]).
    fn held_claims(&self) -> BTreeMap<String, Claim> {
        let mut claims = self.claims(self.attempt.touched.iter().map(String::as_str));
        for name in &self.attempt.touched {
            claims.entry(name.clone()).or_default();
        }
        claims
    }

    /// The claim on each of `names` that takes claims
    /// ([`crate::channels::Channel::claims`]): on the channel and on those
    /// kept in it ([`crate::channels::Channel::shares`]), what the grants
    /// of every service this scope instantiated name there
    /// ([`crate::channels::Channel::claim`]). A next run calls the same
    /// services unless what it reads sends it elsewhere.
    pub(super) fn claims<'a>(&self, names: impl Iterator<Item = &'a str>) -> BTreeMap<String, Claim> {
        let state = self.store.data();
        let (channels, registry) = (state.channels(), state.registry());
        let mut claims = BTreeMap::new();
        let mut services = None;
        for name in names {
            if !channels.get(name).is_some_and(|c| c.claims()) {
                continue;
            }
            let services: &Vec<_> = services.get_or_insert_with(|| {
                state.instantiated().iter().filter_map(|s| registry.service(s).ok()).collect::<Vec<_>>()
            });
            let mut claim = Claim::default();
            for kept in channels.names() {
                let Some(channel) = channels.get(kept) else { continue };
                if kept != name && channel.shares() != Some(name) {
                    continue;
                }
                for grant in services.iter().filter_map(|s| s.grants().on(kept)) {
                    channel.claim(&grant, &mut claim);
                }
            }
            claims.insert(name.to_string(), claim);
        }
        claims
    }

    /// Begins the write transactions of the channels `claims` names (in
    /// name order) before the scope runs, each holding its claim; its
    /// save applies in them. When they cannot all be begun (the claimed
    /// tables stayed busy past the wait), the run goes on holding nothing,
    /// as the runs before it did, and may conflict as they did.
    fn hold(&mut self, claims: BTreeMap<String, Claim>) {
        let all = Arc::clone(self.store.data().channels());
        let described: Vec<String> = claims.iter().map(|(name, claim)| describe(name, claim)).collect();
        match Transactions::hold(&all, claims) {
            Ok(held) => {
                self.attempt.held = held;
                tracing::debug!(scope = %self.id(), attempt = self.attempt(), "the last run holds {}", described.join("; "));
            }
            Err(e) => {
                tracing::warn!(scope = %self.id(), attempt = self.attempt(), "the last run holds nothing: {e}");
            }
        }
    }
}

/// A channel's claim, for the log: `main (orders, stock)`.
fn describe(name: &str, claim: &Claim) -> String {
    let mut tables: Vec<&str> = claim.tables.iter().map(String::as_str).collect();
    if claim.every_table {
        tables.push("every table");
    }
    format!("{name} ({})", tables.join(", "))
}
