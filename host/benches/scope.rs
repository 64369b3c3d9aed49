//! Criterion benchmarks of the host (`just bench`), each beside its baseline
//! so the report can give ratios measured in the same run:
//!
//! - B1 scope overhead: a new scope, instantiating a small service, one call,
//!   drop; on one thread, and as throughput on two.
//! - B2 host calls: `to.insert` and `from.query` round trips from inside a
//!   guest loop, with payloads of 0 B, 64 B, 4 KiB and 64 KiB.
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

criterion_group!(benches, scope_overhead, host_calls, save);
criterion_main!(benches);
