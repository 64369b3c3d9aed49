//! What names a unit of work and what ends it early: its [`ScopeId`] and
//! its [`Canceller`]. The bottom of the layers: channels and commands use
//! them without depending on the scope that owns them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// How often the runtime's ticker advances the engine's epoch. Deadlines are
/// counted in these ticks, so this is also the granularity of every timeout,
/// in guests and in the channels alike.
pub const EPOCH_TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// A scope's id: a UUIDv7, unique across hosts and restarts (time-ordered,
/// with random bits), so that nothing assumes one host per database. It
/// tags logs and commands; JSON and the `x-sluice-scope` header carry the
/// UUID, logs and messages `scope-UUID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ScopeId(pub uuid::Uuid);

impl std::fmt::Display for ScopeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "scope-{}", self.0)
    }
}

impl ScopeId {
    /// A new id.
    pub fn new() -> ScopeId {
        ScopeId(uuid::Uuid::now_v7())
    }
}

impl Default for ScopeId {
    fn default() -> ScopeId {
        ScopeId::new()
    }
}

/// A scope's cancel flag: set from any thread, seen by wasm at its next
/// epoch tick, by SQLite within a thousand steps, and by a WASI wait.
#[derive(Clone, Default)]
pub struct Canceller(pub Arc<AtomicBool>);

impl Canceller {
    /// Cancels the scope.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the scope was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Whether a unit of work's spans (`request`, `scope`, `save`) are exported
/// (OpenTelemetry), set once by the host's telemetry set-up.
static SPANS_EXPORTED: AtomicBool = AtomicBool::new(false);

/// Says whether a unit of work's spans are exported: they are made at
/// `info` then, so that the default filter sends them; at `debug`
/// otherwise, where the default filter drops them before they cost
/// anything. Without export nobody reads them at `info`: the one line per
/// request (`answered`) already names its scope, trace, service and status,
/// and every line logged inside a scope names its scope.
pub fn export_spans(exported: bool) {
    SPANS_EXPORTED.store(exported, Ordering::Relaxed);
}

/// See [`export_spans`].
pub fn spans_exported() -> bool {
    SPANS_EXPORTED.load(Ordering::Relaxed)
}

/// A unit of work's span: `info_span!` while spans are exported,
/// `debug_span!` otherwise (see [`export_spans`]).
#[macro_export]
macro_rules! work_span {
    ($name:literal, $($fields:tt)*) => {
        if $crate::work::spans_exported() {
            ::tracing::info_span!($name, $($fields)*)
        } else {
            ::tracing::debug_span!($name, $($fields)*)
        }
    };
}
