//! The conformance suite: one set of hostile and fault cases, written once,
//! that every channel kind of a family passes. A kind is registered with
//! one line in [`SQL_KINDS`], [`KV_KINDS`], [`EFFECT_KINDS`], [`FETCH_KINDS`] or [`SECRET_KINDS`] (its name and how a host gets a
//! channel `x` of it), and fails here until it holds.
//!
//! - SQL kinds: a grant of `"*"` reaches no host table and no catalog, for
//!   the service's own SQL and for the commands the host builds; no service
//!   makes a trigger, even with `raw-sql`; no temporary object, setting,
//!   lock or listen outlives its scope on a pooled connection; a value
//!   larger than the read may return is refused before it is held, in
//!   time.
//! - effect kinds (bus, http-out): a subject or destination just outside
//!   the grant is refused when queued; a payload over `command-bytes` is
//!   refused before anything is stored.
//! - kv kinds: a key just outside the granted prefix is refused, to read,
//!   list or write; a value over `result-bytes` that is in the store is
//!   refused to `get` and to `list`, before it is held and in time; a
//!   counter or a swap over a long value is judged without reading it
//!   whole.
//!
//! - fetch kinds (http): a method or path just outside the grant, or
//!   escaping it, is refused before anything is sent; a request over
//!   `command-bytes` breaks the limit before it is sent; an answer over
//!   `result-bytes` is refused while it streams in, in time; an API that
//!   never answers costs the caller its deadline and nothing more.
//!
//! - secret kinds (secrets): a name the grant does not list, however
//!   close, is refused with no value in the refusal; a value over
//!   `result-bytes` is refused; no command and no listing; a recorded
//!   scope keeps no read of it.
//!
//! - kinds reached over the network ([`faults`]: PostgreSQL, Redis, Redis
//!   with an outbox): a server that stops answering, a commit that breaks
//!   after another channel committed, a host killed mid-commit;
//! - effect kinds ([`effect_faults`]: bus, http-out): a server that stops
//!   answering costs no save and no row, and gets what was saved once it
//!   answers again.
//!
//! Other cases shared by every kind live beside their machinery: a host
//! killed under load (`crash.rs`: SQLite, bus, http-out, files), a
//! destination that never answers (`fairness.rs`), memory with eight
//! scopes at once (`memory.rs`), a SQLite database locked past the
//! deadline (`channels.rs`).

mod effect_faults;
mod faults;

use std::time::{Duration, Instant};

use sluice_host::Host;
use sluice_host::call::{self, Ending, Mode};
use wasmtime::component::Val;

use crate::support::{Fixture, repo, text};
use crate::support::{bytes, s, text_value};

/// The `sluice.toml` lines of a channel, with what keeps its database
/// alive while they are used (a PostgreSQL database of the test's own).
type Opened = (String, Box<dyn std::any::Any>);

/// A kind of the `sql` family: its name, and the `sluice.toml` lines of a
/// channel `main` of it (`None`, after saying why, where the backend is
/// missing).
struct SqlKind {
    name: &'static str,
    open: fn(&Fixture) -> Option<Opened>,
    /// A read of one computed value of hundreds of megabytes.
    huge: &'static str,
    /// `(function, sql)` that would leave state on the pooled connection
    /// for the next scope: settings, the search path, locks.
    leave: &'static [(&'static str, &'static str)],
}

const SQL_KINDS: &[SqlKind] = &[
    SqlKind {
        name: "sql on SQLite",
        open: sqlite,
        huge: "SELECT randomblob(60000000)",
        leave: &[("execute", "PRAGMA foreign_keys = OFF"), ("execute", "PRAGMA query_only = 1")],
    },
    SqlKind {
        name: "sql on PostgreSQL",
        open: postgres,
        huge: "SELECT repeat('x', 100000000)",
        leave: &[
            ("execute", "SET search_path = pg_temp, public"),
            ("query", "SELECT set_config('search_path', 'pg_temp', false)"),
            ("query", "SELECT pg_advisory_lock(1)"),
            ("execute", "PREPARE planted AS SELECT 1"),
            ("execute", "LISTEN planted"),
        ],
    },
];

/// A kind of the `kv` family: its name and the `sluice.toml` lines of a
/// channel `x` of it beside `main` (`None` where the backend is missing).
struct KvKind {
    name: &'static str,
    open: fn(&Fixture) -> Option<String>,
}

