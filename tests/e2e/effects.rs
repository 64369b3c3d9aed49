//! Effects after commit, end to end: the example `orders` publishes
//! `orders.placed` on a `bus` channel (real NATS JetStream at
//! 127.0.0.1:4222; skipped without one, except in CI), the `notifications`
//! service is run by that message and queues a webhook (`http-out`, to a
//! real receiver on 127.0.0.1) and a receipt file (`files`). Each test has
//! a stream and subject prefix of its own.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_host::Host;
use sluice_host::call::{self, Mode};
use wasmtime::component::Val;

use crate::receiver::Receiver;
use crate::support::{Fixture, skip_without};

/// A connection to the test NATS server, for reading and writing streams.
pub struct Nats {
    runtime: tokio::runtime::Runtime,
    jetstream: async_nats::jetstream::Context,
}

/// One message of a stream.
#[derive(Debug, Clone)]
pub struct Stored {
    pub subject: String,
    pub id: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Stored {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub const NATS: &str = "nats://127.0.0.1:4222";

impl Nats {
    /// Connects, or skips the test (fails it in CI) without a server.
    pub fn connect() -> Option<Nats> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let connected = runtime.block_on(async {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(2))
                .connect("127.0.0.1:4222")
                .await?;
            Ok::<_, async_nats::ConnectError>(async_nats::jetstream::new(client))
        });
        match connected {
            Ok(jetstream) => Some(Nats { runtime, jetstream }),
            Err(e) => {
                skip_without(&format!("skipping: no NATS server at {NATS} ({e})"));
                None
            }
        }
    }

    /// Every message of `stream` now, in order (none when it does not exist).
    pub fn messages(&self, stream: &str) -> Vec<Stored> {
        self.runtime.block_on(async {
            let Ok(mut handle) = self.jetstream.get_stream(stream).await else { return Vec::new() };
            let state = handle.info().await.expect("stream info").state.clone();
            let mut out = Vec::new();
            for sequence in state.first_sequence..=state.last_sequence {
                let Ok(m) = handle.get_raw_message(sequence).await else { continue };
                let mut headers = Vec::new();
                let mut id = String::new();
                for (name, values) in m.headers.iter() {
                    for value in values {
                        if name.to_string().eq_ignore_ascii_case("Nats-Msg-Id") {
                            id = value.to_string();
                        }
                        headers.push((name.to_string(), value.to_string()));
                    }
                }
                out.push(Stored { subject: m.subject.to_string(), id, headers, payload: m.payload.to_vec() });
            }
            out
        })
    }

    /// Whether `stream` exists.
    pub fn exists(&self, stream: &str) -> bool {
        self.runtime.block_on(self.jetstream.get_stream(stream)).is_ok()
    }

    /// Publishes one message on `subject` and waits for the stream's ack.
    pub fn publish(&self, subject: &str, headers: &[(&str, &str)], payload: &[u8]) {
        self.runtime.block_on(async {
            let mut map = async_nats::HeaderMap::new();
            for (n, v) in headers {
                map.insert(*n, *v);
            }
            let publish =
                async_nats::jetstream::message::PublishMessage::build().payload(payload.to_vec().into()).headers(map);
            let ack = self.jetstream.send_publish(subject.to_string(), publish).await.expect("publish");
            ack.await.expect("ack");
        });
    }

    /// Deletes `stream` (a test's own), if it exists.
    pub fn delete(&self, stream: &str) {
        let _ = self.runtime.block_on(self.jetstream.delete_stream(stream));
    }
}

/// A test's own bus: stream `SLUICE_T<id>`, subjects `t<id>.…`.
pub struct TestBus {
    pub stream: String,
    pub prefix: String,
}

impl TestBus {
    pub fn new() -> TestBus {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        TestBus { stream: format!("SLUICE_T{id}"), prefix: format!("t{id}") }
    }
}

/// Writes a config with `main` (the fixture's SQLite file), `kv`, the bus
/// `events`, `webhooks` to `receiver` (at most `tries` tries) and the files
/// channel `receipts`; returns its path.
pub fn effects_config(f: &Fixture, bus: &TestBus, receiver: &str, tries: u32) -> PathBuf {
    effects_config_on(f, &format!("sqlite://{}", f.db_path().display()), bus, receiver, tries)
}

