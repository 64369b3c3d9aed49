//! The fault cases of the conformance suite, for the kinds reached over
//! the network (a kind is registered with one line in [`NET_KINDS`]): its
//! server sits behind a proxy ([`crate::stall::Stall`]) that can stop
//! answering, or break at the commit.
//!
//! - **A server that never answers**: a read ends at the caller's
//!   deadline (within a grace), a save at it or at the host's own wait
//!   (5 s) with nothing applied, and a scope on another channel is served meanwhile; once
//!   the server answers again, so does the channel.
//! - **A commit that fails after another channel committed** (the request
//!   carrying the commit never reaches the server): the save is reported
//!   as partly applied, naming what committed, and is not run again; the
//!   channel keeps nothing of it and serves the next save. A kind that
//!   journals its commits in an outbox (`journaled`) has its relay make
//!   the commit instead, soon after.
//! - **A host killed mid-commit** (a `sluice call` process, SIGKILLed while
//!   the request that carries the commit is held): the next host on the
//!   same configuration starts, the channel keeps nothing of the save, or,
//!   journaled, that host's relay makes the commit.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_host::Host;
use wasmtime::component::Val;

use super::{host_on, told};
use crate::stall::Stall;
use crate::support::Fixture;
use crate::support::{bytes, s, text_value};

