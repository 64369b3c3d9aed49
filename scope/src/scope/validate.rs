//! Serializable saves: before round 1, inside the save's transactions, every
//! read the scope kept is run again and its digest compared with the one the
//! scope saw. The transactions hold their channels' write lock from here to
//! the commit, so a save whose reads all match has the effect it would have
//! had had the scope run alone at that moment. A read that changed makes the
//! save a conflict; nothing is applied, and [`super::retry`] runs the scope
//! again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use super::save::overdue;
use super::transactions::{Begin, Transactions};
use super::{Cause, Scope, ScopeError};
use crate::channels::{Caller, ChannelError};
use crate::reads::ReadSet;

impl Scope {
    /// Checks the scope's kept reads in `open`, beginning a transaction on
    /// every channel the save needs first (a read-only snapshot when the
    /// scope queued nothing). Returns how many reads were checked. A scope
    /// with no commands and one read needs no check: one read is consistent
    /// on its own.
    pub(super) fn validate(
        &mut self,
        open: &mut Transactions,
        started: Instant,
        set: ReadSet,
    ) -> Result<usize, ScopeError> {
        let state = self.store.data();
        let reads = set.reads();
        if reads.is_empty() || (state.queue().commands().is_empty() && reads.len() == 1) {
            return Ok(0);
        }
        let registry = Arc::clone(state.registry());
        let channels = Arc::clone(state.channels());
        let (scope_deadline, cancel) = (state.deadline(), state.canceller().clone());
        // A scope that queued nothing checks its reads in snapshots, which
        // hold off no save; one that did holds its channels to the commit.
        let read_only = state.queue().commands().is_empty();
        // Begun in name order, whatever order the scope used them in: two
        // saves never each hold a channel the other waits for.
        let mut needed: BTreeSet<&str> = set.channels();
        // A channel that shares another's transaction needs that one.
        needed.extend(
            state
                .queue()
                .commands()
                .iter()
                .map(|c| channels.get(&c.channel).and_then(|channel| channel.shares()).unwrap_or(&c.channel)),
        );
        let how = if read_only { Begin::Snapshot } else { Begin::Save };
        for name in needed {
            if channels.get(name).is_some() {
                open.begin(&channels, name, how)?;
            }
        }
        for read in set.reads() {
            let Some(tx) = open.get_mut(&read.channel) else { continue };
            let service = registry.service(&read.service).ok();
            let grant = service.and_then(|s| s.grants().on(&read.channel));
            let deadline = service.map_or(scope_deadline, |s| (started + s.limits.deadline).min(scope_deadline));
            let caller =
                if read.host { Caller::host(deadline) } else { Caller::service(&read.service, grant, deadline) }
                    .cancelled_by(&cancel);
            let max_bytes = service.map_or(usize::MAX, |s| s.limits.result_bytes);
            let why = match tx.digest(&read.sql, &read.params, &caller, max_bytes) {
                Ok(digest) if digest == read.digest => continue,
                Ok(_) => "returned other rows at save".to_string(),
                Err(ChannelError::Timeout) if cancel.is_cancelled() => {
                    return Err(ScopeError::Failed {
                        service: read.service.clone(),
                        function: "save".into(),
                        reason: format!(
                            "the save was cancelled checking the read {}: the client went away",
                            read.describe()
                        ),
                        cause: Cause::Cancelled,
                    });
                }
                Err(ChannelError::Timeout) => {
                    let what = format!("checking its read {}", read.describe());
                    return Err(overdue(&read.service, &what, service.map(|s| s.limits.deadline)));
                }
                Err(e) => format!("could not be run again at save ({e})"),
            };
            let reason = format!("the read {} {why}", read.describe());
            return Err(self.conflict(open, &read.service, reason));
        }
        Ok(set.reads().len())
    }

    /// The conflict error for `service`, remembering the channels `open`
    /// holds: a last attempt holds them from its start.
    pub(super) fn conflict(&mut self, open: &Transactions, service: &str, reason: String) -> ScopeError {
        self.attempt.touched = open.names();
        self.conflict_with(service, reason)
    }

    /// The conflict error for `service`, once the channels to hold on a
    /// last attempt are recorded.
    pub(super) fn conflict_with(&mut self, service: &str, reason: String) -> ScopeError {
        tracing::info!(scope = %self.id(), service, attempt = self.attempt.number, "conflict: {reason}");
        ScopeError::Conflict {
            service: service.to_string(),
            reason,
            attempts: self.attempt.number,
            earlier: self.attempt.conflicts.clone(),
        }
    }
}