/// [`effects_config`] with `main` at `url`.
pub fn effects_config_on(f: &Fixture, url: &str, bus: &TestBus, receiver: &str, tries: u32) -> PathBuf {
    let config = f.dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[channels.main]\nkind = \"sql\"\nurl = \"{url}\"\n\n\
             [channels.kv]\nkind = \"kv\"\nurl = \"sql:main\"\n\n\
             [channels.events]\nkind = \"bus\"\nurl = \"{NATS}\"\noutbox = \"main\"\nstream = \"{stream}\"\nprefix = \"{prefix}\"\n\n\
             [channels.webhooks]\nkind = \"http-out\"\noutbox = \"main\"\nbase = \"{receiver}\"\ntries = {tries}\ntimeout-ms = 2000\n\n\
             [channels.receipts]\nkind = \"files\"\npath = \"receipts\"\noutbox = \"main\"\n",
            stream = bus.stream,
            prefix = bus.prefix,
        ),
    )
    .expect("config");
    config
}

/// The example services, migrated, with widgets in stock, under `config`.
pub fn shop(f: &Fixture, config: &PathBuf, stock: u32) {
    let schema = crate::support::repo().join("examples/schema");
    let out = f.command().arg("--config").arg(config).arg("migrate").arg(&schema).output().expect("migrate");
    assert!(out.status.success(), "migrate: {}", crate::support::text(&out.stderr));
    let mut options = f.options();
    options.config = Some(config.clone());
    let host = Host::open(&options).expect("host");
    let s = |v: &str| Val::String(v.to_string());
    call::run(&host, "products", "add", &[s("widget"), Val::S64(250)], Mode::Save).expect("add");
    call::run(&host, "inventory", "restock", &[Val::S64(1), Val::U32(stock)], Mode::Save).expect("restock");
}

