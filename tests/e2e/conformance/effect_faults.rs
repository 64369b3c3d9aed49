//! The fault case of the conformance suite for the effect kinds (a kind is
//! registered with one line in [`EFFECT_SERVERS`]): the server an effect
//! goes to sits behind a proxy ([`crate::stall::Stall`]) that stops
//! answering for a while. A save never waits on it (its effects are outbox
//! rows of the data transaction), a scope on another channel is served
//! meanwhile, nothing goes dead for a server that is only slow to come
//! back, and once it answers again the relay delivers what was saved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::Val;

use super::{host_on, told};
use crate::stall::Stall;
use crate::support::{Fixture, bytes, s};

/// An effect kind and the server its effects go to.
struct EffectServer {
    name: &'static str,
    /// The server (`None` where it is missing).
    open: fn() -> Option<Server>,
    /// The manifest lines of the probe's grant on `x`.
    grant: &'static str,
    /// The probe's call that queues one effect on `x` reached at `port`.
    send: fn(port: u16) -> (&'static str, Vec<Val>),
}

const EFFECT_SERVERS: &[EffectServer] = &[
    EffectServer {
        name: "bus",
        open: bus,
        grant: "subjects = [\"granted.\"]",
        send: |_| ("publish", vec![s("x"), s("granted.a"), bytes(b"payload")]),
    },
    EffectServer {
        name: "http-out",
        open: http_out,
        grant: "destinations = [\"POST 127.0.0.1\"]",
        send: |port| ("send", vec![s("x"), s("POST"), s(&format!("http://127.0.0.1:{port}/hook")), bytes(b"body")]),
    },
];

/// A server effects go to.
struct Server {
    /// Its address, `host:port`.
    address: String,
    /// The `sluice.toml` lines of a channel `x` that reaches it at
    /// `127.0.0.1:port` (the proxy).
    lines: Box<dyn Fn(u16) -> String>,
    /// What keeps it alive.
    _alive: Box<dyn std::any::Any>,
}

fn bus() -> Option<Server> {
    crate::effects::Nats::connect()?;
    let bus = crate::effects::TestBus::new();
    let (stream, prefix) = (bus.stream.clone(), bus.prefix.clone());
    let lines = move |port: u16| {
        format!(
            "[channels.x]\nkind = \"bus\"\nurl = \"nats://127.0.0.1:{port}\"\noutbox = \"main\"\n\
             stream = \"{stream}\"\nprefix = \"{prefix}\"\n"
        )
    };
    Some(Server { address: "127.0.0.1:4222".into(), lines: Box::new(lines), _alive: Box::new(bus) })
}

fn http_out() -> Option<Server> {
    let receiver = crate::receiver::Receiver::start();
    let address = receiver.base.trim_start_matches("http://").trim_end_matches('/').to_string();
    let lines =
        |_: u16| "[channels.x]\nkind = \"http-out\"\noutbox = \"main\"\ntries = 100\ntimeout-ms = 1000\n".into();
    Some(Server { address, lines: Box::new(lines), _alive: Box::new(receiver) })
}

/// The states of `x`'s outbox rows, oldest first.
fn states(f: &Fixture) -> Vec<String> {
    let db = f.db();
    let mut rows =
        db.prepare("SELECT state FROM sluice_outbox WHERE channel = 'x' ORDER BY created_ms, id").expect("rows");
    rows.query_map([], |r| r.get(0)).expect("states").map(|s| s.expect("state")).collect()
}

/// See the module docs.
#[test]
fn every_effect_kind_keeps_its_saves_and_delivers_once_its_server_answers_again() {
    for kind in EFFECT_SERVERS {
        let Some(server) = (kind.open)() else { continue };
        let stall = Stall::to(&server.address);
        let lines = (server.lines)(stall.port());
        let f = Fixture::new(&["probe"]);
        f.write_manifest("probe", &format!("[channels.main]\nreads = [\"products\"]\n[channels.x]\n{}\n", kind.grant));
        let main = format!("[channels.main]\nkind = \"sql\"\nurl = \"sqlite://{}\"\n\n", f.db_path().display());
        let host = Arc::new(host_on(&f, &format!("{main}{lines}")));
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let relays = runtime.block_on(async { sluice_host::triggers::start(Arc::clone(&host), "conformance") });
        let name = kind.name;
        let (send, args) = (kind.send)(stall.port());
        let delivered = |n: usize| states(&f).iter().filter(|s| *s == "delivered").count() >= n;
        let wait = |what: &str, n: usize, within: Duration| {
            let started = Instant::now();
            while !delivered(n) {
                assert!(
                    started.elapsed() < within,
                    "{name}: {what}: not delivered within {within:?}: {:?}",
                    states(&f)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            started.elapsed()
        };
        assert!(told(&host, "probe", send, &args).starts_with("saved: "), "{name}: the first effect");
        wait("the first effect", 1, Duration::from_secs(20));
        stall.freeze();
        let started = Instant::now();
        let answer = told(&host, "probe", send, &args);
        let took = started.elapsed();
        assert!(answer.starts_with("saved: "), "{name}: a save while the server does not answer: {answer}");
        assert!(took < Duration::from_secs(1), "{name}: the save waited {took:?} on a server that does not answer");
        let other = told(&host, "probe", "query", &[s("main"), s("SELECT count(*) FROM products"), Val::List(vec![])]);
        assert!(other.starts_with("saved: "), "{name}: a scope on main: {other}");
        // Long enough for the relay to try and time out, more than once.
        std::thread::sleep(Duration::from_secs(3));
        assert!(!states(&f).iter().any(|s| s == "dead"), "{name}: a row went dead for a server that was down 3 s");
        stall.thaw();
        let after = wait("the effect saved while the server did not answer", 2, Duration::from_secs(60));
        eprintln!(
            "conformance: {name}: a save while its server did not answer took {took:?}; delivered {after:?} after it \
             answered again"
        );
        drop(relays);
        drop(host);
    }
}