/// A kind whose server is reached over TCP.
struct NetKind {
    name: &'static str,
    /// The server, `host:port`.
    server: &'static str,
    /// The `sluice.toml` lines of a channel `x` of the kind reached at
    /// `127.0.0.1:port` (the proxy), with what keeps its store alive and
    /// tells what a write left there (`None` where the server is missing).
    open: fn(port: u16) -> Option<Opened>,
    /// The manifest lines of the probe's grant on `x`.
    grant: &'static str,
    /// The probe's read of `x`.
    read: fn() -> (&'static str, Vec<Val>),
    /// The probe's write of the value `tag` to `x`.
    write: fn(tag: &str) -> (&'static str, Vec<Val>),
    /// What the commit of a save that wrote `tag` sends and nothing before
    /// it does.
    commit: fn(tag: &str) -> Vec<u8>,
    /// Whether the channel records its commits in `main`'s outbox first, so
    /// that its relay makes one the save could not.
    journaled: bool,
}

/// A channel's `sluice.toml` lines and its store.
type Opened = (String, Box<dyn Store>);

/// A store a kind's channel writes to, as the test sees it.
trait Store: Any {
    /// Whether a write of `tag` is in it.
    fn holds(&mut self, tag: &str) -> bool;
}

const NET_KINDS: &[NetKind] = &[
    NetKind {
        name: "sql on PostgreSQL",
        server: "127.0.0.1:5432",
        open: postgres,
        grant: "reads = [\"t\"]\ninserts = [\"t\"]",
        read: || ("query", vec![s("x"), s("SELECT count(*) FROM t"), Val::List(vec![])]),
        write: |tag| ("insert", vec![s("x"), s("t"), Val::List(vec![s("k")]), Val::List(vec![text_value(tag)])]),
        commit: |_| b"COMMIT".to_vec(),
        journaled: false,
    },
    NetKind {
        name: "kv on Redis",
        server: "127.0.0.1:6379",
        open: redis,
        grant: "keys = [\"conformance-faults/\"]",
        read: || ("kv-get", vec![s("x"), s("conformance-faults/read")]),
        write: |tag| ("kv-set", vec![s("x"), s(&format!("conformance-faults/{tag}")), bytes(&value(tag))]),
        // The values go to Redis only with the commit; the key goes with
        // the locks before it.
        commit: value,
        journaled: false,
    },
    NetKind {
        name: "kv on Redis, journaled",
        server: "127.0.0.1:6379",
        open: redis_journaled,
        grant: "keys = [\"conformance-faults/\"]",
        read: || ("kv-get", vec![s("x"), s("conformance-faults/read")]),
        write: |tag| ("kv-set", vec![s("x"), s(&format!("conformance-faults/{tag}")), bytes(&value(tag))]),
        commit: value,
        journaled: true,
    },
];

/// A PostgreSQL database of the test's own with a table `t (k)` the host
/// user owns.
struct Pg(crate::postgres::Database);

impl Store for Pg {
    fn holds(&mut self, tag: &str) -> bool {
        let row = self.0.client().query_one("SELECT count(*) FROM t WHERE k = $1", &[&tag]).expect("count");
        row.get::<_, i64>(0) == 1
    }
}

fn postgres(port: u16) -> Option<Opened> {
    let db = crate::postgres::Database::new()?;
    let mut owner = postgres::Client::connect(&db.url(), postgres::NoTls).expect("the host user");
    owner.batch_execute("CREATE TABLE t (k TEXT PRIMARY KEY)").expect("table t");
    let url = db.url().replace("127.0.0.1:5432", &format!("127.0.0.1:{port}"));
    Some((format!("[channels.x]\nkind = \"sql\"\nurl = \"{url}\"\n"), Box::new(Pg(db))))
}

/// What the Redis case writes at the key of `tag`.
fn value(tag: &str) -> Vec<u8> {
    format!("value of {tag}").into_bytes()
}

/// The test Redis server.
struct Redis(redis::Connection);

impl Store for Redis {
    fn holds(&mut self, tag: &str) -> bool {
        let value: Option<Vec<u8>> =
            redis::cmd("GET").arg(format!("conformance-faults/{tag}")).query(&mut self.0).expect("get");
        value == Some(self::value(tag))
    }
}

fn redis(port: u16) -> Option<Opened> {
    let conn = crate::kv::redis_server()?;
    Some((format!("[channels.x]\nkind = \"kv\"\nurl = \"redis://127.0.0.1:{port}\"\n"), Box::new(Redis(conn))))
}

fn redis_journaled(port: u16) -> Option<Opened> {
    let (lines, store) = redis(port)?;
    Some((format!("{lines}outbox = \"main\"\n"), store))
}

/// The deadline of the probe's calls in these cases.
const DEADLINE: Duration = Duration::from_millis(1500);

/// Whether `answer` is a scope that ended with an error, saving nothing.
fn failed(answer: &str) -> bool {
    !answer.starts_with("saved: ")
}

/// See the module docs.
#[test]
fn every_networked_kind_survives_a_server_that_stops_answering_or_breaks_at_commit() {
    for kind in NET_KINDS {
        let stall = Stall::to(kind.server);
        let Some((lines, mut store)) = (kind.open)(stall.port()) else { continue };
        let f = Fixture::new(&["probe"]);
        f.write_manifest(
            "probe",
            &format!(
                "[channels.main]\nreads = [\"products\"]\ninserts = [\"products\"]\n[channels.x]\n{}\n\
                 [limits]\ndeadline-ms = {}\n",
                kind.grant,
                DEADLINE.as_millis()
            ),
        );
        let main = format!("[channels.main]\nkind = \"sql\"\nurl = \"sqlite://{}\"\n\n", f.db_path().display());
        let host = Arc::new(host_on(&f, &format!("{main}{lines}")));
        let name = kind.name;
        let tag = |n: u32| format!("t{n}-{}", uuid::Uuid::new_v4().simple());
        let (read, args) = (kind.read)();
        // Warm: the channel answers, and whatever it sets up once is done.
        assert!(!failed(&told(&host, "probe", read, &args)), "{name}: the first read");
        let first = tag(0);
        let (write, wargs) = (kind.write)(&first);
        let answer = told(&host, "probe", write, &wargs);
        assert!(!failed(&answer) && store.holds(&first), "{name}: the first write: {answer}");

        never_answers(&host, &stall, kind, &mut *store, &tag(1));
        breaks_at_commit(&host, &f, &stall, kind, &mut *store, &tag(2));
        killed_mid_commit(&f, &stall, kind, &mut *store, &tag(4));

        // And the channel serves the next save.
        let next = tag(3);
        let (write, wargs) = (kind.write)(&next);
        let answer = told(&host, "probe", write, &wargs);
        assert!(!failed(&answer) && store.holds(&next), "{name}: the write after the faults: {answer}");
        if kind.journaled {
            let pending = "SELECT count(*) FROM sluice_outbox WHERE channel = 'x' AND state = 'pending'";
            let left: i64 = f.db().query_row(pending, [], |r| r.get(0)).expect("pending rows");
            assert_eq!(left, 0, "{name}: a commit made by its save is still pending in the journal");
        }
        eprintln!("conformance: {name}: faults passed");
    }
}

/// The server stops answering: see the module docs.
fn never_answers(host: &Host, stall: &Stall, kind: &NetKind, store: &mut dyn Store, tag: &str) {
    let name = kind.name;
    let (read, args) = (kind.read)();
    let (write, wargs) = (kind.write)(tag);
    stall.freeze();
    std::thread::scope(|threads| {
        let reading = threads.spawn(|| {
            let started = Instant::now();
            (told(host, "probe", read, &args), started.elapsed())
        });
        // Meanwhile a scope on another channel is served, at once.
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let other = told(host, "probe", "query", &[s("main"), s("SELECT count(*) FROM products"), Val::List(vec![])]);
        assert!(!failed(&other), "{name}: a scope on main while x hangs: {other}");
        assert!(started.elapsed() < Duration::from_millis(500), "{name}: main took {:?}", started.elapsed());
        let (answer, took) = reading.join().expect("the read");
        eprintln!("conformance: {name}: a read of a server that never answers ended in {took:?}: {answer}");
        assert!(failed(&answer) && answer.contains("deadline"), "{name}: {answer}");
        assert!(took < DEADLINE + Duration::from_secs(1), "{name}: the read took {took:?}");
    });
    let started = Instant::now();
    let answer = told(host, "probe", write, &wargs);
    let took = started.elapsed();
    eprintln!("conformance: {name}: a save to a server that never answers ended in {took:?}: {answer}");
    assert!(failed(&answer) && !answer.contains("partially"), "{name}: {answer}");
    // The deadline, or the host's own wait (5 s) where the save waits on
    // the server outside any service's call (Redis locks its keys).
    assert!(took < Duration::from_secs(7), "{name}: the save took {took:?}");
    stall.thaw();
    assert!(!store.holds(tag), "{name}: a save that failed left its write");
    // Back: connections that went unanswered are not used again.
    let started = Instant::now();
    let mut answer = told(host, "probe", read, &args);
    while failed(&answer) && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        answer = told(host, "probe", read, &args);
    }
    assert!(!failed(&answer), "{name}: the channel after the server answers again: {answer}");
}

/// The request that carries the commit never reaches the server, after
/// `main` committed: see the module docs.
fn breaks_at_commit(host: &Arc<Host>, f: &Fixture, stall: &Stall, kind: &NetKind, store: &mut dyn Store, tag: &str) {
    let name = kind.name;
    stall.cut_on(&(kind.commit)(tag));
    let mut scope = host.scope();
    let row = Val::List(vec![text_value(tag), Val::Variant("integer".into(), Some(Box::new(Val::S64(1))))]);
    let columns = Val::List(vec![s("name"), s("price_cents")]);
    scope.call("probe", "insert", &[s("main"), s("products"), columns, row]).expect("insert into main");
    let (write, wargs) = (kind.write)(tag);
    scope.call("probe", write, &wargs).expect("the write to x");
    let e = scope.save().expect_err("the commit of x was cut");
    assert!(stall.was_cut(), "{name}: the commit never passed the proxy: {e}");
    assert!(e.partially_applied(), "{name}: {e}");
    let said = e.to_string();
    assert!(said.contains("main") && said.contains("not run again"), "{name}: {said}");
    let kept: i64 =
        f.db().query_row("SELECT count(*) FROM products WHERE name = ?1", [tag], |r| r.get(0)).expect("main");
    assert_eq!(kept, 1, "{name}: main committed before x");
    assert!(!store.holds(tag), "{name}: the cut commit applied on x");
    eprintln!("conformance: {name}: a commit cut after main committed: {said}");
    if kind.journaled {
        assert!(said.contains("the relay makes its writes"), "{name}: {said}");
        let started = Instant::now();
        crate::support::relay_until(host, || store.holds(tag), Duration::from_secs(20));
        eprintln!("conformance: {name}: the relay made the cut commit {:?} later", started.elapsed());
        let sql = "SELECT state FROM sluice_outbox WHERE channel = 'x' ORDER BY created_ms DESC LIMIT 1";
        let state: String = f.db().query_row(sql, [], |r| r.get(0)).expect("the journal's row");
        assert_eq!(state, "delivered", "{name}");
    }
}

/// A `sluice call` whose commit on `x` is held is killed there: see the
/// module docs.
fn killed_mid_commit(f: &Fixture, stall: &Stall, kind: &NetKind, store: &mut dyn Store, tag: &str) {
    let name = kind.name;
    stall.hold_on(&(kind.commit)(tag));
    let (write, wargs) = (kind.write)(tag);
    let args: Vec<String> = wargs.iter().map(|v| sluice_host::values::to_json(v).to_string()).collect();
    let mut call = f
        .command()
        .arg("--config")
        .arg(f.dir.path().join("sluice.toml"))
        .arg("call")
        .arg(format!("probe.{write}"))
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sluice call");
    let started = Instant::now();
    while !stall.was_cut() {
        assert!(started.elapsed() < Duration::from_secs(30), "{name}: the call never reached its commit");
        assert!(call.try_wait().expect("wait").is_none(), "{name}: the call ended before its commit");
        std::thread::sleep(Duration::from_millis(20));
    }
    call.kill().expect("kill");
    call.wait().expect("wait");
    stall.release();
    // The next host starts, on the same stores.
    let mut options = f.options();
    options.config = Some(f.dir.path().join("sluice.toml"));
    let next = Arc::new(Host::open(&options).expect("a host after the kill"));
    if kind.journaled {
        let started = Instant::now();
        crate::support::relay_until(&next, || store.holds(tag), Duration::from_secs(20));
        eprintln!(
            "conformance: {name}: killed mid-commit; the next host's relay made it {:?} later",
            started.elapsed()
        );
    } else {
        std::thread::sleep(Duration::from_millis(500));
        assert!(!store.holds(tag), "{name}: a commit held when its host was killed applied on x");
        eprintln!("conformance: {name}: killed mid-commit; x kept nothing of it");
    }
}
