//! Hot reload under `sluice serve` (a replaced, broken and removed
//! component, with requests in flight) and graceful shutdown on SIGTERM.

use std::time::Duration;

use serde_json::json;
use sluice_host::runtime::CodeSource;

use crate::served::Served;
use crate::support::{Fixture, components};

/// The services `GET /services` lists now.
fn listed(s: &Served) -> Vec<String> {
    let (_, listing) = s.get_json("/services");
    let services = listing["services"].as_array().cloned().unwrap_or_default();
    services.iter().filter_map(|s| s["name"].as_str().map(str::to_string)).collect()
}

/// What this host says it runs of service `name`: the SHA-256 on
/// `/services`, and the one on `/metrics` (`sluice_service_info`).
pub(crate) fn version(s: &Served, name: &str) -> (String, String) {
    let (_, listing) = s.get_json("/services");
    let services = listing["services"].as_array().cloned().unwrap_or_default();
    let listed = services.iter().find(|svc| svc["name"] == name).map(|svc| svc["sha256"].clone());
    let (_, metrics) = s.get("/metrics");
    let prefix = format!("sluice_service_info{{service=\"{name}\",sha256=\"");
    let metric = metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|rest| rest.strip_suffix("\"} 1"));
    (listed.and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(), metric.unwrap_or_default().to_string())
}

/// `sha256:<hex>` of a file's bytes, as `sha256sum` computes it.
pub(crate) fn sha256_of(path: &std::path::Path) -> String {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).expect("read component");
    let hex: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Whether service `name` exports `function` now.
fn exports(s: &Served, name: &str, function: &str) -> bool {
    let (_, listing) = s.get_json("/services");
    listing["services"].as_array().is_some_and(|l| {
        l.iter().any(|svc| {
            svc["name"] == name
                && svc["functions"].as_array().is_some_and(|fs| fs.iter().any(|f| f["name"] == function))
        })
    })
}

#[test]
fn a_replaced_component_is_swapped_in_while_requests_in_flight_finish_on_the_old_one() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let s = f.serve(&[]);
    let first = sha256_of(&components().join("probe.wasm"));
    assert_eq!(version(&s, "probe"), (first.clone(), first), "which version runs, on /services and /metrics");
    std::thread::scope(|threads| {
        // A slow request on the first version...
        let slow = threads.spawn(|| s.post("/services/probe/sleep", &json!({ "ms": 1500 })));
        std::thread::sleep(Duration::from_millis(300));
        // ...while probe.wasm is replaced by another component (products',
        // which exports list and not sleep). Write then rename, as a deploy
        // would, so the watcher never sees half a file.
        let staged = f.dir.path().join("probe.wasm.new");
        std::fs::copy(components().join("products.wasm"), &staged).expect("stage");
        std::fs::rename(&staged, f.services().join("probe.wasm")).expect("swap file");
        s.wait_for("the new probe", |s| exports(s, "probe", "list"));
        let (status, body) = slow.join().expect("slow request");
        assert_eq!(status, 200, "the request in flight finishes on the version it started with: {body}");
        assert_eq!(body["result"], 1500);
    });
    let (status, body) = s.post("/services/probe/list", &json!({}));
    assert_eq!(status, 200, "{body}");
    let (status, _) = s.post("/services/probe/sleep", &json!({ "ms": 1 }));
    assert_eq!(status, 404, "the old version is gone for new requests");
    assert!(s.log().contains("reloaded services: added none; changed probe; removed none"), "{}", s.log());
    let second = sha256_of(&components().join("products.wasm"));
    assert_eq!(version(&s, "probe"), (second.clone(), second), "the new version's digest, on both");
}