const KV_KINDS: &[KvKind] = &[
    KvKind { name: "kv in a SQLite table", open: kv_table },
    KvKind { name: "kv on Redis", open: redis },
    KvKind { name: "files", open: files },
];

fn kv_table(_: &Fixture) -> Option<String> {
    Some("[channels.x]\nkind = \"kv\"\nurl = \"sql:main\"\n".into())
}

fn files(_: &Fixture) -> Option<String> {
    Some("[channels.x]\nkind = \"files\"\npath = \"files\"\n".into())
}

fn sqlite(f: &Fixture) -> Option<Opened> {
    Some((format!("[channels.main]\nkind = \"sql\"\nurl = \"sqlite://{}\"\n", f.db_path().display()), Box::new(())))
}

fn postgres(_: &Fixture) -> Option<Opened> {
    let db = crate::postgres::Database::new()?;
    Some((format!("[channels.main]\nkind = \"sql\"\nurl = \"{}\"\n", db.url()), Box::new(db)))
}

fn redis(_: &Fixture) -> Option<String> {
    crate::kv::redis_server()?;
    Some(format!("[channels.x]\nkind = \"kv\"\nurl = \"{}\"\n", crate::kv::REDIS))
}

/// A host on `config` (the example schema migrated into `main`) serving
/// `services`, whose manifests the caller wrote.
fn host_on(f: &Fixture, config: &str) -> Host {
    let path = f.dir.path().join("sluice.toml");
    std::fs::write(&path, config).expect("config");
    let schema = repo().join("examples/schema").to_string_lossy().into_owned();
    let out = f.command().arg("--config").arg(&path).args(["migrate", &schema]).output().expect("migrate");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut options = f.options();
    options.config = Some(path);
    let host = Host::open(&options).expect("host");
    assert!(host.registry().failures().is_empty(), "{:?}", host.registry().failures());
    host
}

/// What `service.function(args)` ended with: `saved`, the guest's error
/// (a discarded or denied scope), or the scope's error.
fn told(host: &Host, service: &str, function: &str, args: &[Val]) -> String {
    match call::run(host, service, function, args, Mode::Save) {
        Err(e) => e.to_string(),
        Ok(report) => match report.ending {
            Ending::Saved(_) => format!("saved: {}", sluice_host::values::to_json(&report.results[0])),
            _ => sluice_host::values::to_json(&report.results[0]).to_string(),
        },
    }
}

/// SQL kinds: `"*"` is the application's tables; nothing of a scope stays
/// on a connection; a huge value is refused before it is held.
#[test]
fn every_sql_kind_keeps_services_to_the_application_and_their_scope() {
    for kind in SQL_KINDS {
        let f = Fixture::new(&["hostile", "probe"]);
        let Some((config, _db)) = (kind.open)(&f) else { continue };
        let every = "reads = \"*\"\ninserts = \"*\"\nupdates = \"*\"\ndeletes = \"*\"\n";
        f.write_manifest("hostile", &format!("[channels.main]\n{every}raw-sql = true\n"));
        f.write_manifest("probe", &format!("[channels.main]\n{every}"));
        let host = host_on(&f, &config);
        let name = kind.name;
        // The service's own SQL, on host tables and catalogs.
        for (function, sql) in [
            ("query", "SELECT * FROM sluice_migrations"),
            ("execute", "DELETE FROM sluice_migrations"),
            ("query", "SELECT * FROM sqlite_master"),
            ("query", "SELECT * FROM pg_catalog.pg_class"),
            ("execute", "DELETE FROM pg_catalog.pg_sequence"),
            ("execute", "CREATE TABLE sluice_mine (a INTEGER)"),
            ("execute", "ALTER TABLE sluice_migrations ADD COLUMN x INTEGER"),
        ] {
            let answer = told(&host, "hostile", function, &[s(sql)]);
            assert!(answer.contains("\"denied\"") || answer.contains("\"invalid\""), "{name}: {sql}: {answer}");
        }
        // The commands the host builds, on the same.
        for table in ["sluice_migrations", "sqlite_sequence", "sqlite_master", "pg_sequence", "pg_authid"] {
            let args = [s("main"), s(table), Val::List(vec![s("name")]), Val::List(vec![text_value("x")])];
            let answer = told(&host, "probe", "delete", &args);
            assert!(answer.contains("no grant allows it"), "{name}: delete from {table}: {answer}");
        }
        // A trigger, whose writes would run under no grant (or, on
        // PostgreSQL, under the role of whoever fires it).
        let trigger = "CREATE TRIGGER planted AFTER INSERT ON products BEGIN DELETE FROM stock; END";
        let answer = told(&host, "hostile", "execute", &[s(trigger)]);
        assert!(answer.contains("\"denied\"") || answer.contains("\"invalid\""), "{name}: {trigger}: {answer}");
        // Temporary objects, which would stay on the pooled connection.
        for sql in ["CREATE TEMP TABLE products (x INTEGER)", "CREATE TEMPORARY VIEW stock AS SELECT 1 AS x"] {
            let answer = told(&host, "hostile", "execute", &[s(sql)]);
            assert!(answer.contains("would outlive the scope"), "{name}: {sql}: {answer}");
        }
        // Session state for the next scope on the connection.
        for (function, sql) in kind.leave {
            let answer = told(&host, "hostile", function, &[s(sql)]);
            assert!(answer.contains("\"denied\"") || answer.contains("\"invalid\""), "{name}: {sql}: {answer}");
        }
        // A value far over result-bytes, refused before it is held.
        let started = Instant::now();
        let answer = told(&host, "hostile", "query", &[s(kind.huge)]);
        assert!(answer.contains("limits.result-bytes"), "{name}: {}: {answer}", kind.huge);
        assert!(started.elapsed() < Duration::from_secs(10), "{name}: took {:?}", started.elapsed());
        // And the host serves the next scope, with the migrations intact.
        let listed = told(&host, "probe", "query", &[s("main"), s("SELECT count(*) FROM products"), Val::List(vec![])]);
        assert!(listed.starts_with("saved: "), "{name}: {listed}");
        eprintln!("conformance: {name}: passed");
    }
}