/// Waits up to 30 s for `check`.
fn wait(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const SERVICES: &[&str] = &["orders", "inventory", "products", "notifications"];

/// The README's chain: an order placed over HTTP is one message on the
/// bus (its id the outbox row's), which runs `notifications` once: one
/// webhook with that row's idempotency key, one receipt file. An order the
/// save refuses publishes nothing.
#[test]
fn a_placed_order_reaches_the_bus_a_webhook_and_a_file() {
    let Some(nats) = Nats::connect() else { return };
    let f = Fixture::new(SERVICES);
    let bus = TestBus::new();
    let receiver = Receiver::start();
    let config = effects_config(&f, &bus, &receiver.base, 5);
    shop(&f, &config, 5);
    let served = f.serve(&["--config", &config.to_string_lossy()]);
    let (status, body) =
        served.post("/services/orders/place", &json!({"customer": "ann", "product-id": 1, "quantity": 3}));
    assert_eq!(status, 200, "{body}");
    // Out of stock: the scope is discarded, so nothing is published.
    let (status, body) =
        served.post("/services/orders/place", &json!({"customer": "bob", "product-id": 1, "quantity": 30}));
    assert_eq!(status, 422, "{body}");

    served.wait_for("the webhook", |_| !receiver.received().is_empty());
    served.wait_for("the receipt", |_| f.dir.path().join("receipts/order-1.json").exists());
    let messages = nats.messages(&bus.stream);
    let placed: Vec<_> = messages.iter().filter(|m| m.subject == format!("{}.orders.placed", bus.prefix)).collect();
    assert_eq!(placed.len(), 1, "{messages:?}");
    let message = placed[0];
    assert_eq!(message.header("order-id"), Some("1"));
    let payload: serde_json::Value = serde_json::from_slice(&message.payload).expect("JSON payload");
    assert_eq!(payload, json!({"order_id": 1, "customer": "ann", "product_id": 1, "quantity": 3, "total_cents": 750}));
    // The message id is the outbox row's, and that row is delivered.
    let outbox: Vec<(String, String, String)> = f
        .db()
        .prepare("SELECT id, channel, state FROM sluice_outbox ORDER BY created_ms")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
        .expect("outbox");
    assert_eq!(outbox[0], (message.id.clone(), "events".to_string(), "delivered".to_string()));

    // The webhook: once, POST to the base's path, the message as its body,
    // the webhook row's id as its idempotency key.
    served.wait_for("the webhook row delivered", |_| {
        f.db()
            .query_row(
                "SELECT count(*) FROM sluice_outbox WHERE channel = 'webhooks' AND state = 'delivered'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0)
            == 1
    });
    let hooks = receiver.received();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!((hooks[0].method.as_str(), hooks[0].path.as_str()), ("POST", "/hooks/orders"));
    assert_eq!(hooks[0].body, message.payload);
    assert_eq!(hooks[0].header("sluice-message-id"), Some(message.id.as_str()));
    let key: String = f
        .db()
        .query_row("SELECT id FROM sluice_outbox WHERE channel = 'webhooks'", [], |r| r.get(0))
        .expect("webhook row");
    assert_eq!(hooks[0].header("idempotency-key"), Some(key.as_str()));
    assert_eq!(std::fs::read(f.dir.path().join("receipts/order-1.json")).expect("receipt"), message.payload);
    // The message was handled once: one receipt in the inbox.
    assert_eq!(f.count("sluice_inbox"), 1);

    // `sluice outbox` shows the rows.
    let out = f.sluice(&["--config", &config.to_string_lossy(), "outbox", "webhooks", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("outbox JSON");
    assert_eq!(rows[0]["state"], "delivered", "{rows}");
    assert_eq!(rows[0]["target"], format!("POST {}/hooks/orders", receiver.base));
    drop(served);
    nats.delete(&bus.stream);
}

/// A message delivered again after its scope saved (as after a lost ack)
/// is not handled twice; one the handler refuses goes, after the
/// subscription's tries, to the dead-letter subject with the reason; a
/// webhook the receiver keeps failing is dead after the channel's tries,
/// and one it refuses with a 4xx at once.
#[test]
fn failures_are_retried_then_dead() {
    let Some(nats) = Nats::connect() else { return };
    let f = Fixture::new(SERVICES);
    let manifest = std::fs::read_to_string(f.manifest("notifications")).expect("manifest");
    f.write_manifest("notifications", &manifest.replace("tries = 5", "tries = 2"));
    let bus = TestBus::new();
    let receiver = Receiver::start();
    let config = effects_config(&f, &bus, &receiver.base, 2);
    shop(&f, &config, 5);
    let served = f.serve(&["--config", &config.to_string_lossy()]);
    let placed = format!("{}.orders.placed", bus.prefix);
    served.wait_for("the stream", |_| nats.exists(&bus.stream));

    // A message whose receipt exists (as when a run saved and its ack was
    // lost) is acknowledged without running: the next one is handled and
    // the first leaves no file.
    f.db()
        .execute(
            "INSERT INTO sluice_inbox (consumer, id, done_ms) VALUES ('notifications/orders.placed', 'm-0', 0)",
            [],
        )
        .expect("receipt");
    nats.publish(&placed, &[("Nats-Msg-Id", "m-0"), ("order-id", "6")], b"{}");
    nats.publish(&placed, &[("Nats-Msg-Id", "m-1"), ("order-id", "7")], b"{}");
    served.wait_for("the receipt", |_| f.dir.path().join("receipts/order-7.json").exists());
    assert!(!f.dir.path().join("receipts/order-6.json").exists(), "a message with a receipt ran again");
    assert_eq!(f.count("sluice_inbox"), 2);

    // No order-id: the handler refuses every run; after 2 it is a dead letter.
    nats.publish(&placed, &[("Nats-Msg-Id", "m-2")], b"{}");
    let dead_subject = format!("{}.dead.notifications.orders.placed", bus.prefix);
    served.wait_for("the dead letter", |_| nats.messages(&bus.stream).iter().any(|m| m.subject == dead_subject));
    let dead = nats.messages(&bus.stream).into_iter().find(|m| m.subject == dead_subject).expect("dead letter");
    assert_eq!(dead.header("Sluice-Message-Id"), Some("m-2"));
    assert!(dead.header("Sluice-Error").is_some_and(|e| e.contains("no-order-id")), "{dead:?}");
    assert_eq!(f.count("sluice_inbox"), 2, "a refused message saves nothing");

    // 503 twice: dead after the channel's 2 tries.
    receiver.always(Some(503));
    nats.publish(&placed, &[("Nats-Msg-Id", "m-3"), ("order-id", "8")], b"{}");
    let state_of = |order: &str| {
        f.db()
            .query_row(
                "SELECT state, tries, last_error FROM sluice_outbox WHERE channel = 'webhooks' AND \
                 CAST(body AS TEXT) = '{}' ORDER BY created_ms DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<String>>(2)?)),
            )
            .ok()
            .filter(|_| f.dir.path().join(format!("receipts/order-{order}.json")).exists())
    };
    wait("the failing webhook to be dead", || state_of("8").is_some_and(|(s, _, _)| s == "dead"));
    let (_, tries, error) = state_of("8").expect("row");
    assert_eq!(tries, 2);
    assert!(error.is_some_and(|e| e.contains("503")));
    // A 4xx is dead at once, after one try.
    receiver.always(Some(400));
    nats.publish(&placed, &[("Nats-Msg-Id", "m-4"), ("order-id", "9")], b"{}");
    wait("the refused webhook to be dead", || {
        state_of("9").is_some_and(|(s, _, _)| s == "dead")
            && f.db()
                .query_row("SELECT count(*) FROM sluice_outbox WHERE state = 'dead'", [], |r| r.get::<_, i64>(0))
                .unwrap_or(0)
                == 2
    });
    let dead_tries: Vec<i64> = f
        .db()
        .prepare("SELECT tries FROM sluice_outbox WHERE state = 'dead' ORDER BY created_ms")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("tries");
    assert_eq!(dead_tries, vec![2, 1]);
    drop(served);
    nats.delete(&bus.stream);
}

/// Grants are enforced where the data is: a subject outside the
/// `subjects` prefixes and a destination outside `destinations` are
/// refused as they are queued, naming the manifest line; the outbox and
/// inbox tables are out of reach of SQL even under `"*"` grants; and
/// publishing needs no server until `serve` delivers (a `sluice call`
/// only writes the outbox).
#[test]
fn grants_bound_subjects_destinations_and_the_host_tables() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let bus = TestBus::new();
    // No receiver and no NATS needed: nothing is delivered here.
    let config = effects_config(&f, &bus, "http://127.0.0.1:9", 2);
    let mut options = f.options();
    options.config = Some(config);
    let host = Host::open(&options).expect("host");
    let s = |v: &str| Val::String(v.to_string());
    let bytes = |b: &[u8]| Val::List(b.iter().map(|x| Val::U8(*x)).collect());
    let told = |function: &str, args: &[Val]| -> String {
        let report = call::run(&host, "probe", function, args, Mode::Save).expect("call");
        sluice_host::values::to_json(&report.results[0]).to_string()
    };
    assert_eq!(told("publish", &[s("events"), s("probe.hello"), bytes(b"hi")]), r#"{"ok":1}"#);
    let denied = told("publish", &[s("events"), s("orders.placed"), bytes(b"x")]);
    assert!(denied.contains("denied") && denied.contains("subjects = [\\\"orders.placed\\\"]"), "{denied}");
    let wildcard = told("publish", &[s("events"), s("probe.>"), bytes(b"x")]);
    assert!(wildcard.contains("invalid") && wildcard.contains("wildcard"), "{wildcard}");
    assert_eq!(told("send", &[s("webhooks"), s("POST"), s("/x"), bytes(b"")]), r#"{"ok":1}"#);
    for (method, url) in [("GET", "/x"), ("POST", "http://example.com/x")] {
        let refused = told("send", &[s("webhooks"), s(method), s(url), bytes(b"")]);
        assert!(refused.contains("denied") && refused.contains("destinations = ["), "{refused}");
    }
    let scheme = told("send", &[s("webhooks"), s("POST"), s("file:///etc/passwd"), bytes(b"")]);
    assert!(scheme.contains("invalid") && scheme.contains("http and https"), "{scheme}");
    // `sluice call` wrote two rows and delivered none.
    assert_eq!(f.count("sluice_outbox"), 2);
    // Under reads = "*", the host's tables stay out of reach.
    for sql in ["SELECT * FROM sluice_outbox", "SELECT count(*) FROM sluice_inbox", "SELECT * FROM sluice_kv"] {
        let read = told("query", &[s("main"), s(sql), Val::List(Vec::new())]);
        assert!(read.contains("denied"), "{sql}: {read}");
    }
    let forged = Val::Variant("text".into(), Some(Box::new(s("forged"))));
    let insert = [s("main"), s("sluice_outbox"), Val::List(vec![s("id")]), Val::List(vec![forged])];
    let refused = told("insert", &insert);
    assert!(refused.contains("denied") && refused.contains("sluice_outbox"), "{refused}");
    assert_eq!(f.count("sluice_outbox"), 2);
}

/// Two hosts on one PostgreSQL database and one stream, under a load of
/// orders sent to both: their relays claim rows with `FOR UPDATE SKIP
/// LOCKED` and a lease, so every webhook row is sent once and every message
/// stored once, and each message runs `notifications` once.
#[test]
fn two_hosts_on_postgres_deliver_each_row_once() {
    let Some(nats) = Nats::connect() else { return };
    let Some(db) = crate::postgres::Database::new() else { return };
    let f = Fixture::new(SERVICES);
    let bus = TestBus::new();
    let receiver = Receiver::start();
    let config = effects_config_on(&f, &db.url(), &bus, &receiver.base, 5);
    shop(&f, &config, 100_000);
    let config_arg = config.to_string_lossy().to_string();
    let hosts = [
        f.serve_env(&[("SLUICE_HOST_ID", "host-a")], &["--config", &config_arg]),
        f.serve_env(&[("SLUICE_HOST_ID", "host-b")], &["--config", &config_arg]),
    ];
    let urls: Vec<String> = hosts.iter().map(|h| h.url("/services/orders/place")).collect();
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let url = urls[client % 2].clone();
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                let mut placed = 0;
                for n in 0..50 {
                    let body = json!({"customer": format!("c{client}-{n}"), "product-id": 1, "quantity": 1});
                    // Two hosts saving on one stock row conflict; a client
                    // tries a 409 again, as it should.
                    for _ in 0..20 {
                        let answer = http.post(&url).json(&body).send().expect("place");
                        match answer.status().as_u16() {
                            200 => placed += 1,
                            409 => continue,
                            other => panic!("{other}: {}", answer.text().unwrap_or_default()),
                        }
                        break;
                    }
                }
                placed
            })
        })
        .collect();
    let placed: usize = clients.into_iter().map(|c| c.join().expect("client")).sum();
    assert!(placed >= 190, "only {placed} of 200 orders placed");
    let mut client = postgres::Client::connect(&db.url(), postgres::NoTls).expect("connect");
    let mut one = |sql: &str| client.query_one(sql, &[]).map(|r| r.get::<_, i64>(0)).unwrap_or(-1);
    let start = Instant::now();
    // Both counts from one snapshot: a handler's webhook row may commit
    // between two statements (a row counted, but not yet seen pending).
    let settled = "SELECT count(*) FILTER (WHERE channel = 'webhooks') \
                   - 1000000 * count(*) FILTER (WHERE state <> 'delivered') FROM sluice_outbox";
    while one(settled) != placed as i64 {
        if start.elapsed() > Duration::from_secs(30) {
            let counts = (
                one("SELECT count(*) FROM sluice_outbox WHERE state <> 'delivered'"),
                one("SELECT count(*) FROM sluice_outbox WHERE channel = 'webhooks'"),
                one("SELECT count(*) FROM sluice_inbox"),
            );
            panic!(
                "not delivered after 30 s (pending, webhook rows, receipts): {counts:?}\n{}\n{}",
                hosts[0].log(),
                hosts[1].log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(one("SELECT count(*) FROM orders"), placed as i64);
    assert_eq!(one("SELECT count(*) FROM sluice_inbox"), placed as i64);
    let received = receiver.received();
    let keys: std::collections::BTreeSet<_> = received.iter().filter_map(|r| r.header("idempotency-key")).collect();
    if keys.len() != placed {
        let rows = client
            .query(
                "SELECT id, state, tries, last_error, lease_owner FROM sluice_outbox WHERE channel = 'webhooks'",
                &[],
            )
            .expect("rows");
        let missing: Vec<String> = rows
            .iter()
            .filter(|r| !keys.contains(r.get::<_, String>(0).as_str()))
            .map(|r| {
                format!(
                    "{} {} {} {:?} {:?}",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, i64>(2),
                    r.get::<_, Option<String>>(3),
                    r.get::<_, Option<String>>(4)
                )
            })
            .collect();
        panic!("{} keys of {placed}; not received: {missing:?}\n{}\n{}", keys.len(), hosts[0].log(), hosts[1].log());
    }
    assert_eq!(received.len(), placed, "a webhook row was sent more than once");
    let messages = nats.messages(&bus.stream);
    let ids: std::collections::BTreeSet<_> = messages.iter().map(|m| m.id.as_str()).collect();
    assert_eq!((messages.len(), ids.len()), (placed, placed));
    drop(hosts);
    nats.delete(&bus.stream);
}
