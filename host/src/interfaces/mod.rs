//! Host implementations of the `sluice:service` interfaces, one file each.

mod from;
mod to;
mod types;
