//! A test fixture: a temp dir with a services directory, a data dir and the
//! example schema, plus ways to read the database back.

use std::path::{Path, PathBuf};
use std::process::Output;

use rusqlite::Connection;
use sluice_host::runtime::RuntimeOptions;
use sluice_host::{Host, HostOptions};
use tempfile::TempDir;

/// Where `just guests` put every built component.
pub fn components() -> PathBuf {
    let dir = std::env::var_os("SLUICE_COMPONENTS").map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("target"));
        target.join("components")
    });
    assert!(
        dir.join("probe.wasm").exists(),
        "no guest components in {}: run `just guests` (or `just test`, which does)",
        dir.display()
    );
    dir
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A services dir holding the named components, and an empty data dir.
pub struct Fixture {
    pub dir: TempDir,
}

impl Fixture {
    pub fn new(services: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("services")).expect("services dir");
        let fixture = Fixture { dir };
        for name in services {
            fixture.add_component(name);
        }
        fixture
    }

    /// Copies the built component `name` into the services dir, with its
    /// manifest when it has one.
    pub fn add_component(&self, name: &str) {
        self.add_component_as(name, name);
    }

    /// Copies the built component `component` into the services dir as the
    /// service `service`, with its manifest when it has one: a port in
    /// another language takes the place of the original.
    pub fn add_component_as(&self, component: &str, service: &str) {
        let from = components().join(format!("{component}.wasm"));
        std::fs::copy(&from, self.services().join(format!("{service}.wasm")))
            .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        let manifest = components().join(format!("{component}.toml"));
        if manifest.exists() {
            std::fs::copy(&manifest, self.manifest(service)).expect("copy manifest");
        }
    }

    /// Where the manifest of service `name` goes.
    pub fn manifest(&self, name: &str) -> PathBuf {
        self.services().join(format!("{name}.toml"))
    }

    /// Replaces the manifest of service `name`.
    pub fn write_manifest(&self, name: &str, text: &str) {
        std::fs::write(self.manifest(name), text).expect("write manifest");
    }

    /// Writes arbitrary bytes as a component file.
    pub fn write_service(&self, file: &str, bytes: &[u8]) {
        std::fs::write(self.services().join(file), bytes).expect("write service file");
    }

    pub fn services(&self) -> PathBuf {
        self.dir.path().join("services")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn db_path(&self) -> PathBuf {
        self.data().join("main.db")
    }

    pub fn options(&self) -> HostOptions {
        let mut options = HostOptions::new(self.services());
        options.data_dir = self.data();
        // Tests share one compilation cache so each component compiles once
        // per test run, not once per test.
        options.runtime =
            RuntimeOptions { cache_dir: Some(components().join("../test-cache")), ..RuntimeOptions::default() };
        options
    }

    pub fn host(&self) -> Host {
        Host::open(&self.options()).expect("host opens")
    }

    /// Creates the example tables, as `just run` does.
    pub fn migrate(&self) {
        let out = self.sluice(&["migrate", &repo().join("examples/schema").to_string_lossy()]);
        assert!(out.status.success(), "migrate failed: {}", text(&out.stderr));
    }

    pub fn db(&self) -> Connection {
        Connection::open(self.db_path()).expect("open db")
    }

    /// Every user table's rows, in a stable order: equal dumps mean equal data.
    pub fn dump(&self) -> String {
        let conn = self.db();
        let mut tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("list tables");
        tables.retain(|t| !t.starts_with("sqlite_"));
        let mut out = String::new();
        for table in tables {
            out.push_str(&format!("== {table}\n"));
            let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\" ORDER BY rowid")).expect("select");
            let width = stmt.column_count();
            let rows: Vec<String> = stmt
                .query_map([], |r| {
                    let cells: rusqlite::Result<Vec<rusqlite::types::Value>> = (0..width).map(|i| r.get(i)).collect();
                    Ok(format!("{:?}", cells?))
                })
                .and_then(|rows| rows.collect())
                .expect("rows");
            out.push_str(&rows.join("\n"));
            out.push('\n');
        }
        out
    }

    /// Counts the rows of a table.
    pub fn count(&self, table: &str) -> i64 {
        self.db().query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).expect("count")
    }

    /// Runs the real `sluice` binary against this fixture.
    pub fn sluice(&self, args: &[&str]) -> Output {
        self.sluice_env(&[], args)
    }

    /// Runs the real `sluice` binary with extra environment variables.
    pub fn sluice_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        self.command().envs(env.iter().copied()).args(args).output().expect("run sluice")
    }

    /// The real `sluice` binary with this fixture's services, data and the
    /// tests' shared cache, and no config from the environment.
    pub fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .arg("--services")
            .arg(self.services())
            .arg("--data-dir")
            .arg(self.data())
            .arg("--cache-dir")
            .arg(components().join("../test-cache"))
            .env_remove("SLUICE_CONFIG");
        command
    }
}

/// A test that needs a tool or an artefact the environment may lack calls
/// this when it is missing: the test skips with `message`, except when
/// SLUICE_REQUIRE_TOOLS=1 (CI), where it fails with it.
pub fn skip_without(message: &str) {
    assert!(std::env::var("SLUICE_REQUIRE_TOOLS").as_deref() != Ok("1"), "{message}");
    eprintln!("{message}");
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `probe.insert("main", "products", …)` of a product `name` at `price`, as
/// the call's arguments.
pub fn product(name: &str, price: i64) -> Vec<wasmtime::component::Val> {
    use wasmtime::component::Val;
    let text = Val::Variant("text".into(), Some(Box::new(Val::String(name.into()))));
    let price = Val::Variant("integer".into(), Some(Box::new(Val::S64(price))));
    let columns = Val::List(vec![Val::String("name".into()), Val::String("price_cents".into())]);
    vec![Val::String("main".into()), Val::String("products".into()), columns, Val::List(vec![text, price])]
}

/// Runs `host`'s relays (as `sluice serve` does) until `done` holds; fails
/// after `within`.
pub fn relay_until(host: &std::sync::Arc<Host>, mut done: impl FnMut() -> bool, within: std::time::Duration) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let relays = runtime.block_on(async { sluice_host::triggers::start(std::sync::Arc::clone(host), "e2e") });
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "not done within {within:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(relays);
}

/// A WIT `string` argument.
pub fn s(v: &str) -> wasmtime::component::Val {
    wasmtime::component::Val::String(v.to_string())
}

/// A WIT `list<u8>` argument.
pub fn bytes(v: &[u8]) -> wasmtime::component::Val {
    wasmtime::component::Val::List(v.iter().map(|b| wasmtime::component::Val::U8(*b)).collect())
}

/// The WIT `value` `text(v)`.
pub fn text_value(v: &str) -> wasmtime::component::Val {
    wasmtime::component::Val::Variant("text".into(), Some(Box::new(s(v))))
}
