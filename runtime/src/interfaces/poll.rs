//! `wasi:io/poll`, linked over WASI's own so that a guest's wait (a sleep,
//! a poll on a clock or a stream) ends at its call's deadline. WASI is
//! linked synchronously, and the epoch that stops wasm code cannot stop a
//! host call that blocks; this bounds the only host calls that wait.

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::sync::io::poll::{Host, HostPollable};
use wasmtime_wasi::runtime::in_tokio;
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;
use wasmtime_wasi_io::poll::DynPollable;

use crate::budget::Deadline;

/// How often a wait looks at its scope's cancel flag.
const CANCEL_CHECK: std::time::Duration = std::time::Duration::from_millis(20);

/// What a wait needs: the scope's resources, the deadline of the call that
/// waits, and who is running, for the breach.
pub(crate) struct PollView<'a> {
    pub(crate) table: &'a mut ResourceTable,
    pub(crate) deadline: Deadline,
    pub(crate) running: String,
}

/// The `HasData` that links [`PollView`].
pub(crate) struct DeadlinePoll;

impl HasData for DeadlinePoll {
    type Data<'a> = PollView<'a>;
}

impl PollView<'_> {
    /// Runs `wait` until it finishes or the deadline passes; past it, the
    /// call breaks its deadline like running wasm does.
    fn bounded<T>(&mut self, wait: impl AsyncFnOnce(&mut ResourceTable) -> wasmtime::Result<T>) -> wasmtime::Result<T> {
        let at = tokio::time::Instant::from_std(self.deadline.at);
        let cancel = self.deadline.cancel.clone();
        let table = &mut *self.table;
        let waited = in_tokio(async {
            let cancelled = async {
                while !cancel.is_cancelled() {
                    tokio::time::sleep(CANCEL_CHECK).await;
                }
            };
            tokio::select! {
                done = wait(table) => Some(done),
                () = tokio::time::sleep_until(at) => None,
                () = cancelled => None,
            }
        });
        waited.unwrap_or_else(|| Err(self.deadline.passed(&self.running)))
    }
}

impl Host for PollView<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        self.bounded(async |table| async_poll::Host::poll(table, pollables).await)
    }
}

impl HostPollable for PollView<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        // Does not wait, but may yield to the runtime once.
        self.bounded(async |table| async_poll::HostPollable::ready(table, pollable).await)
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        self.bounded(async |table| async_poll::HostPollable::block(table, pollable).await)
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.table, pollable)
    }
}
