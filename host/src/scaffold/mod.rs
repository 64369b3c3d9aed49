//! `sluice new NAME [--lang rust|python|js|c]`: a new service, written as a
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

mod c;
mod js;
mod python;
mod rust;

/// The `sluice:service` package, as this host implements it.
const WIT: &[(&str, &str)] = &[
    ("from.wit", include_str!("../../../wit/from.wit")),
    ("to.wit", include_str!("../../../wit/to.wit")),
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("lifecycle.wit", include_str!("../../../wit/lifecycle.wit")),
    ("handler.wit", include_str!("../../../wit/handler.wit")),
    ("world.wit", include_str!("../../../wit/world.wit")),
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
    /// C, with `wit-bindgen c`, clang and wasi-libc, and `wasm-tools`
    /// (the versions the host's own C port is built with), under `make`.
    C,
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
    let text = |files: Vec<(String, String)>| files.into_iter().map(|(p, t)| (p, t.into_bytes())).collect();
    let files: Vec<(String, Vec<u8>)> = match lang {
        Lang::Rust => text(rust::files(name)),
        Lang::Python => text(python::files(name)),
        Lang::Js => text(js::files(name)),
        Lang::C => c::files(name),
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
fn with_wit<T: From<String>>(mut files: Vec<(String, T)>) -> Vec<(String, T)> {
    for (file, text) in WIT {
        files.push((format!("wit/deps/sluice-service/{file}"), (*text).to_string().into()));
    }
    files
}

pub(super) const WORLD: &str = r#"package local:NAME@0.1.0;

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

pub(super) const MANIFEST: &str = r#"# What NAME may do on the host: installed beside the component as
# NAME.toml. Without it the service may compute and nothing more.
[channels.kv]
keys = ["greetings/"]

[http]
expose = ["greet"]
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
        assert_eq!(rust::SDK_LIB.matches(rust::SDK_WIT.0).count(), 1, "the SDK reads sluice:service from one path");
        assert!(sdk.contains(rust::SDK_WIT.1) && !sdk.contains(rust::SDK_WIT.0), "{sdk}");
        assert!(new("again", Lang::Rust, &dir.path().join("svc")).is_err_and(|e| e.contains("is not empty")));
        Ok(())
    }
}
