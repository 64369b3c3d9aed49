//! Criterion benchmarks of the host (`just bench`), each beside its baseline
//! so the report can give ratios measured in the same run:
//!
//! - B1 scope overhead: a new scope, instantiating a small service, one call,
//!   drop; on one thread, and as throughput on two.
//! - B2 host calls: `to.insert` and `from.query` round trips from inside a
//!   guest loop, with payloads of 0 B, 64 B, 4 KiB and 64 KiB.
//! - B3 parity: the example `orders.place` (with the `inventory.reserve`
//!   it calls) as components in a scope against a native Rust port queuing
//!   into the same queue type (`native/orders.rs`), in CPU time per scope.
//! - B7 languages: each port of an example (Python, JavaScript, C) beside
//!   the Rust original, per call (a fresh scope's first call, which
//!   instantiates, and a further call in the same scope), plus one timed
//!   compile of each component, written to `criterion/b7_languages/compile.json`.
//! - B8 replay: a recorded case of `orders.place` replayed with no
//!   database (`sluice test`), beside the same call live on SQLite.
//! - B4 save: 1, 100 and 10 000 queued inserts applied in one transaction,
//!   against the same statements issued directly with rusqlite; and on
//!   PostgreSQL (127.0.0.1:5432, a database of its own), against the
//!   `postgres` crate issuing them in one transaction with one prepared
//!   statement. Without a server the PostgreSQL half is skipped with a
//!   message.
//!
//! They use the components `just guests` builds (`SLUICE_COMPONENTS`, or
//! `target/components`).

use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice_host::Host;
use wasmtime::component::Val;

// The end-to-end tests' fixture: a temp services dir with the built
// components and their manifests, the example schema, the real binary.
#[allow(dead_code)]
#[path = "../../tests/e2e/support.rs"]
mod support;

use support::Fixture;

#[path = "native/orders.rs"]
mod native_orders;

#[path = "native/bare.rs"]
mod bare;

/// A host over `services`, the example schema and a `blobs` table.
struct Bench {
    fixture: Fixture,
    host: Host,
}

fn bench_host(services: &[&str]) -> Bench {
    let fixture = Fixture::new(services);
    fixture.migrate();
    fixture.db().execute("CREATE TABLE blobs (data BLOB)", []).expect("blobs table");
    let host = fixture.host();
    Bench { fixture, host }
}

/// Product 1 at 250 cents, with more stock than any bench can order.
fn stock_a_product(fixture: &Fixture) {
    fixture
        .db()
        .execute_batch(
            "INSERT INTO products (id, name, price_cents) VALUES (1, 'widget', 250);
             INSERT INTO stock (product_id, on_hand) VALUES (1, 1000000000000);",
        )
        .expect("product and stock");
}

/// B1: scope, instantiate, one call, drop.
fn scope_overhead(c: &mut Criterion) {
    let bench = bench_host(&["probe"]);
    let host = &bench.host;
    let once = || {
        let mut scope = host.scope();
        let out = scope.call("probe", "add", &[Val::S32(1), Val::S32(2)]).expect("call");
        assert_eq!(out, [Val::S32(3)]);
    };
    let add = ("test:probe/api@0.1.0", "add", vec![Val::S32(1), Val::S32(2)], 1);
    let mut floor = wasmtime_alone::Floor::new(&host.registry(), &[("probe", Some(add))]);
    // The instance B5's typed call makes (`bench.noop`), alone.
    let noop = ("test:bench/loops@0.1.0", "noop", vec![], 0);
    let mut floor_noop = wasmtime_alone::Floor::new(&host.registry(), &[("bench", Some(noop))]);
    let mut group = c.benchmark_group("b1_scope");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1_thread", |b| b.iter(once));
    group.bench_function("wasmtime_alone", |b| b.iter(|| floor.once()));
    group.bench_function("wasmtime_alone_bench_noop", |b| b.iter(|| floor_noop.once()));
    group.bench_function("2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| (0..iters.div_ceil(2)).for_each(|_| once()));
                }
            });
            start.elapsed()
        })
    });
    group.finish();
}

