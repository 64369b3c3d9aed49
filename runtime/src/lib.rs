//! Sluice's runtime: what runs a service's code. One crate above
//! `sluice-core` and below the scope: it knows the engine, the services and
//! a scope's store, never a save, the server or the command line.
//!
//! The modules:
//!
//! - [`runtime`]: once per host: the engine, the linker, the epoch ticker,
//!   the compilation cache.
//! - [`registry`]: once per service: discovery, compile, `InstancePre`,
//!   exports, and the handle a request resolves once ([`registry::Callee`]).
//! - [`state`]: what a scope's store holds and the views host functions get.
//! - [`invoke`]: the one way into a guest: instances, the call stack
//!   (`Frame`s), cycles.
//! - [`budget`]: deadlines, fuel and memory enforced while a guest runs.
//! - `linking`: service-to-service imports resolved at discovery and
//!   forwarded within the scope.
//! - `interfaces`: the host side of `from`, `to`, `types` and
//!   `wasi:io/poll`.
//! - [`signature`]: functions shown to people.

pub mod budget;
mod interfaces;
pub mod invoke;
mod linking;
pub mod registry;
pub mod runtime;
pub mod signature;
pub mod state;

use sluice_core::{bindings, channels, command, config, grants, limits, manifest, names, reads, values, work};

pub use registry::Registry;
pub use runtime::Runtime;
