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
    assert!(text(&out.stdout).contains("wrote 15 files into order-history"), "{}", text(&out.stdout));
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

/// `sluice new greeter --lang LANG` in an empty temp dir, built and
/// installed by the very command line its README gives (which installs the
/// language's pinned toolchain the first time), then called: twice it
/// counts, and an empty name is refused. Returns the project's directory
/// (in `work`), or `None` when `tool` is missing or the toolchain could
/// not be installed (a failure under SLUICE_REQUIRE_TOOLS=1).
fn readme_build(lang: &str, tool: &[&str], work: &std::path::Path) -> Option<std::path::PathBuf> {
    readme_build_with(lang, tool, work, std::env::var_os("PATH").unwrap_or_default())
}

/// [`readme_build`] with the README's command run on `path` as its PATH.
fn readme_build_with(
    lang: &str,
    tool: &[&str],
    work: &std::path::Path,
    path: std::ffi::OsString,
) -> Option<std::path::PathBuf> {
    if Command::new(tool[0]).args(&tool[1..]).output().map(|o| !o.status.success()).unwrap_or(true) {
        skip_without(&format!("skipping: {} is missing for the {lang} scaffold", tool.join(" ")));
        return None;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["new", "greeter", "--lang", lang])
        .current_dir(work)
        .output()
        .expect("run sluice new");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let project = work.join("greeter");
    let readme = std::fs::read_to_string(project.join("README.md")).expect("README");
    let line =
        readme.split("```sh\n").nth(1).and_then(|rest| rest.split("\n```").next()).expect("the README's build command");
    let f = Fixture::new(&[]);
    let build = Command::new("sh")
        .env("PATH", path)
        .arg("-c")
        .arg(line.replace("SERVICES", &f.services().to_string_lossy()))
        .current_dir(&project)
        .output()
        .expect("run the README's command");
    let said = format!("{}\n{}", text(&build.stdout), text(&build.stderr));
    if !build.status.success() && (said.contains("pip") || said.contains("npm")) {
        skip_without(&format!("skipping: the {lang} toolchain could not be installed: {said}"));
        return None;
    }
    assert!(build.status.success(), "{said}");
    let host = f.host();
    assert!(host.registry().failures().is_empty(), "{:?}", host.registry().failures());
    for expected in [1u64, 2] {
        let report = call::run(&host, "greeter", "greet", &[Val::String("ann".into())], Mode::Save).expect("greet");
        assert_eq!(sluice_host::values::to_json(&report.results[0]), serde_json::json!({ "ok": expected }));
    }
    let refused = call::run(&host, "greeter", "greet", &[Val::String(" ".into())], Mode::Save).expect("greet");
    assert_eq!(
        sluice_host::values::to_json(&refused.results[0]),
        serde_json::json!({ "err": { "invalid": "who is empty" } })
    );
    Some(project)
}

/// The Python scaffold (componentize-py from PyPI); its unit tests pass
/// with plain `python3 -m unittest`.
#[test]
fn a_new_python_service_builds_and_runs() {
    let work = tempfile::tempdir().expect("temp dir");
    let Some(project) = readme_build("python", &["python3", "-m", "venv", "--help"], work.path()) else { return };
    let tests = Command::new("python3").args(["-m", "unittest"]).current_dir(&project).output().expect("unittest");
    assert!(tests.status.success(), "{}", text(&tests.stderr));
    assert!(text(&tests.stderr).contains("Ran 1 test"), "{}", text(&tests.stderr));
}

/// The JavaScript scaffold (componentize-js from the npm registry, at the
/// host's own lockfile); its unit tests pass with `node --test`.
#[test]
fn a_new_javascript_service_builds_and_runs() {
    let work = tempfile::tempdir().expect("temp dir");
    let Some(project) = readme_build("js", &["npm", "--version"], work.path()) else { return };
    let tests = Command::new("node").arg("--test").current_dir(&project).output().expect("node --test");
    assert!(tests.status.success(), "{}", text(&tests.stdout));
    assert!(text(&tests.stdout).contains("# pass 1"), "{}", text(&tests.stdout));
}

/// The C scaffold (`wit-bindgen c`, clang-19 and wasi-libc, `wasm-tools`,
/// the WASI adapter the host writes beside it), built by `make` with the
/// tools `just polyglot` installs; its unit test passes natively with
/// `make test`.
#[test]
fn a_new_c_service_builds_and_runs() {
    let tools = components().join("../guest-tools/bin");
    if !tools.join("wit-bindgen").exists() || !tools.join("wasm-tools").exists() {
        skip_without(&format!(
            "skipping: no wit-bindgen and wasm-tools in {} (just polyglot installs them)",
            tools.display()
        ));
        return;
    }
    let mut path = std::ffi::OsString::from(&tools);
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let work = tempfile::tempdir().expect("temp dir");
    let Some(project) = readme_build_with("c", &["clang-19", "--version"], work.path(), path) else { return };
    let tests = Command::new("make").arg("test").current_dir(&project).output().expect("make test");
    assert!(tests.status.success(), "{}{}", text(&tests.stdout), text(&tests.stderr));
    assert!(text(&tests.stdout).contains("test_greetings: ok"), "{}", text(&tests.stdout));
}
