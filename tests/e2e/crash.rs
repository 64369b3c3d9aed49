//! The outbox under SIGKILL: a load of orders through `sluice serve`
//! (orders → `orders.placed` on JetStream → notifications → a webhook to a
//! receiver on 127.0.0.1 and a receipt file), the host killed at a random
//! moment and started again on the same database and stream, again and
//! again. After every restart, once the backlog is delivered:
//!
//! - every committed message is in the stream exactly once (by id), and
//!   every message is a committed one (its outbox row exists);
//! - every committed order has exactly its one message;
//! - every webhook row reached the receiver at least once, every try with
//!   the row's idempotency key, and a message never made two webhooks;
//! - every committed order has its receipt file, whole (the message's
//!   payload), and no staged file is left.
//!
//! `SLUICE_CRASH_KILLS` kills (3 in `just test`; `just crash` runs 50);
//! the figures go to stderr and to `target/crash-report.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::effects::{Nats, TestBus, effects_config, shop};
use crate::receiver::Receiver;
use crate::support::{Fixture, components};

/// What the runs saw, for the report.
#[derive(Default, Debug)]
struct Figures {
    kills: u32,
    requests: u64,
    committed_orders: usize,
    messages: usize,
    lost: usize,
    duplicate_messages: usize,
    webhooks: usize,
    webhook_repeats: usize,
    receipts_missing: usize,
    max_delay_after_restart: Duration,
}

fn random_ms(low: u64, high: u64) -> u64 {
    let bytes = uuid::Uuid::new_v4();
    let n = u64::from_le_bytes(bytes.as_bytes()[..8].try_into().unwrap_or_default());
    low + n % (high - low)
}

