//! What one scope's `Store` holds, and the narrow views of it that each
//! imported interface gets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Instance, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{Result as HttpResult, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::budget::Budget;
use crate::channels::Channels;
use crate::command::Queue;
use crate::invoke::Frame;
use crate::reads::{Isolation, ReadSet};
use crate::registry::{Registry, Service};

/// How much a scope's guests may print to stdout and to stderr each; past
/// it the stream is closed and further writes fail.
pub const OUTPUT_CAP: usize = 64 << 10;

/// The store data of one scope.
pub struct ScopeState {
    pub(crate) id: ScopeId,
    pub(crate) registry: Arc<Registry>,
    pub(crate) channels: Arc<Channels>,
    pub(crate) queue: Queue,
    /// Service instances of this scope, created on first use.
    pub(crate) instances: HashMap<String, Instance>,
    /// Instantiated services in the order they were instantiated; hooks run
    /// in this order.
    pub(crate) order: Vec<String>,
    /// The calls currently executing, outermost first. The last one made any
    /// host call in progress.
    pub(crate) frames: Vec<Frame>,
    /// The names of `frames`, for what is queued or kept under them.
    pub(crate) chain: crate::invoke::Chain,
    /// The limits of each call on `frames` (see [`crate::budget`]).
    pub(crate) budgets: Vec<Budget>,
    /// When the scope's guests must have finished, and the timeout it
    /// was computed from.
    pub(crate) scope_deadline: Instant,
    pub(crate) scope_timeout: Duration,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_hooks: NoOutgoingHttp,
    table: ResourceTable,
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
    /// How many bytes of each stream have been sent to the host log.
    pub(crate) stdout_seen: usize,
    pub(crate) stderr_seen: usize,
    /// Every grant refusal a guest got in this scope, in order.
    pub(crate) denials: Vec<String>,
    /// Set when whoever waits for the scope goes away.
    pub(crate) cancel: crate::budget::Canceller,
    /// The reads the save will check (none once the save has begun: the
    /// save holds its channels, so what it reads cannot change under it).
    pub(crate) reads: ReadSet,
    /// Whether reads are kept: the host's isolation is serializable and the
    /// save has not begun.
    pub(crate) keep_reads: bool,
    /// The reads with their rows, when the scope is being recorded.
    pub(crate) tape: Option<crate::reads::Tape>,
    /// Which run of the unit of work this is, from 1; a conflict runs it
    /// again in a new scope.
    pub(crate) attempt: usize,
    /// Why each earlier attempt was a conflict.
    pub(crate) conflicts: Vec<crate::scope::Conflicted>,
    /// Transactions begun before the scope ran (its last attempt holds its
    /// channels from the start); the save applies in them.
    pub(crate) held: crate::scope::transactions::Transactions,
    /// The channels the save opened, for a retry that holds them.
    pub(crate) touched: Vec<String>,
}

pub use crate::work::ScopeId;

impl ScopeState {
    pub(crate) fn new(registry: Arc<Registry>, channels: Arc<Channels>) -> ScopeState {
        let scope_timeout = registry.runtime().options().scope_timeout;
        let queued_cap = registry.runtime().options().scope_queued_bytes;
        let started = Instant::now();
        let stdout = MemoryOutputPipe::new(OUTPUT_CAP);
        let stderr = MemoryOutputPipe::new(OUTPUT_CAP);
        // No preopened directories, no environment, no arguments, no
        // network: a guest gets clocks, random and captured stdio only.
        let wasi = WasiCtx::builder().stdout(stdout.clone()).stderr(stderr.clone()).build();
        let registry_keeps_reads = registry.runtime().options().isolation == Isolation::Serializable;
        ScopeState {
            id: ScopeId::new(),
            registry,
            channels,
            queue: Queue::new(queued_cap),
            instances: HashMap::new(),
            order: Vec::new(),
            frames: Vec::new(),
            chain: crate::invoke::Chain::default(),
            budgets: Vec::new(),
            scope_deadline: started + scope_timeout,
            scope_timeout,
            wasi,
            http: WasiHttpCtx::new(),
            http_hooks: NoOutgoingHttp,
            table: ResourceTable::new(),
            stdout,
            stderr,
            stdout_seen: 0,
            stderr_seen: 0,
            denials: Vec::new(),
            cancel: crate::budget::Canceller::default(),
            reads: ReadSet::default(),
            keep_reads: registry_keeps_reads,
            tape: None,
            attempt: 1,
            conflicts: Vec::new(),
            held: Default::default(),
            touched: Vec::new(),
        }
    }

    /// The state of the next attempt at the same unit of work: a new store's
    /// worth of everything, but the same id, cancel flag and scope deadline,
    /// and the conflicts so far.
    pub(crate) fn next_attempt(&self, conflict: crate::scope::Conflicted) -> ScopeState {
        let mut next = ScopeState::new(Arc::clone(&self.registry), Arc::clone(&self.channels));
        next.id = self.id;
        next.cancel = self.cancel.clone();
        next.scope_deadline = self.scope_deadline;
        next.attempt = self.attempt + 1;
        next.conflicts = self.conflicts.clone();
        next.conflicts.push(conflict);
        next
    }

