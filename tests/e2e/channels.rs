//! How channel failures reach the caller: a later channel that fails to
//! commit after an earlier one committed (with a fake channel, the one mock
//! here), and a database that is busy answering 503 with `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice_host::ScopeError;
use sluice_host::bindings::Value;
use sluice_host::channels::{Caller, Channel, ChannelError, CommitStage, Transaction};
use sluice_host::command::{Kind, Operation, Outcome};
use wasmtime::component::Val;

use crate::support::Fixture;
use crate::support::s;

/// What a [`Fake`] channel's transaction does when it is prepared and
/// committed.
type Step = Arc<dyn Fn() -> Result<(), ChannelError> + Send + Sync>;

/// A channel whose transactions apply anything, with a chosen prepare,
/// commit and commit stage.
#[derive(Clone)]
struct Fake {
    prepare: Step,
    commit: Step,
    stage: CommitStage,
}

impl Fake {
    fn new() -> Fake {
        Fake { prepare: Arc::new(|| Ok(())), commit: Arc::new(|| Ok(())), stage: CommitStage::Data }
    }
}

impl Channel for Fake {
    fn kind(&self) -> Kind {
        sluice_host::channels::sql::KIND
    }

    /// The gate of a `sql` channel's built commands: the table grant.
    fn check_command(&self, op: &Operation, caller: &Caller) -> Result<(), ChannelError> {
        let Operation::Sql(op) = op else { panic!("a fake sql channel took {}", op.describe()) };
        sluice_host::channels::sql::check_table_grant(op, caller).map_err(ChannelError::Denied)
    }

    fn begin(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        Ok(Box::new(self.clone()))
    }

    fn commit_stage(&self) -> CommitStage {
        self.stage
    }
}

impl Transaction for Fake {
    fn apply(&mut self, _: &Operation, _: &Caller) -> Result<Outcome, ChannelError> {
        Ok(Outcome::Inserted(1))
    }

    fn digest(&mut self, _: &str, _: &[Value], _: &Caller, _: usize) -> Result<u64, ChannelError> {
        Ok(0)
    }

    fn prepare(&mut self) -> Result<(), ChannelError> {
        (self.prepare)()
    }

    fn commit(self: Box<Self>) -> Result<(), ChannelError> {
        (self.commit)()
    }
}

/// A fixture with the probe granted inserts on `main` and on the fake
/// channel `name`, a host with that fake, and a scope that queued an insert
/// on each: `kept` on main, one on the fake.
fn with_fake(
    name: &str,
    fake: impl FnOnce(&Fixture) -> Fake,
    run: impl FnOnce(&Fixture, Result<sluice_host::scope::SaveReport, ScopeError>),
) {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let manifest = std::fs::read_to_string(f.manifest("probe")).expect("manifest");
    f.write_manifest("probe", &format!("{manifest}\n[channels.{name}]\ninserts = \"*\"\n"));
    let mut host = f.host();
    let mut channels = (*host.channels).clone();
    channels.insert(name, Arc::new(fake(&f)));
    host.channels = Arc::new(channels);
    let mut scope = host.scope();
    scope.call("probe", "insert", &product("main", "kept")).expect("insert on main");
    scope.call("probe", "insert", &product(name, "elsewhere")).expect("insert on the fake");
    run(&f, scope.save());
}

/// `probe.insert(channel, "products", …)` of a product `name`.
fn product(channel: &str, name: &str) -> Vec<Val> {
    let text = Val::Variant("text".into(), Some(Box::new(s(name))));
    let price = Val::Variant("integer".into(), Some(Box::new(Val::S64(1))));
    vec![s(channel), s("products"), Val::List(vec![s("name"), s("price_cents")]), Val::List(vec![text, price])]
}

