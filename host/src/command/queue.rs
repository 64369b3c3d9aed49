//! The [`Queue`]: the commands a scope has queued and not yet applied.

use std::collections::HashMap;

use super::{Command, Operation};
use crate::work::ScopeId;

/// The commands a scope has queued and not yet applied, in order.
#[derive(Debug)]
pub struct Queue {
    commands: Vec<Command>,
    next_ticket: u64,
    /// Commands queued so far in this scope, per service (all rounds).
    per_service: HashMap<String, usize>,
    /// The bytes of every command queued so far in this scope (all rounds),
    /// and the most it may hold (the host's `scope_queued_bytes`).
    bytes: usize,
    cap_bytes: usize,
    /// Why nothing more may be queued, once the scope is saved or ending.
    closed: Option<&'static str>,
}

impl Default for Queue {
    /// A queue without a cap on its bytes.
    fn default() -> Queue {
        Queue::new(usize::MAX)
    }
}

impl Queue {
    /// Appends a command queued by `service` at the end of `chain` (the
    /// calls that led to it, outermost first) and returns its ticket;
    /// refuses when the queue is closed.
    pub fn push(
        &mut self,
        scope: ScopeId,
        service: &str,
        chain: std::sync::Arc<[String]>,
        channel: &str,
        op: Operation,
    ) -> Result<u64, String> {
        if let Some(why) = self.closed {
            return Err(why.to_string());
        }
        self.bytes += op.size();
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        // Count without allocating a key for a service already counted.
        match self.per_service.get_mut(service) {
            Some(n) => *n += 1,
            None => {
                self.per_service.insert(service.to_string(), 1);
            }
        }
        self.commands.push(Command {
            scope,
            ticket,
            service: service.to_string(),
            chain,
            channel: channel.to_string(),
            op,
            expect: None,
        });
        Ok(ticket)
    }

    /// Makes the queued command `ticket`, queued by `service`, expect to
    /// change exactly `rows` rows when applied.
    pub fn expect(&mut self, service: &str, ticket: u64, rows: u64) -> Result<(), String> {
        if let Some(why) = self.closed {
            return Err(why.to_string());
        }
        let Some(command) = self.commands.iter_mut().find(|c| c.ticket == ticket && c.service == service) else {
            return Err(format!(
                "no command with ticket {ticket} queued by {service} waits to be applied (it may be another \
                 service's, or applied in an earlier save round)"
            ));
        };
        if matches!(command.op, Operation::Insert { .. }) {
            return Err(format!(
                "ticket {ticket} is an insert, which always adds one row; expect counts updates, deletes and executes"
            ));
        }
        command.expect = Some(rows);
        Ok(())
    }

    /// Counts `bytes` a scope holds for its save other than commands (the
    /// reads it will check) against the same cap.
    pub(crate) fn charge(&mut self, bytes: usize) {
        self.bytes += bytes;
    }

    /// How many commands `service` has queued in this scope, in all rounds.
    pub fn queued_by(&self, service: &str) -> usize {
        self.per_service.get(service).copied().unwrap_or(0)
    }

    /// An empty queue that may hold `cap_bytes` of commands in all.
    pub fn new(cap_bytes: usize) -> Queue {
        Queue { commands: Vec::new(), next_ticket: 0, per_service: HashMap::new(), bytes: 0, cap_bytes, closed: None }
    }

    /// The bytes of every command queued in this scope, in all rounds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The most [`Queue::bytes`] may reach.
    pub fn cap_bytes(&self) -> usize {
        self.cap_bytes
    }

    /// The queued commands, oldest first.
    pub fn commands(&self) -> &[Command] {
        &self.commands
    }

    /// Removes and returns every queued command.
    pub fn take(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// Refuses every later command with `why`.
    pub(crate) fn close(&mut self, why: &'static str) {
        self.closed = Some(why);
    }
}
