//! The most memory a scope can make the host hold, per channel kind, with
//! eight scopes at once: each asks `sluice serve` to read far more than its
//! `result-bytes` (4 MiB, the default) lets it, from a value that exists
//! (or is computed) in the store. Every limit is enforced before the bytes
//! arrive, so the server's peak resident memory grows by at most
//! [`BOUND_KIB`], whatever was asked for. The figures print as `measured:`
//! (`cargo test --test e2e memory -- --nocapture`); docs/security.md keeps
//! them.

use serde_json::{Value as Json, json};

use crate::served::Served;
use crate::support::Fixture;

/// Scopes at once.
const SCOPES: usize = 8;

/// What eight such scopes may add to the server's peak resident memory:
/// each may hold what it may read (4 MiB) once as it arrives and once as
/// the guest's copy, plus its instance; 96 MiB in all.
const BOUND_KIB: u64 = 96 << 10;

/// Posts `body` to `path` from [`SCOPES`] clients at once, after one
/// small request `warm` to the same function (which loads the component
/// and opens the channel, reading nothing large), and returns how much the
/// server's peak resident memory grew, in KiB, with the answers.
fn eight_at_once(served: &Served, path: &str, warm: &Json, body: &Json) -> (u64, Vec<(u16, Json)>) {
    let (status, answer) = served.post(path, warm);
    assert_eq!(status, 200, "{answer}");
    let before = served.peak_rss_kib();
    let answers = std::thread::scope(|threads| {
        let handles: Vec<_> = (0..SCOPES).map(|_| threads.spawn(|| served.post(path, body))).collect();
        handles.into_iter().map(|h| h.join().expect("client")).collect::<Vec<_>>()
    });
    (served.peak_rss_kib().saturating_sub(before), answers)
}

/// Every answer is a refusal for `result-bytes` (its breach, or on SQLite
/// the service told that no value that long is made), and the growth is
/// within the bound; prints the figure for `kind`.
fn held_within_bound(kind: &str, asked: &str, grown: u64, answers: &[(u16, Json)]) {
    for (status, body) in answers {
        let breach = *status == 503 && body["limit"] == "result-bytes";
        let told = *status == 422 && body.to_string().contains("too big") && body.to_string().contains("result-bytes");
        assert!(breach || told, "{kind}: {status} {body}");
    }
    eprintln!(
        "measured: {kind}: {SCOPES} scopes at once, each reading {asked} against result-bytes 4 MiB: peak RSS grew by {grown} KiB (bound {BOUND_KIB} KiB)"
    );
    assert!(grown < BOUND_KIB, "{kind}: eight scopes made the server hold {grown} KiB more");
}

/// A fixture with `probe` and `hostile` (which may read `products` and
/// call `query` over HTTP), served with `config` as its sluice.toml (`DB`
/// in it is the fixture's SQLite file).
fn served_with(config: &str) -> (Fixture, Served) {
    let f = Fixture::new(&["probe", "hostile"]);
    f.write_manifest("hostile", "[channels.main]\nreads = [\"products\"]\n[http]\nexpose = [\"query\"]\n");
    let path = f.dir.path().join("sluice.toml");
    std::fs::write(&path, config.replace("DB", &f.db_path().display().to_string())).expect("config");
    let served = f.serve_env(&[("SLUICE_CONFIG", path.to_str().expect("path"))], &[]);
    (f, served)
}

/// SQLite: a computed value of 60 MB (under SQLite's own 64 MiB cap on any
/// value), which SQLite refuses to make past what the read may return.
#[test]
fn memory_held_by_eight_reads_on_sqlite() {
    let (_f, served) = served_with("[channels.main]\nkind = \"sql\"\nurl = \"sqlite://DB\"\n");
    let sql = json!({ "sql": "SELECT randomblob(60000000)" });
    let (grown, answers) = eight_at_once(&served, "/services/hostile/query", &json!({ "sql": "SELECT 1" }), &sql);
    held_within_bound("sqlite", "a 60 MB value", grown, &answers);
}

/// PostgreSQL: a computed value of 100 MB (PostgreSQL takes about 0.7 s to make one here), which the server measures and
/// refuses to send.
#[test]
fn memory_held_by_eight_reads_on_postgres() {
    let Some(db) = crate::postgres::Database::new() else { return };
    // The host user made the schema, as an operator's would.
    let mut owner = postgres::Client::connect(&db.url(), postgres::NoTls).expect("connect");
    owner.batch_execute("CREATE TABLE products (id BIGINT PRIMARY KEY, name TEXT)").expect("schema");
    let (_f, served) = served_with(&format!("[channels.main]\nkind = \"sql\"\nurl = \"{}\"\n", db.url()));
    let sql = json!({ "sql": "SELECT repeat('x', 100000000)" });
    let (grown, answers) = eight_at_once(&served, "/services/hostile/query", &json!({ "sql": "SELECT 1" }), &sql);
    held_within_bound("postgres", "a 100 MB value", grown, &answers);
}

/// kv on Redis: a listing over 16 values of 3 MiB that exist in the store
/// (48 MiB), refused from their lengths before any value is fetched; and
/// one value of 64 MiB, read no further than the limit.
#[test]
fn memory_held_by_eight_reads_on_redis() {
    use redis::Commands as _;
    let url = crate::kv::REDIS;
    let Some(mut redis) = crate::kv::redis_server() else { return };
    let ns = format!("sluice-test/{}/", uuid::Uuid::new_v4().simple());
    let three = vec![b'v'; 3 << 20];
    for i in 0..16 {
        let _: () = redis.set(format!("{ns}many/{i:02}"), &three).expect("set");
    }
    let _: () = redis.set(format!("{ns}one"), vec![b'w'; 64 << 20]).expect("set");
    let (_f, served) = served_with(&format!(
        "[channels.main]\nkind = \"sql\"\nurl = \"sqlite://DB\"\n\n[channels.cache]\nkind = \"kv\"\nurl = \"{url}\"\n"
    ));
    let list = json!({ "channel": "cache", "prefix": format!("{ns}many/"), "limit": 100 });
    let (grown, answers) = eight_at_once(
        &served,
        "/services/probe/kv-list",
        &json!({ "channel": "cache", "prefix": format!("{ns}none/"), "limit": 1 }),
        &list,
    );
    held_within_bound("kv on Redis (list)", "16 values of 3 MiB", grown, &answers);
    let get = json!({ "channel": "cache", "key": format!("{ns}one") });
    let (grown, answers) =
        eight_at_once(&served, "/services/probe/kv-get", &json!({ "channel": "cache", "key": "none" }), &get);
    held_within_bound("kv on Redis (get)", "a 64 MiB value", grown, &answers);
    let keys: Vec<String> = redis.keys(format!("{ns}*")).expect("keys");
    let _: () = redis.del(keys).expect("clean up");
}

/// files: one file of 256 MiB in the channel's directory, read no further
/// than the limit.
#[test]
fn memory_held_by_eight_reads_on_files() {
    let (f, served) = served_with(
        "[channels.main]\nkind = \"sql\"\nurl = \"sqlite://DB\"\n\n[channels.files]\nkind = \"files\"\npath = \"files\"\n",
    );
    let file = std::fs::File::create(f.dir.path().join("files/huge")).expect("create");
    file.set_len(256 << 20).expect("a sparse file of 256 MiB");
    let get = json!({ "channel": "files", "key": "huge" });
    let (grown, answers) =
        eight_at_once(&served, "/services/probe/kv-get", &json!({ "channel": "files", "key": "none" }), &get);
    held_within_bound("files", "a 256 MiB file", grown, &answers);
}