/// The floor of a fresh instance per scope: the same instances made and
/// dropped by wasmtime alone. The same engine (pooling allocator, memory
/// reset, epochs), the same compiled components, one store with a WASI
/// context like a scope's (two memory pipes), each service's `init` and
/// `dispose` hooks when it exports them and any call asked for; every
/// import but WASI is a trap, and there is no scope, queue, budget or log.
/// B1 minus this is what Sluice adds; no scope of these services can cost
/// less than this.
mod wasmtime_alone {
    use sluice_host::registry::Registry;
    use wasmtime::component::types::ComponentItem;
    use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker, ResourceTable, Val};
    use wasmtime::{Engine, Store};
    use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
    use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

    const LIFECYCLE: &str = "sluice:service/lifecycle@0.1.0";

    struct State {
        wasi: WasiCtx,
        table: ResourceTable,
    }

    impl WasiView for State {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
        }
    }

    /// A function to call: its export, arguments and how many results.
    type Call = (ComponentExportIndex, Vec<Val>, usize);

    /// A call asked for by name: the interface, the function, its
    /// arguments and how many results.
    pub type Asked<'a> = (&'a str, &'a str, Vec<Val>, usize);

    pub struct Floor {
        engine: Engine,
        instances: Vec<(InstancePre<State>, Vec<Call>)>,
    }

    impl Floor {
        /// For each `(service, call)`: its hooks, with `call` between them.
        pub fn new(registry: &Registry, services: &[(&str, Option<Asked<'_>>)]) -> Floor {
            let engine = registry.runtime().engine().clone();
            let instances = services
                .iter()
                .map(|(service, call)| {
                    let path = super::support::components().join(format!("{service}.wasm"));
                    let component = Component::from_file(&engine, &path).expect("the component compiles");
                    let pre = linker(&engine, &component).instantiate_pre(&component).expect("pre-instantiates");
                    let index = |interface: &str, name: &str| {
                        let iface = component.get_export_index(None, interface)?;
                        component.get_export_index(Some(&iface), name)
                    };
                    let mut calls: Vec<Call> = index(LIFECYCLE, "init").map(|i| (i, vec![], 0)).into_iter().collect();
                    if let Some((interface, name, args, results)) = call {
                        calls.push((index(interface, name).expect("the function is exported"), args.clone(), *results));
                    }
                    calls.extend(index(LIFECYCLE, "dispose").map(|i| (i, vec![], 0)));
                    (pre, calls)
                })
                .collect();
            Floor { engine, instances }
        }

        /// A store, each instance and its calls, drop.
        pub fn once(&mut self) {
            let wasi = WasiCtx::builder()
                .stdout(MemoryOutputPipe::new(1 << 16))
                .stderr(MemoryOutputPipe::new(1 << 16))
                .build();
            let mut store = Store::new(&self.engine, State { wasi, table: ResourceTable::new() });
            store.set_epoch_deadline(1 << 20);
            for (pre, calls) in &self.instances {
                let instance = pre.instantiate(&mut store).expect("instantiates");
                for (index, args, results) in calls {
                    let func = instance.get_func(&mut store, *index).expect("the function is there");
                    let mut out = vec![Val::Bool(false); *results];
                    func.call(&mut store, args, &mut out).expect("the call returns");
                }
            }
        }
    }

    /// WASI as a scope has it; every other import (Sluice's, other
    /// services') traps. Not
    /// `define_unknown_imports_as_traps`: it would also shadow the WASI
    /// functions that a newer WASI links by semver.
    fn linker(engine: &Engine, component: &Component) -> Linker<State> {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("WASI links");
        for (name, item) in component.component_type().imports(engine) {
            let ComponentItem::ComponentInstance(interface) = item.ty else { continue };
            if name.starts_with("wasi:") {
                continue;
            }
            let mut instance = linker.instance(name).expect("an instance in the linker");
            for (function, item) in interface.exports(engine) {
                if matches!(item.ty, ComponentItem::ComponentFunc(_)) {
                    instance
                        .func_new(function, |_, _, _, _| Err(wasmtime::Error::msg("no host here")))
                        .expect("a trap links");
                }
            }
        }
        linker
    }
}

/// Calls per guest loop in B2.
const LOOP: u32 = 1000;

/// B2: host calls from inside a guest loop; time per iteration / LOOP is
/// the cost of one call.
fn host_calls(c: &mut Criterion) {
    let bench = bench_host(&["bench"]);
    let host = &bench.host;
    let mut group = c.benchmark_group("b2_host_call");
    group.throughput(Throughput::Elements(u64::from(LOOP)));
    for bytes in [0u32, 64, 4 << 10, 64 << 10] {
        for function in ["enqueue", "echo"] {
            group.bench_with_input(BenchmarkId::new(function, bytes), &bytes, |b, &bytes| {
                b.iter_batched(
                    || {
                        let mut scope = host.scope();
                        scope.call("bench", "noop", &[]).expect("instantiate");
                        scope
                    },
                    |mut scope| {
                        let out = scope.call("bench", function, &[Val::U32(LOOP), Val::U32(bytes)]).expect("loop");
                        assert_eq!(out, [Val::Result(Ok(Some(Box::new(Val::U32(LOOP)))))]);
                        scope
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
    group.finish();
}

/// The statement B4 queues and issues natively.
const INSERT: &str = "INSERT INTO blobs (data) VALUES (x'07')";

/// B4: applying N queued commands at save, against rusqlite doing the same.
fn save(c: &mut Criterion) {
    let bench = bench_host(&["bench"]);
    // rusqlite writes a file of its own, in the same WAL mode. On one shared
    // file each side's commits made the other's connection drop its page
    // cache and pay for checkpoints it did not cause, so whichever side ran
    // second lost: Sluice's save of 10,000 measured 0.27x rusqlite's in one
    // run and 2.7x in the next.
    let mut conn = rusqlite::Connection::open(bench.fixture.dir.path().join("native.db")).expect("open db");
    conn.pragma_update(None, "journal_mode", "wal").expect("WAL");
    conn.execute("CREATE TABLE blobs (data BLOB)", []).expect("blobs table");
    let native = |n: usize| {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).expect("begin");
        {
            let mut stmt = tx.prepare_cached(INSERT).expect("prepare");
            for _ in 0..n {
                stmt.execute([]).expect("insert");
            }
        }
        tx.commit().expect("commit");
    };
    saves(c, &bench.host, INSERT, ("sluice", "rusqlite"), (Clock::ThreadCpu, Duration::from_secs(10)), native);
}

/// How a B4 group times a save.
#[derive(Clone, Copy)]
enum Clock {
    /// Elapsed time: for a server in another process (PostgreSQL), whose
    /// work this process's CPU time does not see.
    Wall,
    /// This thread's CPU time: for SQLite, which works in this thread. The
    /// wait for the disk is left out, but the kernel's work in each commit's
    /// `fsync` is in it; both sides' commits are spaced alike (see
    /// [`saves`]), so that work is alike too.
    ThreadCpu,
}

impl Clock {
    fn now(self) -> Duration {
        static START: std::sync::LazyLock<std::time::Instant> = std::sync::LazyLock::new(std::time::Instant::now);
        match self {
            Clock::Wall => START.elapsed(),
            Clock::ThreadCpu => thread_cpu(),
        }
    }
}

/// One B4 group: for 1, 100 and 10 000 commands, a scope whose `bench`
/// service queued `statement` that many times is saved (`labels.0`), and
/// `native(n)` issues the same statements (`labels.1`), both timed by
/// `clock`.
fn saves(
    c: &mut Criterion,
    host: &Host,
    statement: &str,
    labels: (&str, &str),
    (clock, longest): (Clock, Duration),
    mut native: impl FnMut(usize),
) {
    let mut group = c.benchmark_group("b4_save");
    for n in [1usize, 100, 10_000] {
        group.throughput(Throughput::Elements(n as u64));
        if n == 10_000 {
            group.sample_size(10).measurement_time(longest);
        }
        let args = [Val::U32(n as u32), Val::String(statement.into())];
        group.bench_with_input(BenchmarkId::new(labels.0, n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let mut scope = host.scope();
                    scope.call("bench", "execute", &args).expect("queue");
                    let start = clock.now();
                    let report = scope.save().expect("save");
                    spent += clock.now() - start;
                    // The scope is dropped after the timing: B1 measures that part.
                    drop((scope, report));
                }
                spent
            })
        });
        // The native side's commits are spaced as Sluice's are: before each,
        // untimed, the same queueing a Sluice save waits for (a scope that
        // queues `n` statements, dropped unsaved). Back to back, its
        // commits met a disk still writing the one before, and the fsync
        // regimes of the two sides differed.
        group.bench_with_input(BenchmarkId::new(labels.1, n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let mut gap = host.scope();
                    gap.call("bench", "execute", &args).expect("queue");
                    drop(gap);
                    let start = clock.now();
                    native(n);
                    spent += clock.now() - start;
                }
                spent
            })
        });
    }
    group.finish();
}

