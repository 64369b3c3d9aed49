//! Sluice's lower layers, one crate below the host: what a scope's
//! commands and reads are, the grants and limits that judge them, and the
//! channel kinds that carry them out. Nothing here knows of the runtime,
//! the registry, scopes or the server: the host crate (`sluice-host`)
//! builds on this one, and the compiler keeps it so.
//!
//! The modules, bottom first; each uses only those before it (`layers.rs`
//! checks the order inside this crate):
//!
//! - [`work`]: a unit of work's id and cancel flag.
//! - [`bindings`]: the one `bindgen!` call.
//! - [`limits`]: resource limits, their defaults, caps and breaches.
//! - [`channels`]: channel kinds behind one trait: `sql` (SQLite,
//!   PostgreSQL), `kv` (a table of a `sql` channel, Redis), `files`, and
//!   the effects delivered through an outbox after the save: `bus` (NATS
//!   JetStream) and `http-out`. Each kind owns its section of
//!   `sluice.toml`, its section of a channel grant, its commands and its
//!   refusals; `channels/open.rs`, `grant.rs` and `ops.rs` register them.
//! - [`command`]: queued commands (a kind's operation, with where it came
//!   from) and the scope's `Queue` of them.
//! - [`manifest`]: `services/<name>.toml`, a service's grants (each kind's
//!   section) and limits.
//! - [`config`]: `sluice.toml`, the operator's channels and limits.
//! - [`grants`]: a service's grants as its refusals are told.
//! - [`reads`]: the reads a scope keeps to check at save, and the isolation
//!   setting.
//! - [`names`]: names shown to people.
//! - [`values`]: JSON to component values and back, by WIT type.

pub mod bindings;
pub mod channels;
pub mod command;
pub mod config;
pub mod grants;
pub mod limits;
pub mod manifest;
pub mod names;
pub mod reads;
pub mod values;
pub mod work;

#[cfg(test)]
mod layers;
