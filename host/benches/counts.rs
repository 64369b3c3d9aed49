//! Instruction counts of the hot paths, under valgrind's callgrind: unlike
//! times, they repeat on a noisy machine, so CI can catch a regression
//! (`just counts`, which `.ci/run` runs).
//!
//! - `b1_scope`: a new scope, instantiating `probe`, one call, drop (B1);
//! - `b2_enqueue`, `b2_echo`: one host call, `to.insert` and
//!   `from.query("SELECT ?1")` with an empty blob, from inside a guest loop
//!   (B2): the count of a loop of 200 minus that of an empty loop, / 200;
//! - `b3_logic_2`, `b3_logic_20`: `orders.place` (with the
//!   `inventory.reserve` it calls) once and ten times in a scope, dropped
//!   unsaved (B3);
//! - `b3_bare_2`, `b3_bare_20`, `b3_native_20`: the same orders on the bare host
//!   (`native/bare.rs`: the components with the least host there can be)
//!   and by the native port (`native/orders.rs`), so that B3's gap splits
//!   into Sluice's part and what the components cost by being components;
//! - `b4_save_100`, `b4_save_10000`: saving 100 and 10,000 queued inserts
//!   (B4), and `b4_native_100`, `b4_native_10000`: rusqlite issuing the
//!   same inserts in one transaction on one prepared statement, on the same
//!   database file. Callgrind counts no kernel work, so neither side's
//!   `fsync` is in these: the like-for-like comparison of the work.
//!
//! With no arguments (`cargo bench --bench counts`) it runs itself under
//! callgrind once per measure, prints the counts beside the baseline kept
//! in `host/benches/counts.baseline`, and exits 1 when one grew by more
//! than 10%. `-- --update` rewrites the baseline from this run: a change
//! that costs more must say so by committing the new baseline with it.
//! Only the instructions inside `sluice_counted` are counted (callgrind's
//! `--toggle-collect`), so set-up, compiling and warm-up are left out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_host::Host;
use wasmtime::component::Val;

#[allow(dead_code)]
#[path = "../../tests/e2e/support.rs"]
mod support;

use support::Fixture;

#[allow(dead_code)]
#[path = "native/orders.rs"]
mod native_orders;

#[path = "native/bare.rs"]
mod bare;

/// How much a count may grow over its baseline before the check fails.
const TOLERANCE: f64 = 0.10;
/// Host calls per guest loop in the B2 measures.
const LOOP: u32 = 200;
/// Runs of each measure before counting: caches, pools and lazily built
/// tables reach their steady state.
const WARM: u32 = 3;

/// Every measure: its name and how many times the counted region runs it.
const MEASURES: &[(&str, u32)] = &[
    ("b1_scope", 10),
    ("b2_enqueue", 1),
    ("b2_echo", 1),
    ("b3_logic_2", 5),
    ("b3_logic_20", 2),
    ("b3_bare_2", 5),
    ("b3_bare_20", 2),
    ("b3_native_20", 2),
    ("b4_save_100", 3),
    ("b4_native_100", 3),
    ("b4_save_10000", 1),
    ("b4_native_10000", 1),
];

/// The counted region: callgrind collects only while this runs.
#[inline(never)]
#[unsafe(no_mangle)]
#[expect(unsafe_code, reason = "an unmangled name, for callgrind's --toggle-collect; nothing else exports it")]
pub fn sluice_counted(f: &mut dyn FnMut()) {
    f();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    match args.first().map(String::as_str) {
        Some("--one") => {
            let name = args.get(1).expect("--one NAME [LOOP]");
            let n: u32 = args.get(2).map_or(LOOP, |n| n.parse().expect("LOOP is a number"));
            run_one(name, n);
        }
        Some("--update") => check(true),
        None => check(false),
        Some(other) => {
            eprintln!("counts: unknown argument {other}; usage: counts [--update] | --one NAME [LOOP]");
            std::process::exit(2);
        }
    }
}

/// Runs `measure` `times` times inside the counted region, after warming up.
fn count(times: u32, mut measure: impl FnMut()) {
    count_each(times, || (), |()| measure());
}

/// Runs `measure` on what `set_up` made, `times` times, counting only
/// `measure` (what it is given is dropped outside the counted region),
/// after warming up.
fn count_each<S>(times: u32, mut set_up: impl FnMut() -> S, mut measure: impl FnMut(&mut S)) {
    for _ in 0..WARM {
        measure(&mut set_up());
    }
    for _ in 0..times {
        let mut made = set_up();
        sluice_counted(&mut || measure(&mut made));
    }
}

