//! Sluice's unit of work, above the runtime: a scope's calls and its save
//! (rounds, the checks of what it read, commit order, retries), one request
//! as a call, scopes recorded as cases and replayed, and the process-wide
//! [`Host`] with the work it runs in the background.
//!
//! The modules:
//!
//! - [`scope`]: once per unit of work: the store, lazy instances, the queue,
//!   save rounds, dry run, retries, hooks.
//! - [`call`]: one request: a scope, one call, save or discard.
//! - [`case`]: scopes recorded as test cases, replayed with no channel
//!   (`sluice call --record`, `sluice test`).
//! - [`idempotent`]: requests that carry a key run once; a repeat is
//!   answered from what the first saved.
//! - [`host`]: the runtime, channels and registry of one process together.
//! - [`schedules`]: functions run on a timer, once per tick across hosts.
//! - [`replies`]: the answers to sends, run through the sending service's
//!   handler once per request across hosts.
//! - [`triggers`]: beside `serve`'s routes: the outbox relays, and the
//!   services run by messages.

pub mod call;
pub mod case;
pub mod host;
pub mod idempotent;
pub mod replies;
pub mod schedules;
pub mod scope;
pub mod triggers;

use sluice_core::{bindings, channels, command, config, limits, manifest, reads, values};
use sluice_runtime::{budget, invoke, registry, runtime, state};

pub use call::{CallReport, Ending};
pub use host::{Host, HostOptions};
pub use scope::{Applied, Cause, SaveReport, Scope, ScopeError, Transcript};
