//! One deploy for a fleet: `sluice deploy` puts services in NATS JetStream
//! and every `sluice serve` host with `[deploy]` runs them, each showing
//! the digest it runs. Two hosts with services directories of their own:
//! a deploy, a new version, a broken one (the previous keeps serving), a
//! rollback, a host killed and started again after a deploy it missed,
//! and a removal.

use serde_json::json;

use crate::effects::{NATS, Nats};
use crate::reload::{sha256_of, version};
use crate::served::Served;
use crate::support::{Fixture, components, text};

/// A host of the fleet: empty services directory, a database of its own
/// (products' `list` needs none of its tables), `[deploy]` on `bucket`.
fn host(bucket: &str) -> (Fixture, String) {
    host_on(NATS, bucket)
}

/// [`host`] with the store at `url`.
fn host_on(url: &str, bucket: &str) -> (Fixture, String) {
    let f = Fixture::new(&[]);
    let config = f.dir.path().join("sluice.toml");
    let db = f.db_path();
    std::fs::write(
        &config,
        format!(
            "[channels.main]\nkind = \"sql\"\nurl = \"sqlite://{}\"\n\n[deploy]\nurl = \"{url}\"\nbucket = \"{bucket}\"\n",
            db.display()
        ),
    )
    .expect("config");
    let config = config.to_string_lossy().into_owned();
    (f, config)
}

fn deploy(f: &Fixture, config: &str, args: &[&str]) -> String {
    let out = f.command().args(["--config", config, "deploy"]).args(args).output().expect("deploy");
    assert!(out.status.success(), "sluice deploy {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

fn runs(s: &Served, name: &str, digest: &str) -> bool {
    version(s, name) == (digest.to_string(), digest.to_string())
}

#[test]
fn a_deploy_reaches_every_host_and_rolls_back() {
    let Some(nats) = Nats::connect() else { return };
    let bucket = format!("sluice_t{}", uuid::Uuid::new_v4().simple());
    let (fa, config_a) = host(&bucket);
    let (fb, config_b) = host(&bucket);
    let a = fa.serve(&["--config", &config_a]);
    let b = fb.serve(&["--config", &config_b]);

    // A component and its manifest, deployed under the name `greet`.
    let stage = tempfile::tempdir().expect("stage");
    let put = |component: &str, manifest: Option<&str>| {
        let wasm = stage.path().join("greet.wasm");
        std::fs::copy(components().join(component), &wasm).expect("stage");
        let mut args = vec![wasm.to_string_lossy().into_owned()];
        if let Some(text) = manifest {
            let toml = stage.path().join("greet.toml");
            std::fs::write(&toml, text).expect("manifest");
            args.push(toml.to_string_lossy().into_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        deploy(&fa, &config_a, &args);
        sha256_of(&components().join(component))
    };
    let v1 = put("probe.wasm", Some("[http]\nexpose = [\"add\"]\n"));
    for s in [&a, &b] {
        s.wait_for("the deploy", |s| runs(s, "greet", &v1));
    }
    let (status, body) = b.post("/services/greet/add", &json!({ "a": 2, "b": 3 }));
    assert_eq!((status, &body["result"]), (200, &json!(5)), "{body}");

    // A new version: products' component under the same name.
    let v2 = put("products.wasm", None);
    for s in [&a, &b] {
        s.wait_for("the new version", |s| runs(s, "greet", &v2));
    }

    // A broken one: each host keeps the version it runs, and says why.
    let broken = stage.path().join("greet.wasm");
    std::fs::write(&broken, b"\0asm\x0d\0\x01\0 truncated").expect("stage");
    deploy(&fa, &config_a, &[&broken.to_string_lossy()]);
    for s in [&a, &b] {
        s.wait_for("the failure to show", |s| {
            let (_, listing) = s.get_json("/services");
            listing["failures"].as_array().is_some_and(|l| l.iter().any(|f| f["kept-previous"] == true))
        });
        assert!(runs(s, "greet", &v2), "the previous version keeps serving");
    }

    // Rolled back from the broken one to v2, then to v1 by its digest.
    let said = deploy(&fa, &config_a, &["--rollback", "greet"]);
    assert!(said.contains(&v2), "{said}");
    for s in [&a, &b] {
        s.wait_for("the rollback", |s| runs(s, "greet", &v2));
    }
    let said = deploy(&fa, &config_a, &["--rollback", "greet", "--to", &v1]);
    assert!(said.contains(&v1), "{said}");
    for s in [&a, &b] {
        s.wait_for("the rollback", |s| runs(s, "greet", &v1));
    }

    // A host killed, a deploy it missed, the host started again: it runs
    // the store's version from its start.
    drop(b); // SIGKILL
    let v3 = put("products.wasm", None);
    let b = fb.serve(&["--config", &config_b]);
    assert!(runs(&b, "greet", &v3), "a restarted host runs what the store holds: {:?}", version(&b, "greet"));
    a.wait_for("the deploy", |s| runs(s, "greet", &v3));

    // The list, then a removal.
    let listed = deploy(&fa, &config_a, &["--list"]);
    assert!(listed.contains("greet") && listed.contains(&v3), "{listed}");
    deploy(&fa, &config_a, &["--remove", "greet"]);
    for s in [&a, &b] {
        s.wait_for("the removal", |s| version(s, "greet").0.is_empty());
    }
    let (status, _) = a.post("/services/greet/list", &json!({}));
    assert_eq!(status, 404);
    let out = fa.command().args(["--config", &config_a, "deploy", "--remove", "greet"]).output().expect("deploy");
    assert!(!out.status.success() && text(&out.stderr).contains("not deployed"), "{}", text(&out.stderr));

    // A store that does not answer does not keep a host from starting.
    let (fc, config_c) = host_on("nats://127.0.0.1:1", &bucket);
    let c = fc.serve(&["--config", &config_c]);
    let (status, _) = c.get("/healthz");
    assert_eq!(status, 200);
    assert!(c.log().contains("the deploy store cannot be read"), "{}", c.log());

    nats.delete(&format!("KV_{bucket}"));
    nats.delete(&format!("OBJ_{bucket}_objects"));
}