/// A host over `services` and the example schema, small enough for
/// valgrind: the pooling allocator reserves address space per slot, and
/// valgrind cannot give it the default 256 instances' worth.
fn host(services: &[&str]) -> (Fixture, Host) {
    let fixture = Fixture::new(services);
    fixture.migrate();
    fixture
        .db()
        .execute_batch(
            "CREATE TABLE blobs (data BLOB);
             INSERT INTO products (id, name, price_cents) VALUES (1, 'widget', 250);
             INSERT INTO stock (product_id, on_hand) VALUES (1, 1000000000000);",
        )
        .expect("bench tables");
    let mut options = fixture.options();
    options.runtime.max_instances = 4;
    let host = Host::open(&options).expect("host opens");
    (fixture, host)
}

/// One measure, in this process (under callgrind when `check` runs it).
fn run_one(name: &str, n: u32) {
    let times = MEASURES.iter().find(|(m, _)| *m == name).map(|(_, t)| *t).expect("a measure named in MEASURES");
    match name {
        "b1_scope" => {
            let (_fixture, host) = host(&["probe"]);
            count(times, || {
                let mut scope = host.scope();
                let out = scope.call("probe", "add", &[Val::S32(1), Val::S32(2)]).expect("call");
                assert_eq!(out, [Val::S32(3)]);
            });
        }
        "b2_enqueue" | "b2_echo" => {
            let (_fixture, host) = host(&["bench"]);
            let function = &name[3..];
            let mut scope = host.scope();
            scope.call("bench", "noop", &[]).expect("instantiate");
            count(times, || {
                let out = scope.call("bench", function, &[Val::U32(n), Val::U32(0)]).expect("loop");
                assert_eq!(out, [Val::Result(Ok(Some(Box::new(Val::U32(n)))))]);
            });
        }
        "b3_logic_2" | "b3_logic_20" => {
            let (_fixture, host) = host(&["orders", "inventory"]);
            let places = if name == "b3_logic_2" { 1 } else { 10 };
            let args = [Val::String("ann".into()), Val::S64(1), Val::U32(1)];
            count(times, || {
                let mut scope = host.scope();
                for _ in 0..places {
                    scope.call("orders", "place", &args).expect("place");
                }
                assert_eq!(scope.pending().len(), 2 * places);
            });
        }
        "b3_bare_2" | "b3_bare_20" => {
            let places = if name == "b3_bare_2" { 1 } else { 10 };
            let (_fixture, host) = host(&["orders", "inventory"]);
            let channel = std::sync::Arc::clone(host.channels().get("main").expect("channel main"));
            let bare = bare::BareHost::new(&host.registry(), channel);
            let args = [Val::String("ann".into()), Val::S64(1), Val::U32(1)];
            count(times, || assert_eq!(bare.scope(places, &args), 2 * places as usize));
        }
        "b3_native_20" => {
            let (_fixture, host) = host(&["orders", "inventory"]);
            let channel = host.channels().get("main").expect("channel main").as_ref();
            count(times, || {
                let mut orders = native_orders::Orders::new(channel);
                for _ in 0..10 {
                    orders.place("ann", 1, 1).expect("place");
                }
                assert_eq!(orders.pending().len(), 20);
            });
        }
        "b4_save_100" | "b4_save_10000" => {
            let (_fixture, host) = host(&["bench"]);
            let n = if name.ends_with("_100") { 100 } else { 10_000 };
            let args = [Val::U32(n), Val::String("INSERT INTO blobs (data) VALUES (x'07')".into())];
            let queued = || {
                let mut scope = host.scope();
                scope.call("bench", "execute", &args).expect("queue");
                scope
            };
            // The report is dropped outside the counted region, as B4's
            // criterion bench drops it outside the timing.
            count_each(
                times,
                || (queued(), None),
                |(scope, report)| {
                    *report = Some(scope.save().expect("save"));
                },
            );
        }
        "b4_native_100" | "b4_native_10000" => {
            let (fixture, _host) = host(&["bench"]);
            let mut db = fixture.db();
            let n = if name.ends_with("_100") { 100 } else { 10_000 };
            count(times, || {
                let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).expect("begin");
                {
                    let mut stmt = tx.prepare_cached("INSERT INTO blobs (data) VALUES (x'07')").expect("prepare");
                    for _ in 0..n {
                        stmt.execute([]).expect("insert");
                    }
                }
                tx.commit().expect("commit");
            });
        }
        other => panic!("no measure {other}"),
    }
}

