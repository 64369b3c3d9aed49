//! What one scope's `Store` holds, and the narrow views of it that each
//! imported interface gets.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::component::{Instance, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::channels::Channels;
use crate::command::{Command, Operation};

/// How much a scope's guests may print to stdout and to stderr each.
const OUTPUT_CAP: usize = 64 << 10;

/// The store data of one scope.
pub struct ScopeState {
    pub(crate) id: ScopeId,
    pub(crate) channels: Arc<Channels>,
    pub(crate) queue: Queue,
    /// Service instances of this scope, created on first use.
    pub(crate) instances: HashMap<String, Instance>,
    /// The services currently executing, outermost first. The last one is
    /// the caller of any host function.
    pub(crate) stack: Vec<String>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
    /// How many bytes of each stream have been sent to the host log.
    pub(crate) stdout_seen: usize,
    pub(crate) stderr_seen: usize,
}

/// A scope's id, unique within the host process; it tags logs and commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ScopeId(pub u64);

impl std::fmt::Display for ScopeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "scope-{}", self.0)
    }
}

impl ScopeId {
    fn next() -> ScopeId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ScopeId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl ScopeState {
    pub(crate) fn new(channels: Arc<Channels>) -> ScopeState {
        let stdout = MemoryOutputPipe::new(OUTPUT_CAP);
        let stderr = MemoryOutputPipe::new(OUTPUT_CAP);
        // No preopened directories, no environment, no arguments, no
        // network: a guest gets clocks, random and captured stdio only.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        ScopeState {
            id: ScopeId::next(),
            channels,
            queue: Queue::default(),
            instances: HashMap::new(),
            stack: Vec::new(),
            wasi,
            table: ResourceTable::new(),
            stdout,
            stderr,
            stdout_seen: 0,
            stderr_seen: 0,
        }
    }

    /// The view `from` and `to` work through.
    pub(crate) fn service_view(&mut self) -> ServiceView<'_> {
        ServiceView {
            service: self.stack.last().map_or("", String::as_str),
            channels: &self.channels,
            queue: &mut self.queue,
        }
    }
}

impl WasiView for ScopeState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// What the `from` and `to` host functions may touch: the calling service's
/// name, the channels, and the queue.
pub struct ServiceView<'a> {
    /// The service whose code made the host call.
    pub service: &'a str,
    /// The host's channels.
    pub channels: &'a Channels,
    /// The scope's command queue.
    pub queue: &'a mut Queue,
}

/// The commands a scope has queued, in order.
#[derive(Debug, Default)]
pub struct Queue {
    commands: Vec<Command>,
    next_ticket: u64,
}

impl Queue {
    /// Appends a command and returns its ticket.
    pub fn push(&mut self, service: &str, channel: &str, op: Operation) -> u64 {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        self.commands.push(Command {
            ticket,
            service: service.to_string(),
            channel: channel.to_string(),
            op,
        });
        ticket
    }

    /// The queued commands, oldest first.
    pub fn commands(&self) -> &[Command] {
        &self.commands
    }

    /// Removes and returns every queued command.
    pub fn take(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }
}
