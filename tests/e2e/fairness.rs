//! Effects of one service never stall another's: the `http-out` relay
//! delivers rows side by side with a share per service, so a destination
//! that never answers holds up only the rows of the service that sends to
//! it.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::json;

use sluice_host::call::{self, Mode};
use wasmtime::component::Val;

use crate::effects::{Nats, TestBus, effects_config};
use crate::receiver::Receiver;
use crate::support::Fixture;

/// Two services, `probe` and a copy of it, `neighbour`, both under `grant`,
/// with the fixture's data directory made.
fn two_tenants(grant: &str) -> Fixture {
    let f = Fixture::new(&["probe"]);
    f.add_component_as("probe", "neighbour");
    f.write_manifest("probe", grant);
    f.write_manifest("neighbour", grant);
    std::fs::create_dir_all(f.data()).expect("data dir");
    f
}

/// One service's 64 requests to a destination that accepts and never
/// answers, with a 10 s timeout, do not hold up another service's webhook:
/// it is delivered within 2 s. Before, the relay took rows 32 at a time in
/// the order they were written and waited for a whole batch, so the
/// webhook waited behind two batches of timeouts (20 s and more).
#[test]
fn a_destination_that_never_answers_holds_up_only_its_own_service() {
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_url = format!("http://{}/hook", silent.local_addr().expect("address"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let receiver = Receiver::start();
    let f = two_tenants("[channels.webhooks]\ndestinations = [\"POST 127.0.0.1\"]\n\n[http]\nexpose = \"*\"\n");
    let config = f.dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[channels.main]\nkind = \"sql\"\nurl = \"sqlite://{}\"\n\n\
             [channels.webhooks]\nkind = \"http-out\"\noutbox = \"main\"\ntries = 3\ntimeout-ms = 10000\n",
            f.db_path().display()
        ),
    )
    .expect("config");
    let served = f.serve(&["--config", &config.to_string_lossy()]);
    let send = |service: &str, url: &str| {
        let (status, answer) = served.post(
            &format!("/services/{service}/send"),
            &json!({ "channel": "webhooks", "method": "POST", "url": url, "body": [] }),
        );
        assert_eq!(status, 200, "{service}: {answer}");
    };
    for _ in 0..64 {
        send("probe", &silent_url);
    }
    // The relay has taken up the silent destination's rows by now.
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    send("neighbour", &format!("{}/neighbour", receiver.base));
    while !receiver.received().iter().any(|r| r.path == "/neighbour") {
        assert!(started.elapsed() < Duration::from_secs(60), "the neighbour's webhook never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    eprintln!("the neighbour's webhook was delivered {} ms after it was saved", took.as_millis());
    assert!(took < Duration::from_secs(2), "the neighbour's webhook waited {took:?} behind another service's rows");
}

/// A message the bus server can never take (over its `max_payload`, 1 MiB
/// by default) is dead at once, with the reason, and the messages written
/// after it still go out. Before, it was tried forever and, as messages go
/// out in order, held up every later one.
#[test]
fn a_message_the_server_can_never_take_is_dead_and_holds_up_nothing() {
    let Some(nats) = Nats::connect() else { return };
    let bus = TestBus::new();
    let f = two_tenants("[channels.events]\nsubjects = [\"probe.\"]\n\n[limits]\ncommand-bytes = 4194304\n");
    let receiver = Receiver::start();
    let config = effects_config(&f, &bus, &receiver.base, 2);
    let served = f.serve(&["--config", &config.to_string_lossy()]);
    served.wait_for("the stream", |_| nats.exists(&bus.stream));
    let mut options = f.options();
    options.config = Some(config);
    let host = sluice_host::Host::open(&options).expect("a second host on the same database");
    let publish = |service: &str, subject: &str, payload: Vec<u8>| {
        let payload = Val::List(payload.into_iter().map(Val::U8).collect());
        let args = [Val::String("events".into()), Val::String(subject.into()), payload];
        let report = call::run(&host, service, "publish", &args, Mode::Save).expect("publish");
        assert!(matches!(report.ending, sluice_host::scope::Ending::Saved(_)), "{service}: {:?}", report.ending);
    };
    publish("probe", "probe.big", vec![7; 1_500_000]);
    publish("neighbour", "probe.small", b"after".to_vec());
    let small = format!("{}.probe.small", bus.prefix);
    served.wait_for("the message written after", |_| nats.messages(&bus.stream).iter().any(|m| m.subject == small));
    let (state, error): (String, String) = f
        .db()
        .query_row(
            "SELECT state, last_error FROM sluice_outbox WHERE channel = 'events' AND target = 'probe.big'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("the big message's row");
    assert_eq!(state, "dead", "{error}");
    assert!(error.contains("max payload"), "{error}");
}
