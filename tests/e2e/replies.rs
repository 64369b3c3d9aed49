//! Replies to sends on a fleet: two hosts on one PostgreSQL database, one
//! of them killed and started again while requests and replies are in
//! flight; every request's reply handler saves once, on whichever host.

use std::time::Duration;

use serde_json::json;

use crate::fetch::{config_on, secret_file};
use crate::receiver::Receiver;
use crate::support::{Fixture, text};

#[test]
fn replies_on_a_fleet_are_handled_once_on_postgres() {
    let Some(db) = crate::postgres::Database::new() else { return };
    let receiver = Receiver::start();
    receiver.answer("/hooks/pay?key=k", 200, &[], b"ok");
    receiver.delay(Duration::from_millis(30));
    let f = Fixture::new(&["probe"]);
    let credentials = secret_file(&f, "k");
    let config = config_on(&f, &db.url(), &receiver, "", &credentials);
    // The table the probe's handler writes, made by the host's own
    // migration so that the probe's role is granted it.
    let schema = f.dir.path().join("schema");
    std::fs::create_dir_all(&schema).expect("schema dir");
    std::fs::write(
        schema.join("0001_replies.sql"),
        "CREATE TABLE replies (tag TEXT, request TEXT, status BIGINT, body TEXT, failure TEXT);",
    )
    .expect("migration");
    let out = f.command().arg("--config").arg(&config).args(["migrate", &schema.to_string_lossy()]).output();
    let out = out.expect("migrate");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = config.to_string_lossy().into_owned();
    let host = |id: &str| f.serve_env(&[("SLUICE_CONFIG", config.as_str()), ("SLUICE_HOST_ID", id)], &[]);
    let send = |served: &crate::served::Served, tag: String| {
        let body = json!({"channel": "webhooks", "url": "/hooks/pay", "body": [], "tag": tag});
        let (status, answer) = served.post("/services/probe/send-replied", &body);
        assert_eq!(status, 200, "{answer}");
    };
    let b = host("b");
    let mut sent = 0;
    for round in 0..3 {
        let a = host("a");
        for _ in 0..10 {
            sent += 1;
            send(&a, format!("a{sent:03}"));
            sent += 1;
            send(&b, format!("b{sent:03}"));
        }
        std::thread::sleep(Duration::from_millis(50 * round));
        drop(a); // SIGKILL, while b goes on
    }
    let _a = host("a");
    let count = |sql: &str| -> i64 { db.client().query_one(sql, &[]).expect("count").get(0) };
    b.wait_for("every reply handled", |_| count("SELECT count(*) FROM replies") >= sent);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count("SELECT count(*) FROM replies"), sent, "a reply's handler saved twice");
    assert_eq!(count("SELECT count(DISTINCT tag) FROM replies"), sent);
    assert_eq!(count("SELECT count(*) FROM replies WHERE body = 'ok'"), sent, "a reply lost its answer");
    assert_eq!(count("SELECT count(*) FROM sluice_replies WHERE state = 'done'"), sent);
    eprintln!(
        "measured: {sent} replies on two hosts over 3 kills of one, each handled once; the API got {} requests",
        receiver.received().len()
    );
}
