//! `sluice new NAME [--lang rust|python|js]`: a new service, written as a
//! project of its own outside this repository, that builds with one command
//! (its README's) and is live when its two files are dropped into a
//! services directory.
//!
//! The `sluice:service` WIT package goes into the project's `wit/deps/`
//! (the layout wit-bindgen and `wkg` read), copied from this binary, so the
//! project needs nothing of this repository. The function it writes reads a
//! key of the host's `kv` channel and queues an increment of it, which every
//! host can run without a schema.

use std::path::{Path, PathBuf};

/// The `sluice:service` package, as this host implements it.
const WIT: &[(&str, &str)] = &[
    ("from.wit", include_str!("../../wit/from.wit")),
    ("to.wit", include_str!("../../wit/to.wit")),
    ("types.wit", include_str!("../../wit/types.wit")),
    ("lifecycle.wit", include_str!("../../wit/lifecycle.wit")),
    ("handler.wit", include_str!("../../wit/handler.wit")),
    ("world.wit", include_str!("../../wit/world.wit")),
];

/// The languages `sluice new` writes a service in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with wit-bindgen from crates.io.
    Rust,
    /// Python, with componentize-py from PyPI (the version the host's own
    /// Python port is built and tested with).
    Python,
    /// JavaScript, with componentize-js from the npm registry (the host's
    /// own lockfile).
    Js,
}