/// The statement B4 queues and issues natively on PostgreSQL.
const PG_INSERT: &str = "INSERT INTO blobs (data) VALUES ('\\x07'::bytea)";
/// The server B4 on PostgreSQL uses.
const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// B4 on PostgreSQL: applying N queued commands at save, against the
/// `postgres` crate issuing the same statements in one transaction.
fn save_postgres(c: &mut Criterion) {
    let mut admin = match postgres::Client::connect(&format!("{PG_SERVER}/test"), postgres::NoTls) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("skipping B4 on PostgreSQL: no server at {PG_SERVER}/test ({e})");
            return;
        }
    };
    let name = format!("sluice_bench_{}", std::process::id());
    // Two statements: neither may run inside the implicit transaction of
    // a batch.
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).expect("drop the bench database");
    admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create the bench database");
    let url = format!("{PG_SERVER}/{name}");
    let mut native = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    native.batch_execute("CREATE TABLE blobs (data BYTEA)").expect("blobs table");
    let fixture = Fixture::new(&["bench"]);
    let config = fixture.dir.path().join("sluice.toml");
    std::fs::write(&config, format!("[channels.main]\nkind = \"sql\"\nurl = \"{url}\"\n")).expect("config");
    let mut options = fixture.options();
    options.config = Some(config);
    let host = Host::open(&options).expect("host on PostgreSQL");
    let issue = |n: usize| {
        let mut tx = native.transaction().expect("begin");
        let stmt = tx.prepare(PG_INSERT).expect("prepare");
        for _ in 0..n {
            tx.execute(&stmt, &[]).expect("insert");
        }
        tx.commit().expect("commit");
    };
    saves(c, &host, PG_INSERT, ("sluice-postgres", "postgres"), (Clock::Wall, Duration::from_secs(20)), issue);
    drop((host, native));
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
}

