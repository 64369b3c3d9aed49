//! `sluice:service/to`: commands are checked and queued, never applied here.

use super::from::unknown_channel;
use crate::bindings::sluice::service::to::Host;
use crate::bindings::{Error, Row, Value};
use crate::command::Operation;
use crate::state::ServiceView;

impl Host for ServiceView<'_> {
    fn insert(&mut self, channel: String, table: String, row: Row) -> wasmtime::Result<Result<u64, Error>> {
        Ok(self.enqueue(&channel, Operation::Insert { table, row }))
    }

    fn update(
        &mut self,
        channel: String,
        table: String,
        key: Row,
        changes: Row,
    ) -> wasmtime::Result<Result<u64, Error>> {
        Ok(self.enqueue(&channel, Operation::Update { table, key, changes }))
    }

    fn delete(&mut self, channel: String, table: String, key: Row) -> wasmtime::Result<Result<u64, Error>> {
        Ok(self.enqueue(&channel, Operation::Delete { table, key }))
    }

    fn execute(&mut self, channel: String, sql: String, params: Vec<Value>) -> wasmtime::Result<Result<u64, Error>> {
        Ok(self.enqueue(&channel, Operation::Execute { sql, params }))
    }
}

impl ServiceView<'_> {
    /// The one path every command takes into the queue: the channel must
    /// exist and the operation must be well formed.
    fn enqueue(&mut self, channel: &str, op: Operation) -> Result<u64, Error> {
        if self.channels.get(channel).is_none() {
            return Err(unknown_channel(self, channel));
        }
        let service = self.service().to_string();
        op.check().map_err(|m| Error::Invalid(format!("{service}: {m}")))?;
        self.queue.push(self.scope, self.frames, channel, op).map_err(|why| Error::Invalid(format!("{service}: {why}")))
    }
}
