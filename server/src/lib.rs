//! Sluice's HTTP host and what runs beside it, above the scope: `sluice
//! serve` (axum), hot reload of the services directory, and the logs,
//! spans and their export.
//!
//! - [`server`]: `sluice serve`, thin over [`sluice_scope::call`].
//! - [`watch`]: hot reload of the services directory.
//! - [`deploy`]: services kept in NATS JetStream for a fleet, mirrored into
//!   the services directory.
//! - [`telemetry`]: the log format and level, and OpenTelemetry export.

pub mod deploy;
pub mod server;
pub mod telemetry;
pub mod watch;

use sluice_core::{config, manifest, names, values};
use sluice_runtime::{budget, registry, runtime, signature, state};
use sluice_scope::{call, case, host, idempotent, scope};
