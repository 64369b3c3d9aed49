//! The [`Queue`]: the commands a scope has queued and not yet applied.

use std::sync::Arc;

use super::{Command, HOST, Operation};
use crate::command::SqlOp;
use crate::work::ScopeId;

/// The commands a scope has queued and not yet applied, in order.
#[derive(Debug)]
pub struct Queue {
    commands: Vec<Command>,
    next_ticket: u64,
    /// The services that queued commands in this scope, with how many each
    /// queued (all rounds), and the channels they named. Each name is kept
    /// once and shared by every command that carries it.
    services: Names,
    per_service: Vec<usize>,
    channels: Names,
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
        let (at, service) = self.services.get(service);
        match self.per_service.get_mut(at) {
            Some(n) => *n += 1,
            None => self.per_service.push(1),
        }
        let (_, channel) = self.channels.get(channel);
        self.commands.push(Command { scope, ticket, service, chain, channel, op, expect: None });
        Ok(ticket)
    }

    /// Appends a command of the host's own (see [`HOST`]) for `channel`,
    /// which must change `rows` rows when given, and returns its ticket.
    /// It counts toward no service's limits; it is applied as the host.
    pub fn push_host(
        &mut self,
        scope: ScopeId,
        what: &str,
        channel: &str,
        op: Operation,
        rows: Option<u64>,
    ) -> Result<u64, String> {
        let chain: Arc<[String]> = Arc::from([what.to_string()]);
        let ticket = self.push(scope, HOST, chain, channel, op)?;
        if let Some(command) = self.commands.last_mut() {
            command.expect = rows;
        }
        Ok(ticket)
    }

    /// Makes the queued command `ticket`, queued by `service`, expect to
    /// change exactly `rows` rows when applied.
    pub fn expect(&mut self, service: &str, ticket: u64, rows: u64) -> Result<(), String> {
        let command = self.waiting(service, ticket)?;
        if matches!(command.op, Operation::Sql(SqlOp::Insert { .. })) {
            return Err(format!(
                "ticket {ticket} is an insert, which always adds one row; expect counts updates, deletes and executes"
            ));
        }
        command.expect = Some(rows);
        Ok(())
    }

    /// Sends the answer to `service`'s queued `send` with `ticket` to
    /// `reply` (`to.reply-to`).
    pub fn reply_to(
        &mut self,
        service: &str,
        ticket: u64,
        reply: crate::channels::http_out::ReplyTo,
    ) -> Result<(), String> {
        let command = self.waiting(service, ticket)?;
        let Operation::HttpOut(crate::channels::http_out::HttpOp::Send { reply: wanted, .. }) = &mut command.op else {
            return Err(format!("ticket {ticket} is not a send; only a send has an answer to reply with"));
        };
        *wanted = Some(reply);
        Ok(())
    }

    /// The command `ticket` that `service` queued and that waits to be
    /// applied in this save round, to state more about it; refused once
    /// the queue is closed.
    fn waiting(&mut self, service: &str, ticket: u64) -> Result<&mut Command, String> {
        if let Some(why) = self.closed {
            return Err(why.to_string());
        }
        self.commands.iter_mut().find(|c| c.ticket == ticket && *c.service == *service).ok_or_else(|| {
            format!(
                "no command with ticket {ticket} queued by {service} waits to be applied (it may be another \
                 service's, or applied in an earlier save round)"
            )
        })
    }

    /// Counts `bytes` a scope holds for its save other than commands (the
    /// reads it will check) against the same cap.
    pub fn charge(&mut self, bytes: usize) {
        self.bytes += bytes;
    }

    /// How many commands `service` has queued in this scope, in all rounds.
    pub fn queued_by(&self, service: &str) -> usize {
        self.services.find(service).and_then(|at| self.per_service.get(at)).copied().unwrap_or(0)
    }

    /// An empty queue that may hold `cap_bytes` of commands in all.
    pub fn new(cap_bytes: usize) -> Queue {
        Queue {
            commands: Vec::new(),
            next_ticket: 0,
            services: Names::default(),
            per_service: Vec::new(),
            channels: Names::default(),
            bytes: 0,
            cap_bytes,
            closed: None,
        }
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
    pub fn close(&mut self, why: &'static str) {
        self.closed = Some(why);
    }
}

/// Names kept once, in the order first seen. A scope names few services and
/// channels (those of the registry and of their grants), so they are found
/// by comparing, the last one found first.
#[derive(Debug, Default)]
struct Names {
    names: Vec<Arc<str>>,
    last: usize,
}

impl Names {
    /// Where `name` is kept, if it is.
    fn find(&self, name: &str) -> Option<usize> {
        match self.names.get(self.last) {
            Some(last) if **last == *name => Some(self.last),
            _ => self.names.iter().position(|n| **n == *name),
        }
    }

    /// Where `name` is kept and the shared copy, keeping it if it is new.
    fn get(&mut self, name: &str) -> (usize, Arc<str>) {
        if let Some(at) = self.find(name)
            && let Some(kept) = self.names.get(at)
        {
            self.last = at;
            return (at, Arc::clone(kept));
        }
        let kept: Arc<str> = Arc::from(name);
        self.names.push(Arc::clone(&kept));
        self.last = self.names.len() - 1;
        (self.last, kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::KvOp;

    fn push(queue: &mut Queue, service: &str, channel: &str) -> u64 {
        let op = Operation::Kv(KvOp::Remove { key: "k".into() });
        let chain: Arc<[String]> = Arc::from([format!("{service}.f")]);
        queue.push(ScopeId(uuid::Uuid::nil()), service, chain, channel, op).expect("queued")
    }

    /// Each name is kept once and shared; counts stay per service whatever
    /// the order the services queue in.
    #[test]
    fn names_are_shared_and_counted_per_service() {
        let mut queue = Queue::default();
        for (service, channel) in [("a", "main"), ("b", "main"), ("a", "kv"), ("c", "kv"), ("a", "main"), ("b", "kv")] {
            push(&mut queue, service, channel);
        }
        let counts: Vec<usize> = ["a", "b", "c", "d"].iter().map(|s| queue.queued_by(s)).collect();
        assert_eq!(counts, vec![3, 2, 1, 0]);
        let commands = queue.commands();
        let seen: Vec<(&str, &str)> = commands.iter().map(|c| (&*c.service, &*c.channel)).collect();
        assert_eq!(seen, vec![("a", "main"), ("b", "main"), ("a", "kv"), ("c", "kv"), ("a", "main"), ("b", "kv")]);
        let [a1, b1, a2, c1, a3, b2] = commands else { panic!("six commands") };
        assert!(Arc::ptr_eq(&a1.service, &a2.service) && Arc::ptr_eq(&a1.service, &a3.service));
        assert!(Arc::ptr_eq(&b1.service, &b2.service));
        assert!(Arc::ptr_eq(&a1.channel, &b1.channel) && Arc::ptr_eq(&a2.channel, &c1.channel));
        assert!(a3.same_source(a1) && !a2.same_source(a1) && !b1.same_source(a1));
    }
}
