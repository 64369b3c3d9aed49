//! Effects of one service never stall another's: the `http-out` relay
//! delivers rows side by side with a share per service, so a destination
//! that never answers holds up only the rows of the service that sends to
//! it.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::receiver::Receiver;
use crate::support::Fixture;

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
    let f = Fixture::new(&["probe"]);
    f.add_component_as("probe", "neighbour");
    let grant = "[channels.webhooks]\ndestinations = [\"POST 127.0.0.1\"]\n\n[http]\nexpose = \"*\"\n";
    f.write_manifest("probe", grant);
    f.write_manifest("neighbour", grant);
    let config = f.dir.path().join("sluice.toml");
    std::fs::create_dir_all(f.data()).expect("data dir");
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