/// The CPU time this thread has used: B3 compares CPU time per scope, which
/// a busy second core does not inflate the way it inflates wall time.
#[expect(unsafe_code, reason = "clock_gettime into a timespec this function owns")]
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant
    // every Linux supports.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec.unsigned_abs(), ts.tv_nsec.unsigned_abs() as u32)
}

/// Times `iters` runs of `f` in this thread's CPU time.
fn cpu_time(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = thread_cpu();
    for _ in 0..iters {
        f();
    }
    thread_cpu() - start
}

/// B3: the example `orders.place` called `places` times in one scope (two
/// commands each: the stock reservation and the order), as components and
/// as the native port; first the logic alone (the scope is dropped unsaved),
/// then with the save (two rounds: the orders' `placed` events come second).
/// `component` runs on a serializable host (its stock read is kept and run
/// again at save), `unchecked` on a read-committed one (nothing is kept).
fn parity(c: &mut Criterion) {
    let bench = bench_host(&["orders", "inventory"]);
    stock_a_product(&bench.fixture);
    let mut options = bench.fixture.options();
    options.runtime.isolation = sluice_host::reads::Isolation::ReadCommitted;
    let unchecked = Host::open(&options).expect("read-committed host");
    let host = &bench.host;
    let channel = host.channels().get("main").expect("channel main").as_ref();
    let args = [Val::String("ann".into()), Val::S64(1), Val::U32(1)];
    let component = |host: &Host, places: u32, save: bool| {
        let mut scope = host.scope();
        for _ in 0..places {
            scope.call("orders", "place", &args).expect("place");
        }
        assert_eq!(scope.pending().len(), 2 * places as usize);
        if save {
            scope.save().expect("save");
        }
    };
    let native = |places: u32, save: bool| {
        let mut orders = native_orders::Orders::new(channel);
        for _ in 0..places {
            orders.place("ann", 1, 1).expect("place");
        }
        assert_eq!(orders.pending().len(), 2 * places as usize);
        if save {
            orders.save().expect("save");
        }
    };
    let mut floor = wasmtime_alone::Floor::new(&host.registry(), &[("orders", None), ("inventory", None)]);
    let bare = bare::BareHost::new(&host.registry(), std::sync::Arc::clone(host.channels().get("main").expect("main")));
    let mut group = c.benchmark_group("b3_parity");
    group.bench_function("instances_alone", |b| b.iter_custom(|n| cpu_time(n, || floor.once())));
    for places in [1u32, 10] {
        let commands = 2 * places;
        group.bench_function(BenchmarkId::new("logic_bare", commands), |b| {
            b.iter_custom(|n| cpu_time(n, || assert_eq!(bare.scope(places, &args), commands as usize)));
        });
        for (stage, save) in [("logic", false), ("saved", true)] {
            let id = |who: &str| BenchmarkId::new(format!("{stage}_{who}"), commands);
            group.bench_function(id("component"), |b| {
                b.iter_custom(|n| cpu_time(n, || component(host, places, save)));
            });
            group.bench_function(id("unchecked"), |b| {
                b.iter_custom(|n| cpu_time(n, || component(&unchecked, places, save)));
            });
            group.bench_function(id("native"), |b| b.iter_custom(|n| cpu_time(n, || native(places, save))));
        }
    }
    group.finish();
}

