//! Commands: the writes a scope queues through `to`, as plain data, with
//! where they came from, and the scope's queue of them.
//!
//! What a command does is an [`Operation`] of one channel kind's family,
//! defined, checked, sized and described by that kind (see
//! [`crate::channels::ops`]). A command is checked once, when the guest
//! queues it, and applied once, at save, by the channel it names. Because
//! commands are data they can be listed, printed, compared and replayed.

use serde::Serialize;

mod queue;

use crate::work::ScopeId;

pub use crate::channels::bus::{BusOp, check_subject};
pub use crate::channels::headers::Headers;
pub use crate::channels::http_out::{HttpOp, METHODS, check_method};
pub use crate::channels::kv::ops::{KvOp, MAX_KEY_BYTES, check_key};
pub use crate::channels::ops::{Kind, Operation, Outcome, value_json, value_size};
pub use crate::channels::sql::ops::SqlOp;
pub use queue::Queue;

/// One queued write and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Command {
    /// The scope that queued it.
    pub scope: ScopeId,
    /// The handle returned to the guest; unique within its scope.
    pub ticket: u64,
    /// The service that queued it (shared by the commands it queued).
    pub service: std::sync::Arc<str>,
    /// The calls that led to it, outermost first:
    /// `["orders.place", "inventory.reserve"]`. Shared by the commands
    /// queued under the same calls.
    pub chain: std::sync::Arc<[String]>,
    /// The channel it is applied to (shared by the commands for it).
    pub channel: std::sync::Arc<str>,
    /// What it does.
    pub op: Operation,
    /// How many rows it must change when applied (`to.expect`); any other
    /// count makes the save a conflict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<u64>,
}

/// Who queued a command of the host's own (the answer of an idempotent
/// request): no service can have this name, so no service's grant or
/// limits apply to it, and it is applied as the host.
pub const HOST: &str = "(host)";

impl Command {
    /// Whether the host queued it ([`HOST`]).
    pub fn is_host(&self) -> bool {
        &*self.service == HOST
    }

    /// `#ticket chain on channel: summary`, the form used in errors and
    /// logs: `#2 orders.place → inventory.reserve on main: execute …`.
    pub fn describe(&self) -> String {
        let expect = self.expect.map(|n| format!(" (expects {n} row(s))")).unwrap_or_default();
        format!("#{} {} on {}: {}{expect}", self.ticket, self.chain.join(" → "), self.channel, self.op.describe())
    }

    /// Whether `other` was queued by the same service for the same channel.
    /// The queue shares each name among its commands, so this is most often
    /// a comparison of pointers.
    pub fn same_source(&self, other: &Command) -> bool {
        same_name(&self.service, &other.service) && same_name(&self.channel, &other.channel)
    }
}

/// Whether two names are equal, by pointer first.
pub fn same_name(a: &std::sync::Arc<str>, b: &std::sync::Arc<str>) -> bool {
    std::sync::Arc::ptr_eq(a, b) || a == b
}
