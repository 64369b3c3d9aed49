//! Discovery: what a services directory with good and bad files turns into.

use sluice_host::registry::LoadError;
use sluice_host::runtime::CodeSource;

use crate::support::{Fixture, text};

/// Garbage, a truncated component and a core module are each skipped with
/// an error naming the file and the cause; the good services still load.
#[test]
fn bad_files_are_reported_and_skipped() {
    let f = Fixture::new(&["orders", "products", "inventory"]);
    let orders = std::fs::read(f.services().join("orders.wasm")).expect("read");
    f.write_service("garbage.wasm", b"this is not wasm");
    f.write_service("truncated.wasm", &orders[..orders.len() / 3]);
    f.write_service("core.wasm", b"\0asm\x01\0\0\0");
    f.write_service("Bad Name.wasm", &orders);
    f.write_service("notes.txt", b"ignored: not a .wasm file");

    let host = f.host();
    let registry = host.registry();
    let loaded: Vec<&str> = registry.services().map(|s| s.name.as_str()).collect();
    assert_eq!(loaded, ["inventory", "orders", "products"]);

    let failures = registry.failures();
    let find = |file: &str| {
        failures
            .iter()
            .find(|fl| fl.path.file_name().is_some_and(|n| n == file))
            .map(|fl| (&fl.error, fl.error.to_string()))
            .unwrap_or_else(|| panic!("no failure for {file}: {failures:?}"))
    };
    let (e, msg) = find("garbage.wasm");
    assert!(matches!(e, LoadError::NotWasm { .. }), "{msg}");
    assert!(msg.starts_with("garbage: ") && msg.contains("not a WebAssembly file"), "{msg}");
    let (e, msg) = find("truncated.wasm");
    assert!(matches!(e, LoadError::Invalid { .. }), "{msg}");
    assert!(msg.starts_with("truncated: ") && msg.contains("is not a valid component: failed to parse"), "{msg}");
    let (e, msg) = find("core.wasm");
    assert!(matches!(e, LoadError::CoreModule { .. }), "{msg}");
    assert!(msg.contains("core WebAssembly module, not a component"), "{msg}");
    let (e, msg) = find("Bad Name.wasm");
    assert!(matches!(e, LoadError::BadName { .. }), "{msg}");
    assert_eq!(failures.len(), 4, "the .txt file is not a service");

    // The good services work next to the bad files.
    let mut scope = host.scope();
    scope.call("products", "list", &[]).expect("products still callable");
}

/// Each service is compiled once: a second host over the same files reads
/// the compiled code from the cache instead of running Cranelift again.
#[test]
fn restart_reuses_compiled_code() {
    let f = Fixture::new(&["probe"]);
    let mut options = f.options();
    options.runtime.cache_dir = Some(f.dir.path().join("own-cache"));
    let first = sluice_host::Host::open(&options).expect("first start");
    assert_eq!(first.registry().service("probe").expect("probe").code, CodeSource::Compiled);
    let names = |host: &sluice_host::Host| -> Vec<_> {
        host.registry().service("probe").expect("probe").functions.iter().map(|f| f.names.clone()).collect()
    };
    let decoded = names(&first);
    assert!(decoded.iter().any(|n| n.params.iter().any(|p| p.named().is_some())), "probe names some of its types");
    drop(first);
    let second = sluice_host::Host::open(&options).expect("second start");
    assert_eq!(second.registry().service("probe").expect("probe").code, CodeSource::Cached);
    // The names decoded from its WIT come from the cache too, the same.
    assert_eq!(names(&second), decoded);
    let kept = std::fs::read_dir(f.dir.path().join("own-cache")).expect("cache dir").flatten();
    assert!(kept.into_iter().any(|e| e.file_name().to_string_lossy().ends_with(".names.json")), "names cached");
    // Rewriting a cache entry in place under a running host must not crash
    // it: cached code is read into memory, not mapped from the file.

    // A corrupt cache entry is recompiled, not fatal: by a running host
    // that loads the service's code on its first call (and writes the entry
    // again), and by a host that starts.
    let corrupt = || {
        for entry in std::fs::read_dir(f.dir.path().join("own-cache")).expect("cache dir") {
            std::fs::write(entry.expect("entry").path(), b"corrupt").expect("corrupt the cache");
        }
    };
    corrupt();
    assert!(!second.registry().service("probe").expect("probe").is_loaded(), "an uncalled service holds no code");
    let mut scope = second.scope();
    scope
        .call("probe", "add", &[wasmtime::component::Val::S32(1), wasmtime::component::Val::S32(1)])
        .expect("still runs");
    assert!(second.registry().service("probe").expect("probe").is_loaded());
    corrupt();
    let third = sluice_host::Host::open(&options).expect("third start");
    assert_eq!(third.registry().service("probe").expect("probe").code, CodeSource::Compiled);
    let mut scope = third.scope();
    scope.call("probe", "add", &[wasmtime::component::Val::S32(2), wasmtime::component::Val::S32(2)]).expect("works");
}

/// Exported functions are read from the component's own type information.
#[test]
fn exports_come_from_the_component_types() {
    let f = Fixture::new(&["orders", "inventory"]);
    let host = f.host();
    let registry = host.registry();
    let orders = registry.service("orders").expect("orders");
    let names: Vec<String> = orders.functions.iter().map(|f| f.qualified_name()).collect();
    assert_eq!(names, ["acme:orders/api@0.1.0#place", "acme:orders/api@0.1.0#do-clearing"], "hooks are not functions");
    assert!(orders.hooks.on_save && orders.hooks.init);
    assert_eq!(orders.calls, [("acme:inventory/stock@0.1.0".to_string(), "inventory".to_string())]);
    let place = orders.function("place").expect("place");
    assert_eq!(sluice_host::signature::params(place), "customer: string, product-id: s64, quantity: u32");
}

/// A first start compiles the components on as many threads as there are
/// cores and logs each one as it finishes, with a count (the `progress`
/// target, which `sluice` shows on a terminal by default); a second start
/// reads them all from the cache and logs no compile.
#[test]
fn first_start_logs_compile_progress() {
    let services = ["probe", "products", "ping", "pong"];
    let f = Fixture::new(&services);
    let start = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--services")
            .arg(f.services())
            .arg("--data-dir")
            .arg(f.data())
            .arg("--cache-dir")
            .arg(f.dir.path().join("own-cache"))
            .env("SLUICE_LOG", "progress=info")
            .env_remove("SLUICE_CONFIG")
            .arg("list")
            .output()
            .expect("run sluice");
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    let first = start();
    for service in services {
        let file = format!("{service}.wasm");
        assert!(first.lines().any(|l| l.contains("compiled") && l.contains(&file)), "{service}: {first}");
    }
    assert!(first.contains("4 compiled so far, 4 files in all"), "{first}");
    assert!(first.contains(" at a time"), "{first}");
    let second = start();
    assert!(!second.contains("compiled"), "a restart compiled again: {second}");
}
