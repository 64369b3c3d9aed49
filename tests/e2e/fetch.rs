//! The `http` kind (`from.fetch`) against a real HTTP server on 127.0.0.1:
//! grants by method and path, the checks made before anything is sent, the
//! per-scope cap, an answer past `result-bytes` stopped while it streams
//! in, answers checked at save, a recorded fetch replayed with no network,
//! and credentials the host attaches that nothing shows.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value as Json, json};
use sluice_host::call::{self, Mode};
use sluice_host::{Host, ScopeError};
use wasmtime::component::Val;

use crate::receiver::Receiver;
use crate::support::{Fixture, product, s, text};

/// The probe's manifest, with `grant` on the channel `quotes` and the
/// webhooks it may send.
fn probe(f: &Fixture, grant: &str) {
    let mut manifest = std::fs::read_to_string(f.manifest("probe")).expect("probe manifest");
    manifest.push_str(&format!("\n[channels.quotes]\n{grant}\n"));
    f.write_manifest("probe", &manifest);
}

/// A `sluice.toml` with `main` and the `http` channel `quotes` on
/// `receiver`'s `/api`, with `extra` lines in its section, and an
/// `http-out` channel `webhooks` to the same receiver; `credentials` is the
/// credentials section both share. Returns its path.
fn config(f: &Fixture, receiver: &Receiver, extra: &str, credentials: &str) -> PathBuf {
    config_on(f, &format!("sqlite://{}", f.db_path().display()), receiver, extra, credentials)
}

/// [`config`] with `main` at `url`.
pub(crate) fn config_on(f: &Fixture, url: &str, receiver: &Receiver, extra: &str, credentials: &str) -> PathBuf {
    let path = f.dir.path().join("sluice.toml");
    let text = format!(
        "[channels.main]\nkind = \"sql\"\nurl = \"{url}\"\n\n\
         [channels.quotes]\nkind = \"http\"\nbase = \"{base}/api\"\n{extra}\n\
         [channels.quotes.credentials]\n{credentials}\n\n\
         [channels.webhooks]\nkind = \"http-out\"\noutbox = \"main\"\nbase = \"{base}\"\ntimeout-ms = 2000\ntries = 2\n\
         [channels.webhooks.credentials]\n{credentials}\n",
        base = receiver.base,
    );
    std::fs::write(&path, text).expect("config");
    path
}

/// The secret, in a file of the fixture's, and the credentials section
/// that attaches it as a bearer token and a query parameter.
pub(crate) fn secret_file(f: &Fixture, secret: &str) -> String {
    let file = f.dir.path().join("quotes.key");
    std::fs::write(&file, format!("{secret}\n")).expect("secret");
    format!(
        "headers = {{ Authorization = \"Bearer ${{file:{path}}}\" }}\nquery = {{ key = \"${{file:{path}}}\" }}",
        path = file.display()
    )
}

fn host_with(f: &Fixture, config: PathBuf) -> Host {
    let mut options = f.options();
    options.config = Some(config);
    Host::open(&options).expect("host")
}

