//! End-to-end tests: components built from `guests/` by `just guests`, real
//! SQLite files in temp dirs, the library and the real `sluice` binary.

mod cases;
mod channels;
mod cli;
mod conformance;
mod contract;
mod costs;
mod crash;
mod discovery;
mod edge;
mod effects;
mod fairness;
mod files;
mod fleet;
mod grants;
mod hostile;
mod kv;
mod memory;
mod polyglot;
mod postgres;
mod postgres_sandbox;
mod receiver;
mod reload;
mod sandbox;
mod save;
mod scaffold;
mod serializable;
mod serve;
mod served;
mod stall;
mod support;
mod telemetry;
mod unit_of_work;
mod values;
mod wasi_http;
mod wit;
