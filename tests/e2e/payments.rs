//! The `payments` example end to end, as the README runs it: the service
//! reads a fee from the example payments API (`scripts/payments-api`, a
//! real HTTP server on 127.0.0.1) at call time, sends a charge after its
//! save with the API key the host attaches, and records the charge's id
//! through its reply handler.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::support::{Fixture, repo};

/// `scripts/payments-api` on a port of its own; killed on drop.
struct PaymentsApi {
    child: Child,
    base: String,
}

impl PaymentsApi {
    fn start(key: &str) -> PaymentsApi {
        let mut child = Command::new(repo().join("scripts/payments-api"))
            .arg("0")
            .env("PAYMENTS_KEY", key)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start scripts/payments-api");
        let mut first = String::new();
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        out.read_line(&mut first).expect("its first line");
        std::thread::spawn(move || for _ in out.lines().map_while(Result::ok) {});
        let base = first.trim().strip_prefix("payments API on ").expect("the API's address").to_string();
        PaymentsApi { child, base }
    }
}

impl Drop for PaymentsApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_payments_example_charges_through_the_api() {
    charges_through_the_api(None);
}

/// The same on PostgreSQL: the replies are claimed with `FOR UPDATE SKIP
/// LOCKED`, and the service's SQL runs as its role.
#[test]
fn the_payments_example_charges_through_the_api_on_postgres() {
    let Some(db) = crate::postgres::Database::new() else { return };
    charges_through_the_api(Some(db.url()));
}

/// The example as the README runs it, with `main` on SQLite or at `url`.
fn charges_through_the_api(url: Option<String>) {
    const KEY: &str = "sk_test_e2e_5f4e3d";
    let api = PaymentsApi::start(KEY);
    let f = Fixture::new(&["payments"]);
    let example = std::fs::read_to_string(repo().join("examples/payments.toml")).expect("examples/payments.toml");
    let main = url.unwrap_or_else(|| format!("sqlite://{}", f.db_path().display()));
    let config = example.replace("sqlite://../data/example/main.db", &main).replace("http://127.0.0.1:9191", &api.base);
    let path = f.dir.path().join("payments.toml");
    std::fs::write(&path, config).expect("config");
    let schema = repo().join("examples/schema").to_string_lossy().into_owned();
    // Every command opens every channel, whose credentials must resolve.
    let out = f
        .command()
        .arg("--config")
        .arg(&path)
        .env("PAYMENTS_KEY", KEY)
        .args(["migrate", &schema])
        .output()
        .expect("migrate");
    assert!(out.status.success(), "{}", crate::support::text(&out.stderr));
    let env = [("SLUICE_CONFIG", path.to_string_lossy().into_owned()), ("PAYMENTS_KEY", KEY.to_string())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let served = f.serve_env(&env, &[]);

    let (status, body) = served.post("/services/payments/charge", &json!({"order-id": 1, "amount-cents": 1250}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["ok"]["fee-cents"], 67, "{body}");
    assert_eq!(body["result"]["ok"]["state"], "pending", "{body}");
    let (status, body) = served.post("/services/payments/charge", &json!({"order-id": 2, "amount-cents": 200000}));
    assert_eq!(status, 200, "{body}");
    let find = |order: u64| served.post("/services/payments/find", &json!({"order-id": order})).1["result"].clone();
    served.wait_for("both answers", |_| find(1)["state"] != "pending" && find(2)["state"] != "pending");
    let paid = find(1);
    assert_eq!(paid["state"], "charged", "{paid}");
    assert_eq!(paid["charge-id"], "ch_000001", "{paid}");
    let declined = find(2);
    assert_eq!(declined["state"], "declined", "{declined}");
    assert!(
        declined["failure"].as_str().is_some_and(|f| f.contains("402") && f.contains("card_declined")),
        "{declined}"
    );
    // A second charge of the same order is refused before anything is sent.
    let (status, body) = served.post("/services/payments/charge", &json!({"order-id": 1, "amount-cents": 1250}));
    assert_eq!(status, 422, "{body}");
    assert!(!served.log().contains(KEY), "the log shows the key");
}