#[test]
fn a_broken_new_file_leaves_the_old_version_serving_and_a_removed_one_is_gone() {
    let f = Fixture::new(&["probe", "products"]);
    f.migrate();
    let s = f.serve(&[]);
    f.write_service("probe.wasm", b"\0asm\x0d\0\x01\0 truncated");
    s.wait_for("the failure to show", |s| {
        let (_, listing) = s.get_json("/services");
        listing["failures"].as_array().is_some_and(|l| !l.is_empty())
    });
    let (_, listing) = s.get_json("/services");
    let failure = &listing["failures"][0];
    assert_eq!(failure["kept-previous"], true, "{listing}");
    assert!(
        failure["error"].as_str().is_some_and(|e| e.contains("probe") && e.contains("not a valid component")),
        "{listing}"
    );
    let (status, body) = s.post("/services/probe/add", &json!({ "a": 2, "b": 3 }));
    assert_eq!((status, &body["result"]), (200, &json!(5)), "the old probe keeps serving: {body}");
    assert!(s.log().contains("the new version is broken, the previous one keeps serving"), "{}", s.log());

    // A broken manifest is the same: the old version (and grants) stay.
    f.write_manifest("products", "[channels.main]\nreads = 7\n");
    s.wait_for("the manifest failure to show", |s| {
        let (_, listing) = s.get_json("/services");
        listing["failures"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["error"].as_str().is_some_and(|e| e.contains("products.toml"))))
    });
    let (status, body) = s.post("/services/products/list", &json!({}));
    assert_eq!(status, 200, "the old products, with its old grants, keeps serving: {body}");

    // Removing a component removes the service.
    std::fs::remove_file(f.services().join("probe.wasm")).expect("remove");
    s.wait_for("probe to go", |s| !listed(s).contains(&"probe".to_string()));
    let (status, _) = s.post("/services/probe/add", &json!({ "a": 2, "b": 3 }));
    assert_eq!(status, 404);
    // And adding one adds it.
    f.add_component("inventory");
    s.wait_for("inventory to come", |s| listed(s).contains(&"inventory".to_string()));
}

#[test]
fn a_reload_does_not_compile_unchanged_components_again() {
    let f = Fixture::new(&["probe", "products"]);
    let host = f.host();
    f.add_component("inventory");
    let changes = host.reload().expect("reload");
    assert_eq!(changes.added, ["inventory"]);
    assert!(changes.changed.is_empty() && changes.removed.is_empty(), "{changes}");
    // Unchanged: the running code when it was loaded (called), else the
    // cache's; never compiled again.
    let registry = host.registry();
    assert_eq!(registry.service("probe").expect("probe").code, CodeSource::Cached);
    assert_eq!(registry.service("products").expect("products").code, CodeSource::Cached);
    assert_ne!(registry.service("inventory").expect("inventory").code, CodeSource::Kept);
    let mut scope = host.scope();
    scope
        .call("probe", "add", &[wasmtime::component::Val::S32(1), wasmtime::component::Val::S32(2)])
        .expect("probe runs");
    drop(scope);
    host.reload().expect("reload");
    assert_eq!(host.registry().service("probe").expect("probe").code, CodeSource::Kept, "loaded code is kept");
}

#[test]
fn sigterm_stops_accepting_lets_the_request_in_flight_finish_and_exits_0() {
    let f = Fixture::new(&["probe"]);
    let mut s = f.serve(&[]);
    let url = s.url("/healthz");
    std::thread::scope(|threads| {
        let slow = threads.spawn(|| s.post("/services/probe/sleep", &json!({ "ms": 1500 })));
        std::thread::sleep(Duration::from_millis(300));
        s.terminate();
        let (code, body) = slow.join().expect("slow request");
        assert_eq!((code, &body["result"]), (200, &json!(1500)), "{body}");
    });
    let status = s.wait_exit();
    assert!(status.success(), "exit status {status:?}\n{}", s.log());
    assert!(reqwest::blocking::get(&url).is_err(), "nothing listens after the exit");
    let log = s.log();
    assert!(log.contains("stopping: no new connections"), "{log}");
    assert!(log.contains("every request in flight was answered"), "{log}");
}

/// `/readyz` is apart from `/healthz`: after SIGTERM with
/// `--unready-seconds`, it answers 503 while the server still serves, so a
/// load balancer can stop sending requests before the server stops
/// accepting them.
#[test]
fn readyz_turns_unready_on_sigterm_while_requests_are_still_served() {
    let f = Fixture::new(&["probe"]);
    let mut s = f.serve(&["--unready-seconds", "3"]);
    let get = |path: &str| reqwest::blocking::get(s.url(path)).map(|r| r.status().as_u16()).unwrap_or(0);
    assert_eq!((get("/readyz"), get("/healthz")), (200, 200));
    s.terminate();
    let started = std::time::Instant::now();
    while get("/readyz") != 503 {
        assert!(started.elapsed() < Duration::from_secs(2), "/readyz stayed ready after SIGTERM\n{}", s.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get("/healthz"), 200, "the server still serves while unready");
    let (code, body) = s.post("/services/probe/add", &json!({ "a": 2, "b": 3 }));
    assert_eq!((code, &body["result"]), (200, &json!(5)), "{body}");
    let status = s.wait_exit();
    assert!(status.success(), "exit status {status:?}\n{}", s.log());
}
