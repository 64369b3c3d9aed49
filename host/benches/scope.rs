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
//! - B4 save: 1, 100 and 10 000 queued inserts applied in one transaction,
//!   against the same statements issued directly with rusqlite.
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

/// B1: scope, instantiate, one call, drop.
fn scope_overhead(c: &mut Criterion) {
    let bench = bench_host(&["probe"]);
    let host = &bench.host;
    let once = || {
        let mut scope = host.scope();
        let out = scope.call("probe", "add", &[Val::S32(1), Val::S32(2)]).expect("call");
        assert_eq!(out, [Val::S32(3)]);
    };
    let mut group = c.benchmark_group("b1_scope");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1_thread", |b| b.iter(once));
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
    let host = &bench.host;
    let db = bench.fixture.db_path();
    let mut group = c.benchmark_group("b4_save");
    for n in [1usize, 100, 10_000] {
        group.throughput(Throughput::Elements(n as u64));
        if n == 10_000 {
            group.sample_size(10).measurement_time(Duration::from_secs(10));
        }
        let args = [Val::U32(n as u32), Val::String(INSERT.into())];
        group.bench_with_input(BenchmarkId::new("sluice", n), &n, |b, _| {
            b.iter_batched(
                || {
                    let mut scope = host.scope();
                    scope.call("bench", "execute", &args).expect("queue");
                    scope
                },
                // The scope is dropped after the timing: B1 measures that part.
                |mut scope| {
                    let report = scope.save().expect("save");
                    (scope, report)
                },
                BatchSize::PerIteration,
            )
        });
        let mut conn = rusqlite::Connection::open(&db).expect("open db");
        conn.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
        group.bench_with_input(BenchmarkId::new("rusqlite", n), &n, |b, &n| {
            b.iter(|| {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).expect("begin");
                {
                    let mut stmt = tx.prepare_cached(INSERT).expect("prepare");
                    for _ in 0..n {
                        stmt.execute([]).expect("insert");
                    }
                }
                tx.commit().expect("commit");
            })
        });
    }
    group.finish();
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
fn parity(c: &mut Criterion) {
    let bench = bench_host(&["orders", "inventory"]);
    let db = bench.fixture.db();
    db.execute_batch(
        "INSERT INTO products (id, name, price_cents) VALUES (1, 'widget', 250);
         INSERT INTO stock (product_id, on_hand) VALUES (1, 1000000000000);",
    )
    .expect("product and stock");
    let host = &bench.host;
    let channel = host.channels().get("main").expect("channel main").as_ref();
    let args = [Val::String("ann".into()), Val::S64(1), Val::U32(1)];
    let component = |places: u32, save: bool| {
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
        let mut orders = native_orders::Orders::new(channel, 0);
        for _ in 0..places {
            orders.place("ann", 1, 1).expect("place");
        }
        assert_eq!(orders.pending().len(), 2 * places as usize);
        if save {
            orders.save().expect("save");
        }
    };
    let mut group = c.benchmark_group("b3_parity");
    for places in [1u32, 10] {
        let commands = 2 * places;
        for (stage, save) in [("logic", false), ("saved", true)] {
            let id = |who: &str| BenchmarkId::new(format!("{stage}_{who}"), commands);
            group.bench_function(id("component"), |b| b.iter_custom(|n| cpu_time(n, || component(places, save))));
            group.bench_function(id("native"), |b| b.iter_custom(|n| cpu_time(n, || native(places, save))));
        }
    }
    group.finish();
}

criterion_group!(benches, scope_overhead, host_calls, parity, save);
criterion_main!(benches);
