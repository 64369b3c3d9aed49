//! Manifests: grants checked when a read runs and when a command is queued,
//! and manifests that are malformed or ask too much refused at load.

use sluice_host::call::{self, Mode};
use sluice_host::registry::LoadError;
use sluice_host::values;
use wasmtime::component::Val;

use crate::support::s;
use crate::support::{Fixture, text};

/// Without a manifest a service may compute and nothing more: its first
/// read is denied, naming the line that would grant it.
#[test]
fn no_manifest_means_no_grants() {
    let f = Fixture::new(&["products"]);
    f.migrate();
    std::fs::remove_file(f.manifest("products")).expect("remove manifest");
    let out = f.sluice(&["call", "products.add", "widget", "250"]);
    // Exit 3: a grant was denied, so the scope is discarded.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "products may not read table products on channel main; grant it in {}: [channels.main] reads = \
             [\\\"products\\\"]",
            f.manifest("products").display()
        )),
        "{stdout}"
    );
    assert_eq!(f.count("products"), 0);
}

/// A command is refused when it is queued, not at save: the call gets the
/// refusal as a value and nothing is queued.
#[test]
fn commands_are_denied_when_queued() {
    let f = Fixture::new(&["products"]);
    f.migrate();
    f.write_manifest("products", "[channels.main]\nreads = [\"products\"]\n");
    let host = f.host();
    let mut scope = host.scope();
    let out = scope.call("products", "add", &[s("widget"), Val::S64(250)]).expect("call");
    let err = values::to_json(&out[0]);
    assert!(
        err["err"]["store"]["denied"]
            .as_str()
            .is_some_and(|m| m.starts_with("products may not insert into table products on channel main")),
        "{err}"
    );
    assert!(scope.pending().is_empty());
    // The same manifest with the grant works.
    f.write_manifest("products", "[channels.main]\nreads = [\"products\"]\ninserts = [\"products\"]\n");
    let host = f.host();
    call::run(&host, "products", "add", &[s("widget"), Val::S64(250)], Mode::Save).expect("granted");
    assert_eq!(f.count("products"), 1);
}

/// A manifest that does not parse, names an unknown key, or asks for more
/// than the host's caps keeps its service from loading, with the file and
/// the reason; the other services load.
#[test]
fn bad_manifests_are_refused_at_load() {
    let f = Fixture::new(&["products", "probe", "inventory"]);
    f.write_manifest("products", "[channels.main]\nreads = [\"products\"\n");
    f.write_manifest("probe", "[channels.main]\nwrites = [\"products\"]\n");
    f.write_manifest("inventory", "[limits]\nmemory-mb = 100000\n");
    let host = f.host();
    assert_eq!(host.registry().services().count(), 0);
    let failures: Vec<String> = host.registry().failures().iter().map(|x| x.error.to_string()).collect();
    assert_eq!(failures.len(), 3, "{failures:?}");
    for failure in host.registry().failures() {
        assert!(matches!(failure.error, LoadError::Manifest { .. }), "{}", failure.error);
    }
    assert!(
        failures[0].starts_with(&format!(
            "inventory: manifest {}: limits.memory-mb = 100000 is above the host cap of 256 MiB",
            f.manifest("inventory").display()
        )),
        "{}",
        failures[0]
    );
    assert!(failures[1].starts_with(&format!("probe: manifest {}:", f.manifest("probe").display())), "{}", failures[1]);
    assert!(failures[1].contains("unknown field `writes`"), "{}", failures[1]);
    assert!(
        failures[2].starts_with(&format!("products: manifest {}:", f.manifest("products").display())),
        "{}",
        failures[2]
    );
    // A fixed manifest loads on the next discovery.
    f.write_manifest("products", "[channels.main]\nreads = [\"products\"]\n");
    assert!(f.host().registry().service("products").is_ok());
}

/// Fuel limits need a host that meters fuel.
#[test]
fn a_fuel_limit_needs_a_metering_host() {
    let f = Fixture::new(&["probe"]);
    f.write_manifest("probe", "[limits]\nfuel = 1000\n");
    let host = f.host();
    let failure = host.registry().failures()[0].error.to_string();
    assert!(
        failure.ends_with("limits.fuel is set, but this host does not meter fuel (start it with --fuel)"),
        "{failure}"
    );
    let mut options = f.options();
    options.runtime.limits.fuel = Some(1_000_000);
    let host = sluice_host::Host::open(&options).expect("host");
    assert!(host.registry().failures().is_empty());
}