/// kv kinds: a key just outside the grant is refused every way; a value
/// over `result-bytes` in the store is refused to read, in time.
#[test]
fn every_kv_kind_holds_its_grant_and_its_read_limit() {
    for kind in KV_KINDS {
        let f = Fixture::new(&["probe"]);
        let Some(lines) = (kind.open)(&f) else { continue };
        let ns = format!("c{}/", uuid::Uuid::new_v4().simple());
        let granted = format!("{ns}granted/");
        f.write_manifest(
            "probe",
            &format!("[channels.x]\nkeys = [\"{granted}\"]\n[limits]\nresult-bytes = 65536\ncommand-bytes = 1048576\n"),
        );
        let main = format!("[channels.main]\nkind = \"sql\"\nurl = \"sqlite://{}\"\n\n", f.db_path().display());
        let host = host_on(&f, &format!("{main}{lines}"));
        let name = kind.name;
        // Just outside: the prefix without its slash, a longer word, the
        // prefix inside another path.
        let outside = [format!("{ns}granted"), format!("{ns}grantedx/a"), format!("{ns}other/{granted}a")];
        for key in &outside {
            for (function, args) in [
                ("kv-set", vec![s("x"), s(key), bytes(b"v")]),
                ("kv-get", vec![s("x"), s(key)]),
                ("kv-remove", vec![s("x"), s(key)]),
                ("kv-increment", vec![s("x"), s(key), Val::S64(1)]),
            ] {
                let answer = told(&host, "probe", function, &args);
                assert!(
                    answer.contains("\"denied\"") || answer.contains("\"invalid\""),
                    "{name}: {function} {key}: {answer}"
                );
            }
        }
        let answer = told(&host, "probe", "kv-list", &[s("x"), s(&format!("{ns}grant")), Val::U32(10)]);
        assert!(answer.contains("\"denied\""), "{name}: list of a shorter prefix: {answer}");
        // A value over result-bytes (and within command-bytes), stored.
        let big = format!("{granted}big");
        let stored = told(&host, "probe", "kv-set", &[s("x"), s(&big), bytes(&vec![b'b'; 200_000])]);
        assert!(stored.starts_with("saved: "), "{name}: {stored}");
        let started = Instant::now();
        for (function, args) in
            [("kv-get", vec![s("x"), s(&big)]), ("kv-list", vec![s("x"), s(&granted), Val::U32(10)])]
        {
            let answer = told(&host, "probe", function, &args);
            assert!(answer.contains("limits.result-bytes"), "{name}: {function}: {answer}");
        }
        // A counter over a long value: refused as no counter, unread.
        let answer = told(&host, "probe", "kv-increment", &[s("x"), s(&big), Val::S64(1)]);
        assert!(!answer.starts_with("saved: "), "{name}: increment of a long value: {answer}");
        assert!(started.elapsed() < Duration::from_secs(5), "{name}: took {:?}", started.elapsed());
        // Within the grant, all is well.
        let small = format!("{granted}small");
        assert!(told(&host, "probe", "kv-set", &[s("x"), s(&small), bytes(b"ok")]).starts_with("saved: "), "{name}");
        let got = told(&host, "probe", "kv-get", &[s("x"), s(&small)]);
        assert!(got.contains("[111,107]"), "{name}: {got}");
        let _ = told(&host, "probe", "kv-remove", &[s("x"), s(&big)]);
        eprintln!("conformance: {name}: passed");
    }
}

