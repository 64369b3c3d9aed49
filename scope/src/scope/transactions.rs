//! The open transactions of one save, one per channel, and the orders
//! they keep, in one place for the save ([`super::save`]), the check of
//! its reads ([`super::validate`]) and the last run's hold
//! ([`super::retry`]):
//!
//! - **begin order**: a channel whose commit is journaled in another (files
//!   and Redis with an `outbox`) begins after that one, wherever it is
//!   begun; callers begin the rest in name order, so two saves never each
//!   hold a channel the other waits for;
//! - **commit order**: data channels, then effect channels, each stage in
//!   name order ([`crate::channels::CommitStage`]).

use std::collections::BTreeMap;

use super::ScopeError;
use crate::channels::{Caller, Channel, ChannelError, Channels, Claim, Transaction};

/// How a channel's transaction is begun.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Begin {
    /// For a save: [`Channel::begin`].
    Save,
    /// To check the reads of a scope that queued nothing:
    /// [`Channel::snapshot`].
    Snapshot,
    /// For a last run, before it runs: [`Channel::hold`], with the
    /// channel's claim.
    Hold,
}

/// The open transactions, by channel name. Dropping them rolls back.
#[derive(Default)]
pub(crate) struct Transactions {
    open: BTreeMap<String, Box<dyn Transaction>>,
    /// The claim on each channel that takes claims: held by a last run
    /// ([`Begin::Hold`]), shared by a save ([`Begin::Save`]).
    claims: BTreeMap<String, Claim>,
}

impl Transactions {
    /// The transactions of the channels `claims` names (in name order)
    /// begun for a last run, each holding its claim.
    pub(crate) fn hold(channels: &Channels, claims: BTreeMap<String, Claim>) -> Result<Transactions, ScopeError> {
        let mut held = Transactions { claims, ..Transactions::default() };
        let names: Vec<String> = held.claims.keys().cloned().collect();
        for name in names {
            if channels.get(&name).is_some() {
                held.begin(channels, &name, Begin::Hold)?;
            }
        }
        Ok(held)
    }

    /// Whether no transaction is open.
    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Makes `claims` what the saves begun from now on share.
    pub(crate) fn claim(&mut self, claims: BTreeMap<String, Claim>) {
        self.claims = claims;
    }

    /// The transaction of channel `name`, begun with `how` unless it is
    /// open already; the channel that journals its commit is begun first.
    pub(crate) fn begin(
        &mut self,
        channels: &Channels,
        name: &str,
        how: Begin,
    ) -> Result<&mut Box<dyn Transaction>, ScopeError> {
        if !self.open.contains_key(name) {
            let channel = channels.get(name).ok_or_else(|| failed(name, format!("no channel {name:?}")))?;
            if let Some(base) = channel.journal()
                && !self.open.contains_key(base)
            {
                let journal = channels.get(base).ok_or_else(|| failed(base, format!("no channel {base:?}")))?;
                let begun = start(journal.as_ref(), base, how, self.claims.get(base))?;
                self.open.insert(base.to_string(), begun);
            }
            let begun = start(channel.as_ref(), name, how, self.claims.get(name))?;
            self.open.insert(name.to_string(), begun);
        }
        self.open.get_mut(name).ok_or_else(|| failed(name, "was not begun".into()))
    }

    /// The transaction of `name`, when it is open.
    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut Box<dyn Transaction>> {
        self.open.get_mut(name)
    }

    /// The channels with an open transaction, in name order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.open.keys().cloned().collect()
    }

    /// Writes each journaled channel's commit into the transaction of the
    /// channel that journals it ([`Channel::journal`]), as `host`.
    pub(crate) fn journal(&mut self, channels: &Channels, host: &Caller) -> Result<(), ScopeError> {
        for name in self.names() {
            let Some(base) = channels.get(&name).and_then(|c| c.journal()).map(str::to_string) else { continue };
            let Some(mut tx) = self.open.remove(&name) else { continue };
            let written = match self.open.get_mut(&base) {
                Some(into) => tx.journal(into.as_mut(), host),
                None => Err(ChannelError::Unavailable(format!("the journal's channel {base} is not open"))),
            };
            self.open.insert(name.clone(), tx);
            written.map_err(|e| failed(&name, format!("cannot journal its commit in {base}: {e}")))?;
        }
        Ok(())
    }

    /// Prepares each transaction ([`Transaction::prepare`]): the first
    /// that fails, by name, with its error.
    pub(crate) fn prepare(&mut self) -> Result<(), (String, ChannelError)> {
        for (name, tx) in &mut self.open {
            tx.prepare().map_err(|e| (name.clone(), e))?;
        }
        Ok(())
    }

    /// The transactions in commit order (see the module docs).
    pub(crate) fn in_commit_order(self, channels: &Channels) -> Vec<(String, Box<dyn Transaction>)> {
        let mut ordered: Vec<_> = self.open.into_iter().collect();
        ordered.sort_by_cached_key(|(name, _)| (channels.get(name).map(|c| c.commit_stage()), name.clone()));
        ordered
    }
}

/// Begins `channel`'s transaction (called `name`) with `how`; a hold
/// holds `claim`, a save shares it (nothing when there is none).
fn start(
    channel: &dyn Channel,
    name: &str,
    how: Begin,
    claim: Option<&Claim>,
) -> Result<Box<dyn Transaction>, ScopeError> {
    let begun = match (how, claim) {
        (Begin::Save, None) => channel.begin(),
        (Begin::Save, Some(claim)) => channel.begin().and_then(|mut tx| tx.share(claim).map(|()| tx)),
        (Begin::Snapshot, _) => channel.snapshot(),
        (Begin::Hold, claim) => channel.hold(claim.unwrap_or(&Claim::default())),
    };
    begun.map_err(|e| failed(name, e.to_string()))
}

/// Channel `name` could not begin: nothing was applied.
fn failed(name: &str, reason: String) -> ScopeError {
    ScopeError::Channel { channel: name.to_string(), reason, committed: Vec::new() }
}