/// Writes a new service `name` in `lang` into `dir` (which must not exist,
/// or be empty) and returns the files written. `name` is a WIT and crate
/// name: lower-case letters and digits in words joined by `-`
/// (`greeter`, `order-history`).
pub fn new(name: &str, lang: Lang, dir: &Path) -> Result<Vec<PathBuf>, String> {
    check_name(name)?;
    if dir.exists() && std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?.next().is_some() {
        return Err(format!("{} is not empty; name a new directory", dir.display()));
    }
    let files = match lang {
        Lang::Rust => rust(name),
        Lang::Python => python(name),
        Lang::Js => js(name),
    };
    let mut written = Vec::new();
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// A name that is a WIT identifier and a crate name alike.
fn check_name(name: &str) -> Result<(), String> {
    let words_ok = name.split('-').all(|w| {
        !w.is_empty()
            && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && w.chars().next().is_some_and(|c| c.is_ascii_lowercase())
    });
    if name.len() > 64 || !words_ok {
        return Err(format!(
            "{name:?} is not a service name: use lower-case words of letters and digits joined by '-', \
             each starting with a letter (greeter, order-history)"
        ));
    }
    Ok(())
}

/// `files` and the `sluice:service` package under `wit/deps/`.
fn with_wit(mut files: Vec<(String, String)>) -> Vec<(String, String)> {
    for (file, text) in WIT {
        files.push((format!("wit/deps/sluice-service/{file}"), (*text).to_string()));
    }
    files
}

/// The guest SDK's source. It is not published, so a new Rust project gets
/// a copy as its own `sluice-guest/` crate, reading the `sluice:service`
/// package from the project's `wit/deps/`.
const SDK_LIB: &str = include_str!("../../guests/sdk/src/lib.rs");

/// Where the SDK reads the `sluice:service` package in this repository, and
/// where its copy in a new project reads it.
const SDK_WIT: (&str, &str) = (r#"path: "../../wit","#, r#"path: "../wit/deps/sluice-service","#);

const SDK_CARGO: &str = r#"[package]
name = "sluice-guest"
description = "Rust bindings and helpers for writing Sluice services (a copy from the host that wrote this project)"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
wit-bindgen = { version = "0.61", default-features = false, features = ["macros", "realloc"] }
"#;

/// The Rust project's files, by path.
fn rust(name: &str) -> Vec<(String, String)> {
    let lib = name.replace('-', "_");
    let files = vec![
        ("sluice-guest/Cargo.toml".to_string(), SDK_CARGO.to_string()),
        ("sluice-guest/src/lib.rs".to_string(), SDK_LIB.replacen(SDK_WIT.0, SDK_WIT.1, 1)),
        ("Cargo.toml".to_string(), RUST_CARGO.replace("NAME", name)),
        ("src/lib.rs".to_string(), RUST_LIB.replace("NAME_MODULE", &lib).replace("NAME", name)),
        ("wit/world.wit".to_string(), WORLD.replace("NAME", name)),
        ("manifest.toml".to_string(), MANIFEST.replace("NAME", name)),
        ("README.md".to_string(), RUST_README.replace("LIB", &lib).replace("NAME", name)),
        (".gitignore".to_string(), "/target\n".to_string()),
    ];
    with_wit(files)
}

/// The Python project's files, by path.
fn python(name: &str) -> Vec<(String, String)> {
    let files = vec![
        ("app.py".to_string(), PYTHON_APP.to_string()),
        ("greetings.py".to_string(), PYTHON_LOGIC.to_string()),
        ("test_greetings.py".to_string(), PYTHON_TEST.to_string()),
        ("requirements.txt".to_string(), PYTHON_REQUIREMENTS.to_string()),
        ("wit/world.wit".to_string(), WORLD.replace("NAME", name)),
        ("manifest.toml".to_string(), MANIFEST.replace("NAME", name)),
        ("README.md".to_string(), PYTHON_README.replace("NAME", name)),
        (".gitignore".to_string(), "/.venv\n__pycache__/\n*.wasm\n".to_string()),
    ];
    with_wit(files)
}

/// The componentize-py the host's Python port is built with.
const PYTHON_REQUIREMENTS: &str = concat!(
    "# The Python guest toolchain (it carries CPython and the WASI adapter).\n",
    include_str!("../../guests/toolchains/python/requirements.txt")
);

const PYTHON_APP: &str = r#""""The service's exports: componentize-py builds this module into the
component. Reads go through `from`; `to` only queues commands, applied when
the host saves the scope."""

from componentize_py_types import Err

from wit_world import exports
from wit_world.imports import from_, to, types

from greetings import count, key

# The channel every host has: keys in a table of its database.
CHANNEL = "kv"


class Api(exports.Api):
    def greet(self, who: str) -> int:
        """Counts a greeting of `who`: reads how many there were, queues one
        more and returns the new count."""
        name = key(who)
        if name is None:
            raise Err(types.Error_Invalid("who is empty"))
        before = from_.get(CHANNEL, name)
        to.increment(CHANNEL, name, 1)
        return count(before) + 1
"#;

const PYTHON_LOGIC: &str = r#""""What the service decides without the host: testable with plain
`python3 -m unittest`."""


def key(who: str) -> str | None:
    """The key counting `who`'s greetings; None for an empty name."""
    who = who.strip()
    return f"greetings/{who}" if who else None


def count(value: bytes | None) -> int:
    """A counter's value: decimal text, as `to.increment` keeps it."""
    return int(value.decode()) if value else 0
"#;

const PYTHON_TEST: &str = r#"import unittest

from greetings import count, key


class Greetings(unittest.TestCase):
    def test_keys_name_who_and_refuse_nobody(self):
        self.assertEqual(key(" ann "), "greetings/ann")
        self.assertIsNone(key("  "))
        self.assertEqual(count(b"41"), 41)
        self.assertEqual(count(None), 0)


if __name__ == "__main__":
    unittest.main()
"#;

const PYTHON_README: &str = r#"# NAME

A Sluice service in Python. Build it (Python 3.10 or later; installs
componentize-py into `.venv` the first time), then drop it into a services
directory:

```sh
python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt && .venv/bin/componentize-py -d wit -w local:NAME/NAME componentize app -o NAME.wasm && cp NAME.wasm SERVICES/NAME.wasm && cp manifest.toml SERVICES/NAME.toml
```

`sluice --services SERVICES call NAME.greet ann` runs it once;
`python3 -m unittest` runs its unit tests.

`wit/world.wit` is the service's world; `wit/deps/sluice-service/` is the
`sluice:service` package of the host that wrote this project.
"#;

/// The JavaScript project's files, by path.
fn js(name: &str) -> Vec<(String, String)> {
    let files = vec![
        ("app.js".to_string(), JS_APP.to_string()),
        ("greetings.js".to_string(), JS_LOGIC.to_string()),
        ("greetings.test.js".to_string(), JS_TEST.to_string()),
        ("package.json".to_string(), JS_PACKAGE.replace("NAME", name)),
        ("package-lock.json".to_string(), JS_LOCK.replace("sluice-js-guest-toolchain", name)),
        ("wit/world.wit".to_string(), WORLD.replace("NAME", name)),
        ("manifest.toml".to_string(), MANIFEST.replace("NAME", name)),
        ("README.md".to_string(), JS_README.replace("NAME", name)),
        (".gitignore".to_string(), "/node_modules\n*.wasm\n".to_string()),
    ];
    with_wit(files)
}

/// The lockfile the host's JavaScript port is built with.
const JS_LOCK: &str = include_str!("../../guests/toolchains/js/package-lock.json");

const JS_PACKAGE: &str = r#"{
  "name": "NAME",
  "private": true,
  "type": "module",
  "description": "A Sluice service; see README.md.",
  "dependencies": {
    "@bytecodealliance/componentize-js": "0.23.0",
    "@bytecodealliance/preview2-shim": "0.25.0"
  }
}
"#;

const JS_APP: &str = r#"// The service's exports: componentize-js builds this module into the
// component. Reads go through `from`; `to` only queues commands, applied
// when the host saves the scope. `s64` and `u64` are BigInts; a `result`
// error is thrown as `{ tag, val }`.

import { get } from "sluice:service/from@0.1.0";
import { increment } from "sluice:service/to@0.1.0";

import { count, key } from "./greetings.js";

// The channel every host has: keys in a table of its database.
const CHANNEL = "kv";

export const api = {
  // Counts a greeting of `who`: reads how many there were, queues one more
  // and returns the new count.
  greet(who) {
    const name = key(who);
    if (name === null) {
      throw { tag: "invalid", val: "who is empty" };
    }
    const before = get(CHANNEL, name);
    increment(CHANNEL, name, 1n);
    return BigInt(count(before) + 1);
  },
};
"#;

const JS_LOGIC: &str = r#"// What the service decides without the host: testable with `node --test`.

// The key counting `who`'s greetings; null for an empty name.
export function key(who) {
  const name = who.trim();
  return name ? `greetings/${name}` : null;
}

// A counter's value: decimal text, as `to.increment` keeps it.
export function count(value) {
  return value ? Number(new TextDecoder().decode(value)) : 0;
}
"#;

const JS_TEST: &str = r#"import assert from "node:assert/strict";
import { test } from "node:test";

import { count, key } from "./greetings.js";

test("keys name who and refuse nobody", () => {
  assert.equal(key(" ann "), "greetings/ann");
  assert.equal(key("  "), null);
  assert.equal(count(new TextEncoder().encode("41")), 41);
  assert.equal(count(undefined), 0);
});
"#;

const JS_README: &str = r#"# NAME

A Sluice service in JavaScript. Build it (Node.js 18 or later; installs
componentize-js into `node_modules` the first time), then drop it into a
services directory:

```sh
npm install --no-audit --no-fund --loglevel=error && node_modules/.bin/componentize-js app.js --wit wit -n local:NAME/NAME -d http fetch-event -o NAME.wasm && cp NAME.wasm SERVICES/NAME.wasm && cp manifest.toml SERVICES/NAME.toml
```

`sluice --services SERVICES call NAME.greet ann` runs it once;
`node --test` runs its unit tests.

`wit/world.wit` is the service's world; `wit/deps/sluice-service/` is the
`sluice:service` package of the host that wrote this project.
"#;

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
opt-level = "s"
strip = "debuginfo"
"#;

const WORLD: &str = r#"package local:NAME@0.1.0;

/// What the service offers; every function is reachable over HTTP when the
/// manifest's `[http] expose` lists it.
interface api {
    use sluice:service/types@0.1.0.{error};

    /// Counts a greeting of `who`: reads how many there were, queues one
    /// more (applied when the scope is saved) and returns the new count.
    greet: func(who: string) -> result<u64, error>;
}

world NAME {
    include sluice:service/imports@0.1.0;
    export api;
}
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

const MANIFEST: &str = r#"# What NAME may do on the host: installed beside the component as
# NAME.toml. Without it the service may compute and nothing more.
[channels.kv]
keys = ["greetings/"]

[http]
expose = ["greet"]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_wit_and_crate_names() {
        assert!(check_name("greeter").is_ok());
        assert!(check_name("order-history2").is_ok());
        for bad in ["", "Greeter", "a_b", "-a", "a-", "a--b", "2a", "a-2b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_python_project_has_its_toolchain_pinned() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        new("greeter", Lang::Python, dir.path())?;
        let pins = std::fs::read_to_string(dir.path().join("requirements.txt")).map_err(|e| e.to_string())?;
        assert!(pins.lines().any(|l| l.starts_with("componentize-py==")), "{pins}");
        Ok(())
    }

    #[test]
    fn a_project_is_written_into_an_empty_directory_only() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let files = new("order-history", Lang::Rust, &dir.path().join("svc"))?;
        assert!(files.iter().any(|f| f.ends_with("wit/deps/sluice-service/to.wit")));
        let lib = std::fs::read_to_string(dir.path().join("svc/src/lib.rs")).map_err(|e| e.to_string())?;
        assert!(lib.contains("sluice_guest::generate!(\"local:order-history/order-history\");"), "{lib}");
        // The one dependency is the SDK's copy, which reads the project's WIT.
        let cargo = std::fs::read_to_string(dir.path().join("svc/Cargo.toml")).map_err(|e| e.to_string())?;
        assert!(
            cargo.contains("sluice-guest = { path = \"sluice-guest\" }") && !cargo.contains("wit-bindgen ="),
            "{cargo}"
        );
        let sdk = std::fs::read_to_string(dir.path().join("svc/sluice-guest/src/lib.rs")).map_err(|e| e.to_string())?;
        assert_eq!(SDK_LIB.matches(SDK_WIT.0).count(), 1, "the SDK reads sluice:service from one path");
        assert!(sdk.contains(SDK_WIT.1) && !sdk.contains(SDK_WIT.0), "{sdk}");
        assert!(new("again", Lang::Rust, &dir.path().join("svc")).is_err_and(|e| e.contains("is not empty")));
        Ok(())
    }
}