/// A kind of the effects family (what a save sends out after its commit):
/// its name and the `sluice.toml` lines of a channel `x` of it, whose
/// outbox is `main` (`None` where the backend is missing); `inside` and
/// `outside` are a target (a subject, or a method and URL) the test grant
/// covers and ones just outside it.
struct EffectKind {
    name: &'static str,
    open: fn() -> Option<String>,
    /// The manifest lines of the test grant on `x`.
    grant: &'static str,
    /// `(function, target args)` the grant covers.
    inside: (&'static str, &'static [&'static str]),
    /// Targets just outside it.
    outside: &'static [(&'static str, &'static [&'static str])],
}

const EFFECT_KINDS: &[EffectKind] = &[
    EffectKind {
        name: "bus",
        open: bus,
        grant: "subjects = [\"granted.\"]",
        inside: ("publish", &["granted.a"]),
        outside: &[("publish", &["granted"]), ("publish", &["grantedx.a"]), ("publish", &["other.granted.a"])],
    },
    EffectKind {
        name: "http-out",
        open: http_out,
        grant: "destinations = [\"POST 127.0.0.1\"]",
        inside: ("send", &["POST", "http://127.0.0.1:9/hook"]),
        outside: &[
            ("send", &["PUT", "http://127.0.0.1:9/hook"]),
            ("send", &["POST", "http://127.0.0.2:9/hook"]),
            ("send", &["POST", "http://localhost:9/hook"]),
        ],
    },
];

fn bus() -> Option<String> {
    crate::effects::Nats::connect()?;
    let bus = crate::effects::TestBus::new();
    Some(format!(
        "[channels.x]\nkind = \"bus\"\nurl = \"{}\"\noutbox = \"main\"\nstream = \"{}\"\nprefix = \"{}\"\n",
        crate::effects::NATS,
        bus.stream,
        bus.prefix
    ))
}

fn http_out() -> Option<String> {
    Some("[channels.x]\nkind = \"http-out\"\noutbox = \"main\"\nbase = \"http://127.0.0.1:9\"\n".into())
}

/// The probe's arguments for `publish` or `send` on `x`: the target
/// `args` and a payload of `size` bytes.
fn effect_args(args: &[&str], size: usize) -> Vec<Val> {
    let mut all = vec![s("x")];
    all.extend(args.iter().map(|a| s(a)));
    all.push(bytes(&vec![b'p'; size]));
    all
}

/// Effect kinds: a target just outside the grant is refused when queued;
/// a payload over `command-bytes` breaks the limit when queued, before
/// anything is stored; one inside the grant is stored with the data.
#[test]
fn every_effect_kind_holds_its_grant_and_its_size_limit() {
    for kind in EFFECT_KINDS {
        let Some(lines) = (kind.open)() else { continue };
        let f = Fixture::new(&["probe"]);
        f.write_manifest("probe", &format!("[channels.x]\n{}\n[limits]\ncommand-bytes = 65536\n", kind.grant));
        let main = format!("[channels.main]\nkind = \"sql\"\nurl = \"sqlite://{}\"\n\n", f.db_path().display());
        let host = host_on(&f, &format!("{main}{lines}"));
        let name = kind.name;
        for (function, target) in kind.outside {
            let answer = told(&host, "probe", function, &effect_args(target, 10));
            assert!(answer.contains("\"denied\""), "{name}: {function} {target:?}: {answer}");
        }
        let (function, target) = kind.inside;
        let answer = told(&host, "probe", function, &effect_args(target, 100_000));
        assert!(answer.contains("limits.command-bytes"), "{name}: a payload over command-bytes: {answer}");
        assert_eq!(f.count("sluice_outbox"), 0, "{name}: something refused was stored");
        let answer = told(&host, "probe", function, &effect_args(target, 10));
        assert!(answer.starts_with("saved: "), "{name}: {answer}");
        assert_eq!(f.count("sluice_outbox"), 1, "{name}: the granted effect is not in the outbox");
        eprintln!("conformance: {name}: passed");
    }
}

