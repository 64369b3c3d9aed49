//! The Rust project `sluice new` writes: a crate with the SDK beside it.

use super::{MANIFEST, WORLD, with_wit};

/// The guest SDK's source. It is not published, so a new Rust project gets
/// a copy as its own `sluice-guest/` crate, reading the `sluice:service`
/// package from the project's `wit/deps/`.
pub(super) const SDK_LIB: &str = include_str!("../../../guests/sdk/src/lib.rs");

/// Its module of ids and times.
const SDK_TIME: &str = include_str!("../../../guests/sdk/src/time.rs");

/// Where the SDK reads the `sluice:service` package in this repository, and
/// where its copy in a new project reads it.
pub(super) const SDK_WIT: (&str, &str) = (r#"path: "../../wit","#, r#"path: "../wit/deps/sluice-service","#);

const SDK_CARGO: &str = r#"[package]
name = "sluice-guest"
description = "Rust bindings and helpers for writing Sluice services (a copy from the host that wrote this project)"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
wit-bindgen = { version = "0.61", default-features = false, features = ["macros", "realloc"] }
wasip2 = "1"
"#;

/// The Rust project's files, by path.
pub(super) fn files(name: &str) -> Vec<(String, String)> {
    let lib = name.replace('-', "_");
    let files = vec![
        ("sluice-guest/Cargo.toml".to_string(), SDK_CARGO.to_string()),
        ("sluice-guest/src/lib.rs".to_string(), SDK_LIB.replacen(SDK_WIT.0, SDK_WIT.1, 1)),
        ("sluice-guest/src/time.rs".to_string(), SDK_TIME.to_string()),
        ("Cargo.toml".to_string(), RUST_CARGO.replace("NAME", name)),
        ("src/lib.rs".to_string(), RUST_LIB.replace("NAME_MODULE", &lib).replace("NAME", name)),
        ("wit/world.wit".to_string(), WORLD.replace("NAME", name)),
        ("manifest.toml".to_string(), MANIFEST.replace("NAME", name)),
        ("README.md".to_string(), RUST_README.replace("LIB", &lib).replace("NAME", name)),
        (".gitignore".to_string(), "/target\n".to_string()),
    ];
    with_wit(files)
}

const RUST_CARGO: &str = r#"[package]
name = "NAME"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

# The guest SDK (its macro, wit-bindgen's runtime and helpers): the only
# dependency a service needs.
[dependencies]
sluice-guest = { path = "sluice-guest" }

[profile.release]
opt-level = 3
strip = "debuginfo"
"#;

const RUST_LIB: &str = r#"//! The service NAME: a function that reads the host's `kv` channel and
//! queues a command, applied only when the scope is saved.

// Bindings for the world in wit/, with sluice:service from wit/deps/.
sluice_guest::generate!("local:NAME/NAME");

use exports::local::NAME_MODULE::api::Guest;
use sluice_guest::{from, to, types::Error};

/// The channel every host has: keys in a table of its database.
const CHANNEL: &str = "kv";

struct Component;

impl Guest for Component {
    fn greet(who: String) -> Result<u64, Error> {
        let key = key(&who).map_err(Error::Invalid)?;
        let before = from::get(CHANNEL, &key)?.map_or(Ok(0), |bytes| count(&bytes))?;
        to::increment(CHANNEL, &key, 1)?;
        Ok(before + 1)
    }
}

/// The key counting `who`'s greetings; refuses an empty name.
fn key(who: &str) -> Result<String, String> {
    let who = who.trim();
    if who.is_empty() {
        return Err("who is empty".into());
    }
    Ok(format!("greetings/{who}"))
}

/// A counter's value: decimal text, as `to.increment` keeps it.
fn count(bytes: &[u8]) -> Result<u64, Error> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| Error::Invalid("the counter is not a number".into()))
}

export!(Component);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_who_and_refuse_nobody() {
        assert_eq!(key(" ann ").as_deref(), Ok("greetings/ann"));
        assert!(key("  ").is_err());
        assert_eq!(count(b"41").ok(), Some(41));
    }
}
"#;

const RUST_README: &str = r#"# NAME

A Sluice service. Build it (needs rustup's `wasm32-wasip2` target:
`rustup target add wasm32-wasip2`), then drop it into a services directory:

```sh
cargo build --release --target wasm32-wasip2 && cp target/wasm32-wasip2/release/LIB.wasm SERVICES/NAME.wasm && cp manifest.toml SERVICES/NAME.toml
```

`sluice --services SERVICES call NAME.greet ann` runs it once;
`sluice --services SERVICES serve` serves `POST /services/NAME/greet` with
`{"who": "ann"}`. `cargo test` runs its unit tests natively.

`wit/world.wit` is the service's world; `wit/deps/sluice-service/` is the
`sluice:service` package of the host that wrote this project, and
`sluice-guest/` its Rust SDK (`sluice_guest::generate!`, typed rows, value
conversions), the one dependency.
"#;