#[test]
fn effects_are_never_lost_or_doubled_when_the_host_is_killed() {
    let Some(nats) = Nats::connect() else { return };
    let kills: u32 = std::env::var("SLUICE_CRASH_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(3);
    let f = Fixture::new(&["orders", "inventory", "products", "notifications"]);
    let bus = TestBus::new();
    let receiver = Receiver::start();
    let config = effects_config(&f, &bus, &receiver.base, 100);
    shop(&f, &config, 1_000_000);
    let config = config.to_string_lossy().to_string();
    let mut figures = Figures { kills, ..Figures::default() };

    for round in 0..=kills {
        let restarted = Instant::now();
        let served = f.serve(&["--config", &config]);
        // The backlog of the host that was killed is delivered.
        let start = Instant::now();
        while !settled(&f, &receiver) {
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "not settled 90 s after restart {round}\n{}",
                served.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        figures.max_delay_after_restart = figures.max_delay_after_restart.max(restarted.elapsed());
        check(&f, &nats, &bus, &receiver, &mut figures);
        if round == kills {
            break;
        }
        // A load of orders, killed at a random moment.
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let clients: Vec<_> = (0..4)
            .map(|client| {
                let (stop, sent, url) = (Arc::clone(&stop), Arc::clone(&sent), served.url("/services/orders/place"));
                std::thread::spawn(move || {
                    let http =
                        reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let body =
                            json!({"customer": format!("c{round}-{client}-{n}"), "product-id": 1, "quantity": 1});
                        if http.post(&url).json(&body).send().is_err() {
                            break;
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(random_ms(50, 1500)));
        // SIGKILL: no drain, no shutdown.
        drop(served);
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            let _ = c.join();
        }
        figures.requests += sent.load(Ordering::Relaxed);
    }
    eprintln!("crash test: {figures:#?}");
    let report = json!({
        "kills": figures.kills,
        "requests": figures.requests,
        "committed_orders": figures.committed_orders,
        "messages": figures.messages,
        "messages_lost": figures.lost,
        "duplicate_messages": figures.duplicate_messages,
        "webhooks": figures.webhooks,
        "webhook_repeats": figures.webhook_repeats,
        "receipts_missing": figures.receipts_missing,
        "max_delay_after_restart_ms": figures.max_delay_after_restart.as_millis() as u64,
    });
    let _ = std::fs::write(components().join("../crash-report.json"), report.to_string());
    nats.delete(&bus.stream);
}

/// Whether every committed effect is delivered: no outbox row pending,
/// every message handled (a receipt each), every webhook row received.
fn settled(f: &Fixture, receiver: &Receiver) -> bool {
    let db = f.db();
    let one = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap_or(-1);
    if one("SELECT count(*) FROM sluice_outbox WHERE state <> 'delivered'") != 0 {
        return false;
    }
    if one("SELECT count(*) FROM sluice_outbox WHERE channel = 'events'") != one("SELECT count(*) FROM sluice_inbox") {
        return false;
    }
    let keys: BTreeSet<String> =
        receiver.received().iter().filter_map(|r| r.header("idempotency-key").map(str::to_string)).collect();
    let rows: Vec<String> = db
        .prepare("SELECT id FROM sluice_outbox WHERE channel = 'webhooks'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .unwrap_or_default();
    rows.iter().all(|id| keys.contains(id))
}

fn check(f: &Fixture, nats: &Nats, bus: &TestBus, receiver: &Receiver, figures: &mut Figures) {
    let db = f.db();
    let column = |sql: &str| -> Vec<String> {
        db.prepare(sql).and_then(|mut s| s.query_map([], |r| r.get(0))?.collect()).expect(sql)
    };
    let committed: BTreeSet<String> =
        column("SELECT id FROM sluice_outbox WHERE channel = 'events'").into_iter().collect();
    let orders: BTreeSet<String> = column("SELECT CAST(id AS TEXT) FROM orders").into_iter().collect();
    let subject = format!("{}.orders.placed", bus.prefix);
    let messages: Vec<_> = nats.messages(&bus.stream).into_iter().filter(|m| m.subject == subject).collect();

    // Exactly once by id, and only committed ones.
    let mut by_id: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &messages {
        *by_id.entry(m.id.as_str()).or_default() += 1;
    }
    let doubled: Vec<_> = by_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "messages in the stream more than once: {doubled:?}");
    let stray: Vec<_> = by_id.keys().filter(|id| !committed.contains(**id)).collect();
    assert!(stray.is_empty(), "messages of no committed outbox row (a rolled-back scope's?): {stray:?}");
    let lost: Vec<_> = committed.iter().filter(|id| !by_id.contains_key(id.as_str())).collect();
    assert!(lost.is_empty(), "committed messages missing from the stream: {lost:?}");
    // One message per committed order, none for another.
    let placed: Vec<String> = messages.iter().filter_map(|m| m.header("order-id").map(str::to_string)).collect();
    let placed_set: BTreeSet<String> = placed.iter().cloned().collect();
    assert_eq!(placed.len(), placed_set.len(), "an order published twice");
    assert_eq!(placed_set, orders, "orders and their messages differ");

    // Webhooks: each row received, each try with its own key, one row per
    // message.
    let received = receiver.received();
    let mut key_of_message: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &received {
        let (Some(message), Some(key)) = (r.header("sluice-message-id"), r.header("idempotency-key")) else {
            panic!("a webhook without its ids: {r:?}")
        };
        key_of_message.entry(message.to_string()).or_default().insert(key.to_string());
    }
    let two: Vec<_> = key_of_message.iter().filter(|(_, keys)| keys.len() > 1).collect();
    assert!(two.is_empty(), "a message made more than one webhook (handled twice): {two:?}");
    let hooks = column("SELECT id FROM sluice_outbox WHERE channel = 'webhooks'");
    assert_eq!(key_of_message.len(), hooks.len(), "webhook rows and the messages they carry differ");

    // Receipt files: whole when there; staged files all gone.
    let payloads: BTreeMap<String, Vec<u8>> =
        messages.iter().filter_map(|m| m.header("order-id").map(|o| (o.to_string(), m.payload.clone()))).collect();
    let dir = f.dir.path().join("receipts");
    let mut missing = 0;
    for (order, payload) in &payloads {
        match std::fs::read(dir.join(format!("order-{order}.json"))) {
            Ok(bytes) => assert_eq!(&bytes, payload, "receipt of order {order} is not its message"),
            Err(_) => missing += 1,
        }
    }
    assert_eq!(missing, 0, "receipt files lost");
    let staged: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with(".sluice-stage-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(staged.is_empty(), "staged files left: {staged:?}");

    figures.committed_orders = orders.len();
    figures.messages = messages.len();
    figures.lost = lost.len();
    figures.duplicate_messages = doubled.len();
    figures.webhooks = hooks.len();
    figures.webhook_repeats = received.len() - hooks.len();
    figures.receipts_missing = missing;
}
