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

/// The store data of one scope, split by owner: who the scope is (its id,
/// registry, channels, deadline and cancel flag), the call stack
/// ([`CallStack`], [`crate::invoke`] and [`crate::budget`]), what the guests
/// printed ([`Output`]), the command queue, the reads kept for the save
/// ([`Kept`], the `from` interface) and WASI's own state. Its fields are the
/// runtime's; the scope above works through the methods below.
pub struct ScopeState {
    pub(crate) id: ScopeId,
    pub(crate) registry: Arc<Registry>,
    pub(crate) channels: Arc<Channels>,
    pub(crate) queue: Queue,
    pub(crate) calls: CallStack,
    /// When the scope's guests must have finished, and the timeout it
    /// was computed from.
    pub(crate) scope_deadline: Instant,
    pub(crate) scope_timeout: Duration,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_hooks: NoOutgoingHttp,
    table: ResourceTable,
    output: Output,
    /// Every grant refusal a guest got in this scope, in order.
    pub(crate) denials: Vec<String>,
    /// Set when whoever waits for the scope goes away.
    pub(crate) cancel: crate::budget::Canceller,
    pub(crate) kept: Kept,
}

/// The calls of a scope: its instances and the stack of calls running now.
#[derive(Default)]
pub(crate) struct CallStack {
    /// Service instances of this scope, created on first use.
    pub instances: HashMap<String, Instance>,
    /// Instantiated services in the order they were instantiated; hooks run
    /// in this order.
    pub order: Vec<String>,
    /// The calls currently executing, outermost first. The last one made any
    /// host call in progress.
    pub frames: Vec<Frame>,
    /// The names of `frames`, for what is queued or kept under them.
    pub chain: crate::invoke::Chain,
    /// The limits of each call on `frames` (see [`crate::budget`]).
    pub budgets: Vec<Budget>,
}

/// What a scope's guests printed, captured up to [`OUTPUT_CAP`] per stream.
struct Output {
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    /// How many bytes of each stream have been sent to the host log.
    stdout_seen: usize,
    stderr_seen: usize,
}

/// The reads a scope keeps: for the save to check, and with their rows when
/// the scope is recorded.
pub(crate) struct Kept {
    /// The reads the save will check (none once the save has begun: the
    /// save holds its channels, so what it reads cannot change under it).
    pub reads: ReadSet,
    /// Whether reads are kept: the host's isolation is serializable and the
    /// save has not begun.
    pub keep: bool,
    /// The reads with their rows, when the scope is being recorded.
    pub tape: Option<crate::reads::Tape>,
    /// How many fetches the scope made, by channel.
    pub fetches: HashMap<String, u32>,
}

pub use crate::work::ScopeId;

impl ScopeState {
    /// A new scope's state over `registry` and `channels`.
    pub fn new(registry: Arc<Registry>, channels: Arc<Channels>) -> ScopeState {
        let scope_timeout = registry.runtime().options().scope_timeout;
        let queued_cap = registry.runtime().options().scope_queued_bytes;
        let started = Instant::now();
        let stdout = MemoryOutputPipe::new(OUTPUT_CAP);
        let stderr = MemoryOutputPipe::new(OUTPUT_CAP);
        // No preopened directories, no environment, no arguments, no
        // network: a guest gets clocks, random and captured stdio only.
        let wasi = WasiCtx::builder().stdout(stdout.clone()).stderr(stderr.clone()).build();
        let keep = registry.runtime().options().isolation == Isolation::Serializable;
        ScopeState {
            id: ScopeId::new(),
            registry,
            channels,
            queue: Queue::new(queued_cap),
            calls: CallStack::default(),
            scope_deadline: started + scope_timeout,
            scope_timeout,
            wasi,
            http: WasiHttpCtx::new(),
            http_hooks: NoOutgoingHttp,
            table: ResourceTable::new(),
            output: Output { stdout, stderr, stdout_seen: 0, stderr_seen: 0 },
            denials: Vec::new(),
            cancel: crate::budget::Canceller::default(),
            kept: Kept { reads: ReadSet::default(), keep, tape: None, fetches: HashMap::new() },
        }
    }