/// `probe.fetch(channel, method, path, headers)` as its JSON result.
fn fetch_args(channel: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<Val> {
    let headers = headers.iter().map(|(n, v)| Val::Tuple(vec![s(n), s(v)])).collect();
    vec![s(channel), s(method), s(path), Val::List(headers)]
}

fn fetched(host: &Host, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<Json, ScopeError> {
    let report = call::run(host, "probe", "fetch", &fetch_args("quotes", method, path, headers), Mode::Save)?;
    Ok(sluice_host::values::to_json(&report.results[0]))
}

fn body_text(answer: &Json) -> String {
    let bytes: Vec<u8> = answer["ok"]["body"]
        .as_array()
        .map(|b| b.iter().filter_map(|x| x.as_u64()).map(|x| x as u8).collect())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn fetches_are_granted_checked_and_bounded() {
    let receiver = Receiver::start();
    receiver.answer("/api/quotes/1?size=3&key=k3y-0f-the-t3st", 200, &[("content-type", "text/plain")], b"quote 1");
    receiver.answer("/api/quotes/moved?key=k3y-0f-the-t3st", 302, &[("location", "/api/quotes/1")], b"");
    let f = Fixture::new(&["probe"]);
    probe(&f, "fetch = [\"GET /quotes/\"]");
    let credentials = secret_file(&f, "k3y-0f-the-t3st");
    let host = host_with(&f, config(&f, &receiver, "fetches-per-scope = 3", &credentials));

    let answer = fetched(&host, "GET", "/quotes/1?size=3", &[("accept", "text/plain")]).expect("fetch");
    assert_eq!(answer["ok"]["status"], 200, "{answer}");
    assert_eq!(body_text(&answer), "quote 1");
    let got = receiver.received().pop().expect("the API got the request");
    assert_eq!(got.header("authorization"), Some("Bearer k3y-0f-the-t3st"), "the host attached the credentials");
    assert_eq!(got.header("accept"), Some("text/plain"));
    // A redirect is answered as it came: the channel follows none.
    let moved = fetched(&host, "GET", "/quotes/moved", &[]).expect("fetch");
    assert_eq!(moved["ok"]["status"], 302, "{moved}");

    let refused = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let before = receiver.received().len();
        let answer = fetched(&host, method, path, headers).expect("a refusal is a value");
        assert_eq!(receiver.received().len(), before, "{method} {path} reached the API: {answer}");
        answer.to_string()
    };
    let denied = refused("GET", "/admin", &[]);
    assert!(denied.contains("denied") && denied.contains(r#"fetch = [\"GET /admin\"]"#), "{denied}");
    let method = refused("POST", "/quotes/1", &[]);
    assert!(method.contains("invalid") && method.contains("allows GET, HEAD"), "{method}");
    for path in
        ["/quotes/../admin", "/quotes/%2e%2e/admin", "/quotes%2f..%2fadmin", "//evil.example/quotes/", "quotes/1"]
    {
        let escaped = refused("GET", path, &[]);
        assert!(escaped.contains("invalid"), "{path}: {escaped}");
    }
    for header in ["Authorization", "if-none-match", "Host"] {
        let set = refused("GET", "/quotes/1", &[(header, "mine")]);
        assert!(set.contains("invalid") && set.contains("host"), "{header}: {set}");
    }
    let query = refused("GET", "/quotes/1?key=mine", &[]);
    assert!(query.contains("invalid") && query.contains("credentials"), "{query}");

    // The fourth fetch of one scope is past the channel's cap: a trap.
    let mut scope = host.scope();
    for _ in 0..3 {
        scope.call("probe", "fetch", &fetch_args("quotes", "GET", "/quotes/1?size=3", &[])).expect("fetch");
    }
    let over = scope.call("probe", "fetch", &fetch_args("quotes", "GET", "/quotes/1?size=3", &[]));
    let over = over.expect_err("past the cap").to_string();
    assert!(over.contains("fetches-per-scope"), "{over}");
}

/// An answer is kept like a read: at save it is asked again, with
/// `If-None-Match` when it had an `ETag`, and a change is a conflict;
/// relaxed paths are not asked again.
#[test]
fn fetched_answers_are_checked_at_save() {
    let receiver = Receiver::start();
    let f = Fixture::new(&["probe"]);
    f.migrate();
    probe(&f, "fetch = [\"GET /\"]\nrelaxed-fetches = [\"/status\"]");
    let credentials = secret_file(&f, "k");
    let host = host_with(&f, config(&f, &receiver, "", &credentials));
    let saves = std::cell::Cell::new(0);
    let save_after = |path: &str, change: &dyn Fn()| {
        let mut scope = host.scope();
        scope.call("probe", "fetch", &fetch_args("quotes", "GET", path, &[])).expect("fetch");
        saves.set(saves.get() + 1);
        scope.call("probe", "insert", &product(&format!("lamp {}", saves.get()), 5)).expect("insert");
        change();
        let before = receiver.received().len();
        let saved = scope.save();
        (saved, receiver.received()[before..].to_vec())
    };
    let tagged = "/api/price?key=k";
    receiver.answer(tagged, 200, &[("etag", "\"v1\"")], b"10");
    let (saved, asked) = save_after("/price", &|| {});
    saved.expect("an unchanged answer holds");
    assert_eq!(asked.len(), 1, "the save asked once: {asked:?}");
    assert_eq!(asked[0].header("if-none-match"), Some("\"v1\""));
    let (saved, _) = save_after("/price", &|| receiver.answer(tagged, 200, &[("etag", "\"v2\"")], b"11"));
    match saved {
        Err(ScopeError::Conflict { reason, .. }) => assert!(reason.contains("fetch GET /price"), "{reason}"),
        other => panic!("a changed ETag must conflict: {other:?}"),
    }
    let plain = "/api/stock?key=k";
    receiver.answer(plain, 200, &[], b"5 left");
    save_after("/stock", &|| {}).0.expect("the same body holds");
    let (saved, _) = save_after("/stock", &|| receiver.answer(plain, 200, &[], b"4 left"));
    assert!(matches!(saved, Err(ScopeError::Conflict { .. })), "a changed body must conflict: {saved:?}");
    receiver.answer("/api/status?key=k", 200, &[], b"up");
    let (saved, asked) = save_after("/status", &|| receiver.answer("/api/status?key=k", 200, &[], b"down"));
    saved.expect("a relaxed fetch is not checked");
    assert!(asked.is_empty(), "a relaxed fetch was asked again: {asked:?}");
}

/// `sluice call --record` keeps a fetch with its answer (never the
/// credentials); `sluice test` replays it with no request to the API.
#[test]
fn a_recorded_fetch_replays_without_the_network() {
    let receiver = Receiver::start();
    receiver.answer("/api/quotes/7?key=k3y", 200, &[("etag", "\"q7\"")], b"quote 7");
    let f = Fixture::new(&["probe"]);
    f.migrate();
    probe(&f, "fetch = [\"GET /quotes/\"]");
    let credentials = secret_file(&f, "k3y");
    let config = config(&f, &receiver, "", &credentials);
    let case = f.dir.path().join("quote.json");
    let out = f.sluice(&[
        "--config",
        &config.to_string_lossy(),
        "call",
        "--record",
        &case.to_string_lossy(),
        "probe.fetch",
        "quotes",
        "GET",
        "/quotes/7",
        "[]",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let recorded = std::fs::read_to_string(&case).expect("case");
    assert!(recorded.contains("\"read\": \"fetch\"") && recorded.contains("/quotes/7"), "{recorded}");
    assert!(!recorded.contains("k3y"), "the case holds the credential: {recorded}");
    let before = receiver.received().len();
    let replayed = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--services")
        .arg(f.services())
        .arg("--data-dir")
        .arg(f.dir.path().join("no-db"))
        .args(["test", &case.to_string_lossy()])
        .env_remove("SLUICE_CONFIG")
        .output()
        .expect("sluice test");
    assert!(replayed.status.success(), "{}{}", text(&replayed.stdout), text(&replayed.stderr));
    assert_eq!(receiver.received().len(), before, "the replay asked the API");
}

/// Over `sluice serve`: an answer far past `result-bytes` is refused while
/// it streams in, with the server's memory flat; and the credentials, from
/// the environment, reach the API on fetches and sends and appear nowhere
/// else: not in the log, `/services`, `/openapi.json`, `/metrics`, `sluice
/// list`, `sluice outbox`, the database or a recorded case.
#[test]
fn served_fetches_stop_at_result_bytes_and_no_output_holds_the_secret() {
    const SECRET: &str = "sk_live_9f8e7d6c5b4a";
    let receiver = Receiver::start();
    receiver.answer(&format!("/api/quotes/1?key={SECRET}"), 200, &[], b"quote 1");
    receiver.stream(&format!("/api/quotes/huge?key={SECRET}"), 1 << 30);
    let f = Fixture::new(&["probe"]);
    f.migrate();
    probe(&f, "fetch = [\"GET /quotes/\"]");
    let mut manifest = std::fs::read_to_string(f.manifest("probe")).expect("manifest");
    manifest = manifest.replace("[http]", "[limits]\nresult-bytes = 1048576\n\n[http]");
    f.write_manifest("probe", &manifest);
    let credentials = "headers = { Authorization = \"Bearer ${env:SLUICE_TEST_QUOTES_KEY}\" }\n\
                       query = { key = \"${env:SLUICE_TEST_QUOTES_KEY}\" }";
    let config = config(&f, &receiver, "", credentials);
    let config_text = config.to_string_lossy().to_string();
    let env = [("SLUICE_CONFIG", config_text.as_str()), ("SLUICE_TEST_QUOTES_KEY", SECRET)];
    let served = f.serve_env(&env, &[]);

    let (status, body) = served.post(
        "/services/probe/fetch",
        &json!({"channel": "quotes", "method": "GET", "path": "/quotes/1", "headers": []}),
    );
    assert_eq!(status, 200, "{body}");
    let rss = served.peak_rss_kib();
    let (status, body) = served.post(
        "/services/probe/fetch",
        &json!({"channel": "quotes", "method": "GET", "path": "/quotes/huge", "headers": []}),
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["limit"], "result-bytes", "{body}");
    let grown = served.peak_rss_kib().saturating_sub(rss);
    assert!(grown < 32 << 10, "the server's peak memory grew by {grown} KiB");
    std::thread::sleep(Duration::from_millis(200));
    assert!(receiver.streamed() < 256 << 20, "the host read on: {} bytes", receiver.streamed());
    eprintln!(
        "measured: a 1 GiB answer against 1 MiB result-bytes: peak RSS grew by {grown} KiB, {} bytes sent",
        receiver.streamed()
    );

    let (status, body) = served.post(
        "/services/probe/send",
        &json!({"channel": "webhooks", "method": "POST", "url": "/hooks/charge", "body": [1, 2]}),
    );
    assert_eq!(status, 200, "{body}");
    served.wait_for("the webhook", |_| receiver.received().iter().any(|r| r.path.starts_with("/hooks/charge")));
    let hook = receiver.received().into_iter().find(|r| r.path.starts_with("/hooks/charge")).expect("hook");
    assert_eq!(hook.header("authorization"), Some(format!("Bearer {SECRET}").as_str()));
    assert_eq!(hook.path, format!("/hooks/charge?key={SECRET}"));
    let fetch = receiver.received().into_iter().find(|r| r.path.starts_with("/api/quotes/1")).expect("fetch");
    assert_eq!(fetch.header("authorization"), Some(format!("Bearer {SECRET}").as_str()));
    // A refusal names what was refused, not the credential.
    let (_, refused) = served.post(
        "/services/probe/fetch",
        &json!({"channel": "quotes", "method": "GET", "path": "/quotes/1", "headers": [["Authorization", "x"]]}),
    );

    let case = f.dir.path().join("case.json");
    let recorded = f.sluice_env(
        &env,
        &["call", "--record", &case.to_string_lossy(), "probe.fetch", "quotes", "GET", "/quotes/1", "[]"],
    );
    assert!(recorded.status.success(), "{}", text(&recorded.stderr));
    let mut places = vec![
        ("the log", served.log()),
        ("/services", served.get("/services").1),
        ("/openapi.json", served.get("/openapi.json").1),
        ("/metrics", served.get("/metrics").1),
        ("a refusal", refused.to_string()),
        ("the database", f.dump()),
        ("the recorded case", std::fs::read_to_string(&case).expect("case")),
        ("sluice call's output", format!("{}{}", text(&recorded.stdout), text(&recorded.stderr))),
    ];
    for args in [vec!["list"], vec!["outbox", "webhooks"], vec!["outbox", "webhooks", "--json"]] {
        let out = f.sluice_env(&env, &args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        places.push(("a command", format!("{args:?} {}{}", text(&out.stdout), text(&out.stderr))));
    }
    for (place, shown) in &places {
        assert!(!shown.is_empty(), "{place} is empty");
        assert!(!shown.contains(SECRET), "{place} shows the secret:\n{shown}");
    }
}

/// The table the probe's reply handler writes.
fn replies_table(f: &Fixture) {
    f.db()
        .execute("CREATE TABLE replies (tag TEXT, request TEXT, status INTEGER, body TEXT, failure TEXT)", [])
        .expect("replies table");
}

/// One handled reply: tag, status, body, failure.
type Handled = (String, Option<i64>, Option<String>, Option<String>);

/// Each handled reply, by tag.
fn handled(f: &Fixture) -> Vec<Handled> {
    let db = f.db();
    let mut rows = db.prepare("SELECT tag, status, body, failure FROM replies ORDER BY tag").expect("select");
    rows.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .map(Result::unwrap)
        .collect()
}

/// A send that asked for its answer runs the service's handler with it
/// once it is delivered: a 2xx answer, a refusal (4xx, dead at once), and
/// no answer at all (dead after its tries) each run it once, with the
/// status, body and failure; a handler that refuses saves nothing and
/// keeps the reply for a later run.
#[test]
fn replies_to_sends_run_their_handler_once() {
    let receiver = Receiver::start();
    receiver.answer("/hooks/pay?key=k", 200, &[("content-type", "application/json")], br#"{"id":"ch_1"}"#);
    receiver.answer("/hooks/refused?key=k", 402, &[], b"no funds");
    let f = Fixture::new(&["probe"]);
    f.migrate();
    replies_table(&f);
    let credentials = secret_file(&f, "k");
    let config = config(&f, &receiver, "", &credentials);
    let served = f.serve_env(&[("SLUICE_CONFIG", &config.to_string_lossy())], &[]);
    let send = |url: &str, tag: &str| {
        let (status, body) = served
            .post("/services/probe/send-replied", &json!({"channel": "webhooks", "url": url, "body": [], "tag": tag}));
        assert_eq!(status, 200, "{body}");
    };
    send("/hooks/pay", "a-paid");
    send("/hooks/refused", "b-refused");
    send("http://127.0.0.1:9/hooks/nowhere", "c-unreachable");
    send("/hooks/pay", "refuse");
    served.wait_for("three replies handled", |_| handled(&f).len() >= 3);
    let rows = handled(&f);
    assert_eq!(rows[0], ("a-paid".into(), Some(200), Some(r#"{"id":"ch_1"}"#.into()), None), "{rows:?}");
    assert_eq!(rows[1].1, Some(402), "{rows:?}");
    assert_eq!(rows[1].2.as_deref(), Some("no funds"));
    assert!(rows[1].3.as_deref().is_some_and(|f| f.contains("402")), "{rows:?}");
    assert_eq!((rows[2].1, rows[2].2.as_deref()), (None, None), "{rows:?}");
    assert!(rows[2].3.as_deref().is_some_and(|f| !f.is_empty()), "{rows:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(handled(&f).len(), 3, "a refused reply saved");
    let (state, last_error): (String, Option<String>) = f
        .db()
        .query_row("SELECT state, last_error FROM sluice_replies WHERE tag = 'refuse'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("the refused reply");
    assert_eq!(state, "ready");
    assert!(last_error.is_some_and(|e| e.contains("refused")), "the refusal is its last error");
}

/// Replies under host kills: every request sent gets its handler's save
/// exactly once, however the kills fall between the delivery, the reply
/// and the handler's save.
#[test]
fn replies_are_handled_once_across_host_kills() {
    let receiver = Receiver::start();
    receiver.answer("/hooks/pay?key=k", 200, &[], b"ok");
    // A slow API: the kills fall while requests and replies are in flight.
    receiver.delay(Duration::from_millis(40));
    let f = Fixture::new(&["probe"]);
    f.migrate();
    replies_table(&f);
    let credentials = secret_file(&f, "k");
    let config = config(&f, &receiver, "", &credentials);
    let env = [("SLUICE_CONFIG", config.to_string_lossy().into_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut sent = 0;
    for round in 0..3 {
        let served = f.serve_env(&env, &[]);
        for _ in 0..15 {
            sent += 1;
            let (status, body) = served.post(
                "/services/probe/send-replied",
                &json!({"channel": "webhooks", "url": "/hooks/pay", "body": [], "tag": format!("r{sent:03}")}),
            );
            assert_eq!(status, 200, "{body}");
        }
        std::thread::sleep(Duration::from_millis(60 * round));
        drop(served); // SIGKILL
    }
    let served = f.serve_env(&env, &[]);
    served.wait_for("every reply handled", |_| handled(&f).len() >= sent);
    let bodies = handled(&f).iter().filter(|r| r.2.as_deref() == Some("ok")).count();
    assert_eq!(bodies, sent, "every reply carried the answer's body");
    std::thread::sleep(Duration::from_millis(500));
    let rows = handled(&f);
    let tags: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(rows.len(), sent, "a reply's handler saved twice");
    assert_eq!(tags.len(), sent);
    let delivered: i64 = f
        .db()
        .query_row("SELECT count(*) FROM sluice_outbox WHERE state = 'delivered'", [], |r| r.get(0))
        .expect("count");
    assert_eq!(delivered, i64::try_from(sent).unwrap_or_default());
    eprintln!(
        "measured: {sent} replies over 3 host kills, each handled once; the API got {} requests",
        receiver.received().len()
    );
}

/// A channel with `redirects` follows a redirect only to a path under its
/// base that the service's grant covers, checked as the first request was;
/// never to another host, and not past its count (the last one is then
/// answered as it came).
#[test]
fn redirects_are_followed_only_within_the_base_and_the_grant() {
    let receiver = Receiver::start();
    receiver.answer("/api/quotes/old?key=k", 302, &[("location", "/api/quotes/new")], b"");
    receiver.answer("/api/quotes/new?key=k", 200, &[], b"new");
    receiver.answer("/api/quotes/away?key=k", 301, &[("location", "/api/admin")], b"");
    receiver.answer("/api/quotes/out?key=k", 307, &[("location", "http://127.0.0.2:1/api/quotes/new")], b"");
    receiver.answer("/api/quotes/loop?key=k", 302, &[("location", "/api/quotes/loop")], b"");
    let f = Fixture::new(&["probe"]);
    probe(&f, "fetch = [\"GET /quotes/\"]");
    let credentials = secret_file(&f, "k");
    let host = host_with(&f, config(&f, &receiver, "redirects = 2", &credentials));
    let moved = fetched(&host, "GET", "/quotes/old", &[]).expect("fetch");
    assert_eq!(moved["ok"]["status"], 200, "{moved}");
    assert_eq!(body_text(&moved), "new");
    let hop = receiver.received().into_iter().find(|r| r.path == "/api/quotes/new?key=k").expect("the hop");
    assert_eq!(hop.header("authorization"), Some("Bearer k"), "the hop carries the credentials once");
    let away = fetched(&host, "GET", "/quotes/away", &[]).expect("fetch").to_string();
    assert!(away.contains("denied") && away.contains("GET /admin"), "{away}");
    assert!(!receiver.received().iter().any(|r| r.path.starts_with("/api/admin")), "the hop left the grant");
    let out = fetched(&host, "GET", "/quotes/out", &[]).expect("fetch").to_string();
    assert!(out.contains("invalid") && out.contains("outside the channel's base"), "{out}");
    // Past its count, the last redirect is answered as it came.
    let before = receiver.received().len();
    let looped = fetched(&host, "GET", "/quotes/loop", &[]).expect("fetch");
    assert_eq!(looped["ok"]["status"], 302, "{looped}");
    assert_eq!(receiver.received().len() - before, 3, "the first request and two hops");
}
