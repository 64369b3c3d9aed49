//! Sluice host: runs WebAssembly component services in scopes and applies
//! the commands they queue only when a scope is saved.
//!
//! The host is a workspace of crates along its layers, each of which may use
//! only the crates below it (the compiler keeps it so):
//!
//! 1. `sluice-core` (`core/`): [`work`], [`bindings`], [`limits`],
//!    [`manifest`], [`command`], [`channels`] (one module per kind),
//!    [`config`], [`grants`], [`reads`], [`names`], [`values`].
//! 2. `sluice-runtime` (`runtime/`): [`runtime`], [`registry`], [`state`],
//!    [`invoke`], [`budget`], [`signature`], and the host side of the WIT
//!    interfaces.
//! 3. `sluice-scope` (`scope/`): [`scope`] (save, retry), [`call`],
//!    [`case`], [`host`], [`triggers`].
//! 4. `sluice-server` (`server/`): [`server`], [`watch`], [`telemetry`].
//! 5. This crate: the command line (the `sluice` binary and [`scaffold`]),
//!    with every layer re-exported under its old path.

pub mod scaffold;

pub use sluice_core::{bindings, channels, command, config, grants, limits, manifest, names, reads, values, work};
pub use sluice_runtime::{budget, invoke, registry, runtime, signature, state};
pub use sluice_scope::{call, case, host, idempotent, scope, triggers};
pub use sluice_server::{deploy, server, telemetry, watch};

pub use call::{CallReport, Ending};
pub use host::{Host, HostOptions};
pub use registry::Registry;
pub use scope::{Applied, Cause, SaveReport, Scope, ScopeError, Transcript};