    /// The state of the next run of the same unit of work: a new store's
    /// worth of everything, but the same id, cancel flag and scope deadline.
    pub fn next_attempt(&self) -> ScopeState {
        let mut next = ScopeState::new(Arc::clone(&self.registry), Arc::clone(&self.channels));
        next.id = self.id;
        next.cancel = self.cancel.clone();
        next.scope_deadline = self.scope_deadline;
        next
    }

    /// The scope's id.
    pub fn id(&self) -> ScopeId {
        self.id
    }

    /// The services the scope runs against.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The channels the scope reads from and saves to.
    pub fn channels(&self) -> &Arc<Channels> {
        &self.channels
    }

    /// When the scope's guests, and its save, must have finished.
    pub fn deadline(&self) -> Instant {
        self.scope_deadline
    }

    /// The scope's cancel flag.
    pub fn canceller(&self) -> &crate::budget::Canceller {
        &self.cancel
    }

    /// The commands queued so far.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The command queue, for the save to take its rounds from.
    pub fn queue_mut(&mut self) -> &mut Queue {
        &mut self.queue
    }

    /// The services instantiated in this scope, in order.
    pub fn instantiated(&self) -> &[String] {
        &self.calls.order
    }

    /// The grant refusals guests got in this scope so far.
    pub fn denials(&self) -> &[String] {
        &self.denials
    }

    /// Everything the scope's guests wrote to stderr so far.
    pub fn stderr(&self) -> bytes::Bytes {
        self.output.stderr.contents()
    }

    /// Everything the scope's guests wrote to stdout so far.
    pub fn stdout(&self) -> bytes::Bytes {
        self.output.stdout.contents()
    }

    /// Starts recording reads with their rows (an empty tape).
    pub fn record(&mut self) {
        self.kept.tape = Some(crate::reads::Tape::default());
    }

    /// The reads recorded since [`ScopeState::record`], in order.
    pub fn take_tape(&mut self) -> crate::reads::Tape {
        self.kept.tape.take().unwrap_or_default()
    }

    /// Stops keeping reads and gives back those kept: the save has begun,
    /// and holds its channels, so what the scope reads from now on cannot
    /// change under it.
    pub fn take_reads(&mut self) -> ReadSet {
        self.kept.keep = false;
        std::mem::take(&mut self.kept.reads)
    }

    /// The reads kept for the save so far.
    pub fn reads(&self) -> &ReadSet {
        &self.kept.reads
    }

    /// Sends what the guests printed since the last look to the host log,
    /// tagged with the scope and the service whose code printed it: `service`,
    /// or when `None` the innermost running call's. Nothing is copied when
    /// nothing new was printed.
    pub(crate) fn flush_output(&mut self, service: Option<&str>) {
        let ScopeState { id, calls, output, .. } = self;
        let Some(service) = service.or_else(|| calls.frames.last().map(|f| f.service.name.as_str())) else {
            return;
        };
        let Output { stdout, stderr, stdout_seen, stderr_seen } = output;
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
        let service = self.calls.frames.last().map(|f| &f.service);
        ServiceView {
            deadline,
            scope: self.id,
            frames: &self.calls.frames,
            chain: &mut self.calls.chain,
            channels: &self.channels,
            queue: &mut self.queue,
            service,
            denials: &mut self.denials,
            reads: self.kept.keep.then_some(&mut self.kept.reads),
            tape: self.kept.tape.as_mut(),
            fetches: &mut self.kept.fetches,
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
        let running = self.calls.frames.last().map(|f| f.service.name.clone()).unwrap_or_default();
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
    /// How many fetches the scope made, by channel.
    pub(crate) fetches: &'a mut HashMap<String, u32>,
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