/// Asserts the save failed on channel `zz` for `reason`, after `committed`
/// had committed, and that its message says what stays applied.
fn zz_failed(saved: Result<sluice_host::scope::SaveReport, ScopeError>, reason: &str, committed: &[&str]) {
    match saved {
        Err(ScopeError::Channel { channel, reason: why, committed: said }) => {
            assert_eq!((channel.as_str(), why.as_str()), ("zz", reason));
            assert_eq!(said.iter().map(String::as_str).collect::<Vec<_>>(), committed);
            let e = ScopeError::Channel { channel, reason: why, committed: said };
            let message = e.to_string();
            assert_eq!(e.partially_applied(), !committed.is_empty());
            if committed.is_empty() {
                assert!(message.ends_with("nothing was applied"), "{message}");
            } else {
                let kept = format!(
                    "channel(s) {} had already committed and keep what this save applied there; the scope is not run again",
                    committed.join(", ")
                );
                assert!(message.contains(&kept), "{message}");
            }
        }
        other => panic!("expected channel zz to fail, got {other:?}"),
    }
}

/// Channels commit one after another, in name order, without two-phase
/// commit: when a later one fails, the error says which had committed, and
/// their data stays.
#[test]
fn a_later_channel_that_fails_to_commit_is_named_with_what_committed() {
    let fake = Fake {
        commit: Arc::new(|| Err(ChannelError::Unavailable("the fake refuses to commit".into()))),
        ..Fake::new()
    };
    with_fake(
        "zz",
        |_| fake,
        |f, saved| {
            zz_failed(saved, "the fake refuses to commit", &["main"]);
            assert_eq!(f.count("products"), 1, "main committed before zz failed");
        },
    );
}

/// Every channel prepares before any commits: one that cannot commit says
/// so then, and nothing is applied anywhere.
#[test]
fn a_channel_that_fails_to_prepare_applies_nothing() {
    let fake =
        Fake { prepare: Arc::new(|| Err(ChannelError::Unavailable("a watched key changed".into()))), ..Fake::new() };
    with_fake(
        "zz",
        |_| fake,
        |f, saved| {
            zz_failed(saved, "a watched key changed", &[]);
            assert_eq!(f.count("products"), 0, "main must not commit when another channel cannot");
        },
    );
}

/// An effect channel commits after every data channel, whatever its name:
/// when it commits, the data is already durable.
#[test]
fn effect_channels_commit_after_data_channels() {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let seen_in = Arc::clone(&seen);
    let fake = move |f: &Fixture| {
        let path = f.db_path();
        let commit: Step = Arc::new(move || {
            let conn = rusqlite::Connection::open(&path).expect("open");
            let rows: i64 = conn.query_row("SELECT count(*) FROM products", [], |r| r.get(0)).expect("count");
            *seen_in.lock().expect("lock") = Some(rows);
            Ok(())
        });
        Fake { commit, stage: CommitStage::Effects, ..Fake::new() }
    };
    // Named to sort before `main`: the stage, not the name, puts it last.
    with_fake("aa", fake, |_, saved| {
        saved.expect("saved");
    });
    assert_eq!(*seen.lock().expect("lock"), Some(1), "the effect channel committed before main's data was durable");
}

/// A database another process holds past the busy timeout: the save cannot
/// begin, and the answer is 503 with `Retry-After`, not a conflict.
#[test]
fn a_busy_database_answers_503_with_retry_after() {
    let f = Fixture::new(&["products"]);
    f.migrate();
    let served = f.serve(&[]);
    let holder = f.db();
    holder.execute_batch("BEGIN IMMEDIATE").expect("hold the write lock");
    let response = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
        .post(served.url("/services/products/add"))
        .json(&json!({ "name": "widget", "price-cents": 250 }))
        .send()
        .expect("POST add");
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let body: serde_json::Value = response.json().expect("json");
    assert_eq!(body["kind"], "unavailable", "{body}");
    assert_eq!(body["channel"], "main", "{body}");
    holder.execute_batch("ROLLBACK").expect("release");
    let (status, body) = served.post("/services/products/add", &json!({ "name": "widget", "price-cents": 250 }));
    assert_eq!(status, 200, "{body}");
}
