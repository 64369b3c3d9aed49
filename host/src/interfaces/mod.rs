//! Host implementations of the `sluice:service` interfaces, one file each,
//! and of `wasi:io/poll`, which the host links over WASI's own.

mod from;
pub(crate) mod poll;
mod to;
mod types;