/// A kind of the fetch family (read at call time from an API): its name
/// and the `sluice.toml` lines of a channel `x` of it on `base`.
struct FetchKind {
    name: &'static str,
    open: fn(base: &str) -> String,
}

const FETCH_KINDS: &[FetchKind] = &[FetchKind { name: "http", open: http }];

fn http(base: &str) -> String {
    format!("[channels.x]\nkind = \"http\"\nbase = \"{base}/api\"\n")
}

/// `probe.fetch("x", method, path, headers)`.
fn fetch_args(method: &str, path: &str, headers: &[(&str, String)]) -> Vec<Val> {
    let headers = headers.iter().map(|(n, v)| Val::Tuple(vec![s(n), s(v)])).collect();
    vec![s("x"), s(method), s(path), Val::List(headers)]
}

/// Fetch kinds: the grant is a method and a path prefix, and nothing
/// outside it reaches the API; a request over `command-bytes` and an
/// answer over `result-bytes` break their limits (the answer while it
/// streams, in time); an API that never answers costs the caller its
/// deadline only.
#[test]
fn every_fetch_kind_holds_its_grant_and_its_limits() {
    for kind in FETCH_KINDS {
        let api = crate::receiver::Receiver::start();
        api.answer("/api/granted/a", 200, &[], b"ok");
        api.stream("/api/granted/huge", 512 << 20);
        let f = Fixture::new(&["probe"]);
        f.write_manifest(
            "probe",
            "[channels.x]\nfetch = [\"GET /granted/\"]\n[limits]\ncommand-bytes = 65536\nresult-bytes = 1048576\ndeadline-ms = 500\n",
        );
        let main = format!("[channels.main]\nkind = \"sql\"\nurl = \"sqlite://{}\"\n\n", f.db_path().display());
        let host = host_on(&f, &format!("{main}{}", (kind.open)(&api.base)));
        let name = kind.name;
        let answer = told(&host, "probe", "fetch", &fetch_args("GET", "/granted/a", &[]));
        assert!(answer.contains("\"status\":200"), "{name}: {answer}");
        let reached = api.received().len();
        for (method, path) in
            [("HEAD", "/granted/a"), ("GET", "/granted"), ("GET", "/grantedx/a"), ("GET", "/other/granted/a")]
        {
            let answer = told(&host, "probe", "fetch", &fetch_args(method, path, &[]));
            assert!(answer.contains("\"denied\""), "{name}: {method} {path}: {answer}");
        }
        for path in [
            "/granted/../admin",
            "/granted/%2E%2E/admin",
            "/granted/a/..",
            "/granted\\..\\admin",
            "http://127.0.0.1:9/granted/a",
        ] {
            let answer = told(&host, "probe", "fetch", &fetch_args("GET", path, &[]));
            assert!(answer.contains("\"invalid\""), "{name}: {path}: {answer}");
        }
        let big = [("x-big", "h".repeat(100_000))];
        let answer = told(&host, "probe", "fetch", &fetch_args("GET", "/granted/a", &big));
        assert!(answer.contains("limits.command-bytes"), "{name}: a request over command-bytes: {answer}");
        assert_eq!(api.received().len(), reached, "{name}: a refused fetch reached the API");
        let started = Instant::now();
        let answer = told(&host, "probe", "fetch", &fetch_args("GET", "/granted/huge", &[]));
        assert!(answer.contains("result-bytes"), "{name}: an answer over result-bytes: {answer}");
        assert!(started.elapsed() < Duration::from_secs(2), "{name}: {:?}", started.elapsed());
        // An API that takes the connection and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let silent_base = format!("http://{}", silent.local_addr().expect("address"));
        let f = Fixture::new(&["probe"]);
        f.write_manifest("probe", "[channels.x]\nfetch = [\"GET /\"]\n[limits]\ndeadline-ms = 300\n");
        let main = format!("[channels.main]\nkind = \"sql\"\nurl = \"sqlite://{}\"\n\n", f.db_path().display());
        let host = host_on(&f, &format!("{main}{}", (kind.open)(&silent_base)));
        let started = Instant::now();
        let answer = told(&host, "probe", "fetch", &fetch_args("GET", "/a", &[]));
        assert!(answer.contains("deadline"), "{name}: a silent API: {answer}");
        assert!(
            started.elapsed() < Duration::from_millis(300) + Duration::from_secs(1),
            "{name}: {:?}",
            started.elapsed()
        );
        drop(silent);
        eprintln!("conformance: {name}: passed");
    }
}