/// B7's pairs: the Rust service, its port, the function and its arguments.
fn language_pairs() -> Vec<(&'static str, &'static str, &'static str, Vec<Val>)> {
    vec![
        ("inventory", "inventory-c", "level", vec![Val::S64(1)]),
        ("products", "products-js", "list", vec![]),
        ("orders", "orders-py", "place", vec![Val::String("ann".into()), Val::S64(1), Val::U32(1)]),
    ]
}

/// B7: per-call time of each port beside its Rust original, and one compile
/// of each (Cranelift, no cache) written for the report.
fn languages(c: &mut Criterion) {
    let pairs = language_pairs();
    if pairs.iter().any(|(_, port, _, _)| !support::components().join(format!("{port}.wasm")).exists()) {
        eprintln!("b7_languages: the ports are not built (just polyglot); skipped");
        return;
    }
    let runtime = sluice_host::runtime::Runtime::new(sluice_host::runtime::RuntimeOptions::default()).expect("runtime");
    let mut compile = serde_json::Map::new();
    for (rust, port, _, _) in &pairs {
        for component in [rust, port] {
            let bytes = std::fs::read(support::components().join(format!("{component}.wasm"))).expect("component");
            let started = Instant::now();
            runtime.compile(&bytes, &runtime.digest(&bytes)).expect("compile");
            let seconds = started.elapsed().as_secs_f64();
            compile.insert(component.to_string(), serde_json::json!({ "bytes": bytes.len(), "compile_s": seconds }));
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/criterion/b7_languages");
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or(dir, |t| std::path::PathBuf::from(t).join("criterion/b7_languages"));
    std::fs::create_dir_all(&dir).expect("criterion dir");
    std::fs::write(dir.join("compile.json"), serde_json::Value::Object(compile).to_string()).expect("compile.json");

    let mut group = c.benchmark_group("b7_languages");
    for (rust, port, function, args) in &pairs {
        for component in [rust, port] {
            let fixture = Fixture::new(&[]);
            for (original, _, _, _) in &pairs {
                let from = if original == rust { component } else { original };
                fixture.add_component_as(from, original);
            }
            fixture.migrate();
            stock_a_product(&fixture);
            let host = fixture.host();
            group.bench_function(BenchmarkId::new(format!("first_call_{component}"), function), |b| {
                b.iter(|| host.scope().call(rust, function, args).expect("call"))
            });
            group.bench_function(BenchmarkId::new(format!("next_call_{component}"), function), |b| {
                b.iter_batched(
                    || {
                        let mut scope = host.scope();
                        scope.call(rust, function, args).expect("instantiate");
                        scope
                    },
                    |mut scope| {
                        scope.call(rust, function, args).expect("call");
                        scope
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
    group.finish();
}

/// B8: a recorded case of `orders.place` (with `inventory.reserve`)
/// replayed with no database, as `sluice test` runs it, beside the same
/// call live on SQLite (saved): scopes per second of each.
fn replay(c: &mut Criterion) {
    let bench = bench_host(&["orders", "inventory", "products"]);
    stock_a_product(&bench.fixture);
    let host = &bench.host;
    let args = [Val::String("ann".into()), Val::S64(1), Val::U32(1)];
    let (ran, case) =
        sluice_host::case::record(host.scope(), "orders", "place", &args, sluice_host::call::Mode::Save, &[]);
    ran.expect("record");
    let case = case.expect("case");
    let registry = host.registry();
    let mut group = c.benchmark_group("b8_replay");
    group.throughput(Throughput::Elements(1));
    group.bench_function("live_sqlite", |b| {
        b.iter(|| sluice_host::call::run(host, "orders", "place", &args, sluice_host::call::Mode::Save).expect("place"))
    });
    group.bench_function("replay", |b| {
        b.iter(|| {
            let replayed = sluice_host::case::replay(&registry, &case).expect("replay");
            assert!(sluice_host::case::diff::compare(&case.expect, &replayed.actual).is_empty());
        })
    });
    group.finish();
}

criterion_group!(benches, scope_overhead, host_calls, parity, save, save_postgres, languages, replay);
criterion_main!(benches);
