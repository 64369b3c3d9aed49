//! `sluice new`: a service project written into an empty directory outside
//! this repository builds with the command its README gives, and is live
//! when dropped into a services directory.

use std::process::Command;

use sluice_host::call::{self, Mode};
use wasmtime::component::Val;

use crate::support::{Fixture, components, skip_without, text};

/// `sluice new order-history` in an empty temp dir, built with `cargo build
/// --release --target wasm32-wasip2` as its README says (into a target dir
/// the test runs share), then installed as the README says: its function
/// reads the kv channel and queues an increment, and its own unit test
/// passes natively.
#[test]
fn a_new_rust_service_builds_and_runs() {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    if !installed.is_ok_and(|o| text(&o.stdout).lines().any(|l| l == "wasm32-wasip2")) {
        skip_without("skipping: rustup has no wasm32-wasip2 target (just guests adds it)");
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["new", "order-history"])
        .current_dir(work.path())
        .output()
        .expect("run sluice new");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("wrote 11 files into order-history"), "{}", text(&out.stdout));
    let project = work.path().join("order-history");
    let readme = std::fs::read_to_string(project.join("README.md")).expect("README");
    assert!(readme.contains("cargo build --release --target wasm32-wasip2"), "{readme}");

    let target = components().join("../new-services");
    let build = Command::new("cargo")
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target)
        .current_dir(&project)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo build");
    assert!(build.status.success(), "{}", text(&build.stderr));

    let f = Fixture::new(&[]);
    std::fs::copy(target.join("wasm32-wasip2/release/order_history.wasm"), f.services().join("order-history.wasm"))
        .expect("install the component");
    std::fs::copy(project.join("manifest.toml"), f.manifest("order-history")).expect("install the manifest");
    let host = f.host();
    assert!(host.registry().failures().is_empty(), "{:?}", host.registry().failures());
    for expected in [1u64, 2] {
        let report =
            call::run(&host, "order-history", "greet", &[Val::String("ann".into())], Mode::Save).expect("greet");
        assert_eq!(sluice_host::values::to_json(&report.results[0]), serde_json::json!({ "ok": expected }));
    }

    let tests = Command::new("cargo")
        .args(["test", "--target-dir"])
        .arg(components().join("../new-services-native"))
        .current_dir(&project)
        .output()
        .expect("run cargo test");
    assert!(tests.status.success(), "{}", text(&tests.stderr));
    assert!(text(&tests.stdout).contains("1 passed"), "{}", text(&tests.stdout));
}
