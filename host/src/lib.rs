//! Sluice host: runs WebAssembly component services in scopes and applies
//! the commands they queue only when a scope is saved.
//!
//! The modules, in the order a request meets them:
//!
//! - [`config`]: `sluice.toml`, the operator's channels and limits.
//! - [`manifest`]: `services/<name>.toml`, a service's grants and limits.
//! - [`limits`]: resource limits, their defaults, caps and breaches.
//! - [`grants`]: grant checks for reads and commands, raw SQL parsed.
//! - [`runtime`]: once per host: the engine, the linker, the epoch ticker,
//!   the compilation cache.
//! - [`registry`]: once per service: discovery, compile, `InstancePre`, exports.
//! - [`host`]: the runtime, channels and registry of one process together.
//! - [`scope`]: once per unit of work: the store, lazy instances, the queue,
//!   save rounds, dry run, hooks.
//! - [`invoke`]: the one way into a guest: instances, the call stack
//!   (`Frame`s), cycles.
//! - [`budget`]: deadlines, fuel and memory enforced while a guest runs.
//! - [`linking`]: service-to-service imports resolved at discovery and
//!   forwarded within the scope.
//! - [`call`]: one request: a scope, one call, save or discard.
//! - [`case`]: scopes recorded as test cases, replayed with no channel
//!   (`sluice call --record`, `sluice test`).
//! - [`state`]: what a scope's store holds and the views host functions get.
//! - [`interfaces`]: the host side of `from`, `to` and `types`.
//! - [`command`]: queued commands as data, checked when queued, and the
//!   scope's `Queue` of them.
//! - [`reads`]: the reads a scope keeps to check at save, and the isolation
//!   setting.
//! - [`channels`]: channel kinds behind one trait: `sql` (SQLite,
//!   PostgreSQL), `kv` (a table of a `sql` channel, Redis), `files`, and
//!   the effects delivered through an outbox after the save: `bus` (NATS
//!   JetStream) and `http-out`.
//! - [`values`]: JSON to component values and back, by WIT type.
//! - [`server`]: `sluice serve`, the HTTP host (axum), thin over [`call`].
//! - [`watch`]: hot reload of the services directory.
//! - [`triggers`]: beside `serve`'s routes: the outbox relays, and the
//!   services run by messages.
//! - [`signature`]: functions shown to people.
//! - [`scaffold`]: `sluice new`, a new service project outside this repository.
//! - [`bindings`]: the one `bindgen!` call.
//! - [`work`]: a unit of work's id and cancel flag, the bottom layer.
//!
//! The lower layers (`work`, `bindings`, `limits`, `manifest`, `command`,
//! `channels`, `config`, `grants`, `reads`, `names`, `values`) are the
//! crate `sluice-core` (`core/`), re-exported here under the same names:
//! they cannot use anything of this crate, and the compiler says so.

pub mod budget;
pub mod call;
pub mod case;
pub mod host;
mod interfaces;
pub mod invoke;
mod linking;
pub mod registry;
pub mod runtime;
pub mod scaffold;
pub mod scope;
pub mod server;
pub mod signature;
pub mod state;
pub mod telemetry;
pub mod triggers;
pub mod watch;

pub use sluice_core::{bindings, channels, command, config, grants, limits, manifest, names, reads, values, work};

pub use call::{CallReport, Ending};
pub use host::{Host, HostOptions};
pub use registry::Registry;
pub use scope::{Applied, Cause, SaveReport, Scope, ScopeError, Transcript};