/// A kind of the secrets family (values the operator gives the host,
/// which a service reads by name): its name, and the `sluice.toml` lines
/// of a channel `x` holding `jwt` (a short value) and `big` (one over the
/// test's `result-bytes`), from `env` (the variables the host is given).
struct SecretKind {
    name: &'static str,
    lines: &'static str,
    env: fn() -> Vec<(&'static str, String)>,
}

const SECRET_KINDS: &[SecretKind] = &[SecretKind {
    name: "secrets",
    lines: "[channels.x]\nkind = \"secrets\"\nvalues = { jwt = \"${env:CONFORMANCE_JWT}\", big = \"${env:CONFORMANCE_BIG}\", \
            jwtx = \"${env:CONFORMANCE_JWT}\" }\n",
    env: || vec![("CONFORMANCE_JWT", "s3cr3t-value-0f-the-test".into()), ("CONFORMANCE_BIG", "b".repeat(12_000))],
}];

/// Secret kinds: a name the grant does not list (a prefix of one, a longer
/// one) is refused, and the refusal holds no value; a value over
/// `result-bytes` is refused; no command, no listing; a recorded scope
/// keeps no read of it.
#[test]
fn every_secret_kind_holds_its_grant_and_keeps_its_values() {
    for kind in SECRET_KINDS {
        let f = Fixture::new(&["probe"]);
        f.write_manifest(
            "probe",
            "[channels.x]\nsecrets = [\"jwt\", \"big\"]\n[limits]\nresult-bytes = 4096\ncommand-bytes = 65536\n",
        );
        let env = (kind.env)();
        let value = env[0].1.clone();
        let config = f.dir.path().join("sluice.toml");
        let main = format!("[channels.main]\nkind = \"sql\"\nurl = \"sqlite://{}\"\n\n", f.db_path().display());
        std::fs::write(&config, format!("{main}{}", kind.lines)).expect("config");
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let config_path = config.to_string_lossy().into_owned();
        env.push(("SLUICE_CONFIG", &config_path));
        let name = kind.name;
        // What the call printed, its JSON made compact.
        let call = |args: &[&str]| {
            let out = f.sluice_env(&env, &[&["call", "--json"], args].concat());
            let printed = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .map_or_else(|_| text(&out.stdout), |json| json.to_string());
            format!("{printed}{}", text(&out.stderr))
        };
        let got = call(&["probe.kv-get", "x", "jwt"]);
        let bytes: Vec<String> = value.bytes().map(|b| b.to_string()).collect();
        assert!(got.contains(&bytes.join(",")), "{name}: the granted secret: {got}");
        for other in ["jw", "jwtx", "JWT"] {
            let refused = call(&["probe.kv-get", "x", other]);
            assert!(refused.contains("\"denied\""), "{name}: {other}: {refused}");
            assert!(!refused.contains(&value) && !refused.contains(&bytes.join(",")), "{name}: {refused}");
        }
        let big = call(&["probe.kv-get", "x", "big"]);
        assert!(big.contains("limits.result-bytes"), "{name}: a value over result-bytes: {big}");
        for args in [
            &["probe.kv-set", "x", "jwt", "[1]"][..],
            &["probe.kv-remove", "x", "jwt"],
            &["probe.kv-increment", "x", "jwt", "1"],
            &["probe.kv-list", "x", "j", "10"],
        ] {
            let refused = call(args);
            assert!(refused.contains("\"invalid\""), "{name}: {args:?}: {refused}");
            assert!(!refused.contains(&value), "{name}: {refused}");
        }
        let case = f.dir.path().join("case.json");
        let recorded = call(&["--record", &case.to_string_lossy(), "probe.kv-get", "x", "jwt"]);
        let kept = std::fs::read_to_string(&case).unwrap_or_else(|e| panic!("{name}: no case ({e}): {recorded}"));
        // The probe returns what it read, so the case's result holds it;
        // its reads do not.
        let case: serde_json::Value = serde_json::from_str(&kept).expect("a case");
        assert_eq!(case["reads"], serde_json::json!([]), "{name}: the case keeps the read: {kept}");
        eprintln!("conformance: {name}: passed");
    }
}
