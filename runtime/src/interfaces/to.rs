//! `sluice:service/to`: commands are grant-checked and queued, never
//! applied here.

use super::from::unknown_channel;
use crate::bindings::sluice::service::to::Host;
use crate::bindings::sluice::service::types::Request;
use crate::bindings::{Error, Row, Value};
use crate::command::{BusOp, HttpOp, KvOp, SqlOp};
use crate::command::{Headers, Operation};
use crate::limits::{Breach, size};
use crate::state::ServiceView;

impl Host for ServiceView<'_> {
    fn insert(&mut self, channel: String, table: String, row: Row) -> wasmtime::Result<Result<u64, Error>> {
        self.enqueue("insert", &channel, Operation::Sql(SqlOp::Insert { table, row }))
    }

    fn update(
        &mut self,
        channel: String,
        table: String,
        key: Row,
        changes: Row,
    ) -> wasmtime::Result<Result<u64, Error>> {
        self.enqueue("update", &channel, Operation::Sql(SqlOp::Update { table, key, changes }))
    }

    fn delete(&mut self, channel: String, table: String, key: Row) -> wasmtime::Result<Result<u64, Error>> {
        self.enqueue("delete", &channel, Operation::Sql(SqlOp::Delete { table, key }))
    }

    fn execute(&mut self, channel: String, sql: String, params: Vec<Value>) -> wasmtime::Result<Result<u64, Error>> {
        self.enqueue("execute", &channel, Operation::Sql(SqlOp::Execute { sql, params }))
    }

    fn set(&mut self, channel: String, key: String, value: Vec<u8>) -> wasmtime::Result<Result<u64, Error>> {
        self.enqueue("set", &channel, Operation::Kv(KvOp::Set { key, value }))
    }

    fn remove(&mut self, channel: String, key: String) -> wasmtime::Result<Result<u64, Error>> {
        self.enqueue("remove", &channel, Operation::Kv(KvOp::Remove { key }))
    }

    fn compare_and_swap(
        &mut self,
        channel: String,
        key: String,
        expected: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        self.enqueue("compare-and-swap", &channel, Operation::Kv(KvOp::Swap { key, expected, value }))
    }

    fn increment(&mut self, channel: String, key: String, by: i64) -> wasmtime::Result<Result<u64, Error>> {
        self.enqueue("increment", &channel, Operation::Kv(KvOp::Increment { key, by }))
    }

    fn publish(
        &mut self,
        channel: String,
        subject: String,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        self.enqueue(
            "publish",
            &channel,
            Operation::Bus(BusOp::Publish { subject, payload, headers: Headers(headers) }),
        )
    }

    fn send(&mut self, channel: String, request: Request) -> wasmtime::Result<Result<u64, Error>> {
        let Request { method, url, headers, body } = request;
        self.enqueue(
            "send",
            &channel,
            Operation::HttpOut(HttpOp::Send { method, url, headers: Headers(headers), body, reply: None }),
        )
    }

    fn expect(&mut self, ticket: u64, rows: u64) -> wasmtime::Result<Result<(), Error>> {
        let _span = self.span("expect", "");
        let name = self.service().to_string();
        Ok(self.queue.expect(&name, ticket, rows).map_err(|why| Error::Invalid(format!("{name}: {why}"))))
    }

    fn reply_to(&mut self, ticket: u64, handler: String, tag: String) -> wasmtime::Result<Result<(), Error>> {
        let _span = self.span("reply-to", "");
        let name = self.service().to_string();
        let invalid = |why: String| Ok(Err(Error::Invalid(format!("{name}: {why}"))));
        if tag.len() > crate::channels::http_out::MAX_TAG {
            return invalid(format!(
                "a reply's tag is {} bytes; at most {} are kept",
                tag.len(),
                crate::channels::http_out::MAX_TAG
            ));
        }
        let takes_reply = self.service.is_some_and(|s| s.function(&handler).is_ok_and(|f| takes_a_reply(&f.params)));
        if !takes_reply {
            return invalid(format!(
                "it exports no function {handler:?} taking one sluice:service reply (tag, id, response, failure) \
                 for reply-to"
            ));
        }
        let reply = crate::channels::http_out::ReplyTo { handler, tag };
        Ok(self.queue.reply_to(&name, ticket, reply).map_err(|why| Error::Invalid(format!("{name}: {why}"))))
    }
}

impl ServiceView<'_> {
    /// The one path every command takes into the queue: the channel must
    /// exist, the operation must be well formed and granted, and the service
    /// must be within its limits. A refusal is the guest's error value; a
    /// breached limit traps, failing the scope.
    fn enqueue(
        &mut self,
        function: &'static str,
        channel: &str,
        op: Operation,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let _span = self.span(function, channel);
        let channels = self.channels;
        let Some(target) = channels.get(channel) else {
            return Ok(Err(unknown_channel(self, channel)));
        };
        let Some(service) = self.service else {
            return Ok(Err(Error::Denied("a command from outside any service".into())));
        };
        let name = &service.name;
        if let Err(m) = op.check() {
            return Ok(Err(Error::Invalid(format!("{name}: {m}"))));
        }
        if op.kind() != target.kind() {
            let e = crate::channels::wrong_kind(target.kind(), op.kind(), &op.describe());
            return Ok(Err(Error::Invalid(format!("{name} on {channel}: {e}"))));
        }
        let limits = &service.limits;
        let bytes = op.size();
        if bytes > limits.command_bytes {
            let detail = format!(
                "queued a command of {} ({}), over its limit of {} (limits.command-bytes)",
                size(bytes),
                op.describe(),
                size(limits.command_bytes)
            );
            return Err(wasmtime::Error::new(Breach::new(name, "command-bytes", detail)));
        }
        let scope_cap = self.queue.cap_bytes();
        if self.queue.bytes() + bytes > scope_cap {
            let detail = format!(
                "queued a command of {} when the scope already held {}, over the host's limit of {} for one scope",
                size(bytes),
                size(self.queue.bytes()),
                size(scope_cap)
            );
            return Err(wasmtime::Error::new(Breach::new(name, "scope-queued-bytes", detail)));
        }
        if self.queue.queued_by(name) >= limits.commands {
            let detail =
                format!("queued more than its limit of {} commands in one scope (limits.commands)", limits.commands);
            return Err(wasmtime::Error::new(Breach::new(name, "commands", detail)));
        }
        // After the sizes: a huge statement is refused before it is parsed.
        // The channel's kind judges the grant: a table and operation, the
        // service's own SQL (by the engine, now and again at save), a key's
        // prefix, a subject, a destination.
        let caller = service.caller(channel, self.deadline.at).cancelled_by(&self.deadline.cancel);
        if let Err(e) = target.check_command(&op, &caller) {
            return self.channel_failed(channel, e, "a command");
        }
        Ok(self
            .queue
            .push(self.scope, name, self.chain.of(self.frames), channel, op)
            .map_err(|why| Error::Invalid(format!("{name}: {why}"))))
    }
}

/// Whether `params` are one `reply` record (`sluice:service/types`): its
/// fields by name, in order (wasmtime's types are structural).
fn takes_a_reply(params: &[(String, wasmtime::component::types::Type)]) -> bool {
    let [(_, wasmtime::component::types::Type::Record(record))] = params else { return false };
    record.fields().map(|f| f.name).eq(["tag", "id", "response", "failure"])
}