    /// Sends what the guests printed since the last look to the host log,
    /// tagged with the scope and the service whose code printed it: `service`,
    /// or when `None` the innermost running call's. Nothing is copied when
    /// nothing new was printed.
    pub(crate) fn flush_output(&mut self, service: Option<&str>) {
        let ScopeState { id, frames, stdout, stderr, stdout_seen, stderr_seen, .. } = self;
        let Some(service) = service.or_else(|| frames.last().map(|f| f.service.name.as_str())) else { return };
        for (stream, pipe, seen) in [("stdout", &*stdout, stdout_seen), ("stderr", &*stderr, stderr_seen)] {
            if printed(pipe) <= *seen {
                continue;
            }
            let bytes = pipe.contents();
            for line in String::from_utf8_lossy(&bytes[*seen..]).lines() {
                tracing::info!(target: "guest", scope = %id, service, stream, "{line}");
            }
            *seen = bytes.len();
        }
    }

    /// The view `from` and `to` work through.
    pub(crate) fn service_view(&mut self) -> ServiceView<'_> {
        let deadline = crate::budget::Deadline::current(self);
        let service = self.frames.last().map(|f| &f.service);
        ServiceView {
            deadline,
            scope: self.id,
            frames: &self.frames,
            chain: &mut self.chain,
            channels: &self.channels,
            queue: &mut self.queue,
            service,
            denials: &mut self.denials,
            reads: self.keep_reads.then_some(&mut self.reads),
            tape: self.tape.as_mut(),
        }
    }
}

/// How many bytes a scope's output pipe holds, without copying them
/// (`contents` copies the whole buffer, and is called around every call):
/// [`OUTPUT_CAP`], which every scope's pipes are made with
/// ([`ScopeState::new`]), less the room the pipe says is left.
fn printed(pipe: &MemoryOutputPipe) -> usize {
    use wasmtime_wasi::p2::OutputStream;
    match pipe.clone().check_write() {
        Ok(room) => OUTPUT_CAP.saturating_sub(room),
        // Full: no more is ever written to it.
        Err(_) => OUTPUT_CAP,
    }
}

impl ScopeState {
    /// The view `wasi:io/poll` works through: a wait ends at the running
    /// call's deadline.
    pub(crate) fn poll_view(&mut self) -> crate::interfaces::poll::PollView<'_> {
        let deadline = crate::budget::Deadline::current(self);
        let running = self.frames.last().map(|f| f.service.name.clone()).unwrap_or_default();
        crate::interfaces::poll::PollView { table: &mut self.table, deadline, running }
    }
}

impl WasiView for ScopeState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for ScopeState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.http_hooks }
    }
}

/// `wasi:http` hooks that refuse every outgoing request: a service reaches
/// the outside world only through its channels.
pub(crate) struct NoOutgoingHttp;

impl wasmtime_wasi_http::WasiHttpHooks for NoOutgoingHttp {
    fn send_request(
        &mut self,
        _request: hyper::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = HttpResult<()>> + Send>,
    ) -> Box<
        dyn Future<Output = HttpResult<(hyper::Response<WasiBody>, Box<dyn Future<Output = HttpResult<()>> + Send>)>>
            + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// What the `from` and `to` host functions may touch: who is calling, the
/// channels, and the queue.
pub struct ServiceView<'a> {
    /// The scope.
    pub scope: ScopeId,
    /// The call stack; the last frame is the caller of the host function.
    pub frames: &'a [Frame],
    pub(crate) chain: &'a mut crate::invoke::Chain,
    /// The host's channels.
    pub channels: &'a Channels,
    /// The scope's command queue.
    pub queue: &'a mut Queue,
    /// The service whose code made the host call, with its grants and limits.
    pub service: Option<&'a Arc<Service>>,
    /// The scope's grant refusals so far.
    pub denials: &'a mut Vec<String>,
    /// Where reads are kept for the save to check; `None` when they are not.
    pub(crate) reads: Option<&'a mut ReadSet>,
    /// Where reads are recorded with their rows; `None` when they are not.
    pub(crate) tape: Option<&'a mut crate::reads::Tape>,
    /// The calling function's deadline: the channel interrupts a statement
    /// still running at it.
    pub(crate) deadline: crate::budget::Deadline,
}

impl ServiceView<'_> {
    /// The service whose code made the host call.
    pub fn service(&self) -> &str {
        self.frames.last().map_or("", |f| f.service.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use wasmtime_wasi::p2::OutputStream;

    use super::{MemoryOutputPipe, OUTPUT_CAP, printed};

    /// The length read without a copy is the length of what was written,
    /// up to and including a full pipe.
    #[test]
    fn printed_is_what_the_pipe_holds() {
        let pipe = MemoryOutputPipe::new(OUTPUT_CAP);
        assert_eq!(printed(&pipe), 0);
        let mut writer = pipe.clone();
        writer.write(bytes::Bytes::from_static(b"hello\n")).expect("room");
        assert_eq!(printed(&pipe), 6);
        assert_eq!(printed(&pipe), pipe.contents().len());
        writer.write(bytes::Bytes::from(vec![b'x'; OUTPUT_CAP - 6])).expect("exactly the room left");
        assert_eq!(printed(&pipe), OUTPUT_CAP);
        assert_eq!(printed(&pipe), pipe.contents().len());
    }
}