/// The baseline file, `measure = instructions` per line.
fn baseline_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/counts.baseline")
}

fn read_baseline() -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(baseline_path()).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.trim().to_string(), v.trim().replace('_', "").parse().ok()?))
        })
        .collect()
}

/// Instructions per run of `name`, from one callgrind run of this binary
/// (two for the B2 measures, whose empty loop is subtracted).
fn measure(name: &str) -> u64 {
    let times = u64::from(MEASURES.iter().find(|(m, _)| *m == name).map_or(1, |(_, t)| *t));
    if name.starts_with("b2_") {
        let full = callgrind(name, LOOP);
        let empty = callgrind(name, 0);
        full.saturating_sub(empty) / (times * u64::from(LOOP))
    } else {
        callgrind(name, LOOP) / times
    }
}

/// The instructions callgrind counted in `sluice_counted` for one run.
fn callgrind(name: &str, n: u32) -> u64 {
    let out = std::env::temp_dir().join(format!("sluice-counts-{}-{name}-{n}.out", std::process::id()));
    let exe = std::env::current_exe().expect("own path");
    let status = Command::new("valgrind")
        .args(["--tool=callgrind", "--collect-atstart=no", "--toggle-collect=sluice_counted"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(&exe)
        .args(["--one", name, &n.to_string()])
        .env("SLUICE_LOG", "warn")
        .output()
        .unwrap_or_else(|e| {
            eprintln!("counts: cannot run valgrind ({e}); install it (apt-get install valgrind)");
            std::process::exit(2)
        });
    if !status.status.success() {
        eprintln!("counts: {name} failed under valgrind:\n{}", String::from_utf8_lossy(&status.stderr));
        std::process::exit(2);
    }
    let text = std::fs::read_to_string(&out).expect("callgrind output");
    let _ = std::fs::remove_file(&out);
    // `summary:` (or `totals:`) holds the events collected, Ir first.
    text.lines()
        .find_map(|l| l.strip_prefix("summary:").or_else(|| l.strip_prefix("totals:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("a summary line in the callgrind output")
}

/// Counts every measure, compares with the baseline (or rewrites it) and
/// exits 1 when one grew by more than [`TOLERANCE`].
fn check(update: bool) {
    let baseline = read_baseline();
    let mut counts = BTreeMap::new();
    let mut failed = Vec::new();
    println!("| measure | instructions | baseline | change |");
    println!("|---|---|---|---|");
    for (name, _) in MEASURES {
        let now = measure(name);
        counts.insert(name.to_string(), now);
        let (was, change) = match baseline.get(*name) {
            Some(&was) => {
                let change = now as f64 / was as f64 - 1.0;
                if change > TOLERANCE {
                    failed.push(format!("{name}: {now} instructions, {:+.1}% over the baseline {was}", change * 100.0));
                }
                (was.to_string(), format!("{:+.1}%", change * 100.0))
            }
            None => ("none".into(), "new".into()),
        };
        println!("| {name} | {now} | {was} | {change} |");
    }
    if update {
        let mut text = String::from(
            "# Instructions per run of each measure in host/benches/counts.rs, from callgrind.\n\
             # Rewritten by `just counts --update`; CI fails when a count grows by more than 10%.\n",
        );
        for (name, n) in &counts {
            text.push_str(&format!("{name} = {n}\n"));
        }
        std::fs::write(baseline_path(), text).expect("write the baseline");
        println!("baseline written to {}", baseline_path().display());
        return;
    }
    if !failed.is_empty() {
        eprintln!("counts: more instructions than the baseline allows (+{:.0}%):", TOLERANCE * 100.0);
        for f in &failed {
            eprintln!("  {f}");
        }
        eprintln!(
            "If the cost is intended, run `just counts --update` and commit host/benches/counts.baseline with the change."
        );
        std::process::exit(1);
    }
    let missing: Vec<_> = MEASURES.iter().filter(|(m, _)| !baseline.contains_key(*m)).map(|(m, _)| *m).collect();
    if !missing.is_empty() {
        eprintln!("counts: no baseline for {missing:?}; run `just counts --update`");
        std::process::exit(1);
    }
}
