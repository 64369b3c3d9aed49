//! How channel failures reach the caller: a later channel that fails to
//! commit after an earlier one committed (with a fake channel, the one mock
//! here), and a database that is busy answering 503 with `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice_host::ScopeError;
use sluice_host::bindings::Value;
use sluice_host::channels::{Caller, Channel, ChannelError, Reading, Transaction};
use sluice_host::command::{Operation, Outcome};
use wasmtime::component::Val;

use crate::support::Fixture;

/// A channel whose transactions apply anything and never commit.
struct NeverCommits;

struct NeverCommitsTx;

impl Channel for NeverCommits {
    fn query(&self, _: &str, _: &[Value], _: &Caller, _: usize) -> Result<Reading, ChannelError> {
        Err(ChannelError::Invalid("the fake channel has nothing to read".into()))
    }

    fn check(&self, _: &str, _: &Caller) -> Result<(), ChannelError> {
        Ok(())
    }

    fn begin(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        Ok(Box::new(NeverCommitsTx))
    }

    fn migrate(&self, _: &[(String, String)]) -> Result<Vec<(String, bool)>, ChannelError> {
        Ok(Vec::new())
    }
}

impl Transaction for NeverCommitsTx {
    fn apply(&mut self, _: &Operation, _: &Caller) -> Result<Outcome, ChannelError> {
        Ok(Outcome::Inserted(1))
    }

    fn digest(&mut self, _: &str, _: &[Value], _: &Caller, _: usize) -> Result<u64, ChannelError> {
        Ok(0)
    }

    fn commit(self: Box<Self>) -> Result<(), ChannelError> {
        Err(ChannelError::Unavailable("the fake channel refuses to commit".into()))
    }
}

fn s(v: &str) -> Val {
    Val::String(v.to_string())
}

/// `probe.insert(channel, "products", …)` of a product `name`.
fn product(channel: &str, name: &str) -> Vec<Val> {
    let text = Val::Variant("text".into(), Some(Box::new(s(name))));
    let price = Val::Variant("integer".into(), Some(Box::new(Val::S64(1))));
    vec![s(channel), s("products"), Val::List(vec![s("name"), s("price_cents")]), Val::List(vec![text, price])]
}

/// Channels commit one after another, in name order, without two-phase
/// commit: when a later one fails, the error says which had committed, and
/// their data stays.
#[test]
fn a_later_channel_that_fails_to_commit_is_named_with_what_committed() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let manifest = std::fs::read_to_string(f.manifest("probe")).expect("manifest");
    f.write_manifest("probe", &format!("{manifest}\n[channels.zz]\ninserts = \"*\"\n"));
    let mut host = f.host();
    let mut channels = (*host.channels).clone();
    channels.insert("zz", Arc::new(NeverCommits));
    host.channels = Arc::new(channels);

    let mut scope = host.scope();
    scope.call("probe", "insert", &product("main", "kept")).expect("insert on main");
    scope.call("probe", "insert", &product("zz", "lost")).expect("insert on zz");
    match scope.save() {
        Err(ScopeError::Channel { channel, reason, applied }) => {
            assert_eq!(channel, "zz");
            assert_eq!(reason, "the fake channel refuses to commit");
            assert_eq!(applied, "channels main had already committed");
        }
        other => panic!("expected a commit failure, got {other:?}"),
    }
    assert_eq!(f.count("products"), 1, "main committed before zz failed");
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
    assert_eq!(body["error"]["kind"], "unavailable", "{body}");
    assert_eq!(body["error"]["channel"], "main", "{body}");
    holder.execute_batch("ROLLBACK").expect("release");
    let (status, body) = served.post("/services/products/add", &json!({ "name": "widget", "price-cents": 250 }));
    assert_eq!(status, 200, "{body}");
}
