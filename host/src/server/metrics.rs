//! Counters per service, rendered for `GET /metrics` in the Prometheus text
//! format: calls, errors by kind, traps, limit breaches by limit, call
//! durations (a histogram) and commands applied.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::host::Host;

/// Upper bounds of the duration histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How one call ended, for counting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Saved, dry-run, or (wasi-http) answered below 400.
    Ok,
    /// Not started or not saved; the error kind (a [`super::Problem`] kind).
    Error(&'static str),
}

#[derive(Default)]
struct PerService {
    calls: u64,
    errors: BTreeMap<&'static str, u64>,
    traps: u64,
    breaches: BTreeMap<String, u64>,
    buckets: [u64; BUCKETS.len()],
    seconds: f64,
    applied: u64,
    conflicts: u64,
    retries: u64,
}

/// The server's counters. One short lock per recorded call.
#[derive(Default)]
pub struct Metrics {
    services: Mutex<BTreeMap<String, PerService>>,
}

impl Metrics {
    /// Counts one call of `service` that took `elapsed`.
    pub fn call(&self, service: &str, outcome: &Outcome, elapsed: Duration) {
        let mut map = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        let m = entry(&mut map, service);
        m.calls += 1;
        let seconds = elapsed.as_secs_f64();
        m.seconds += seconds;
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            m.buckets[i] += 1;
        }
        if let Outcome::Error(kind) = outcome {
            *m.errors.entry(kind).or_default() += 1;
            if *kind == "trap" {
                m.traps += 1;
            }
        }
    }

    /// Counts a limit broken by `service` (which may be a service the
    /// called one called).
    pub fn breach(&self, service: &str, limit: &str) {
        let mut map = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        *entry(&mut map, service).breaches.entry(limit.to_string()).or_default() += 1;
    }

    /// Counts commands applied at a save, by the service that queued each.
    pub fn applied<'a>(&self, services: impl Iterator<Item = &'a str>) {
        let mut map = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        for service in services {
            entry(&mut map, service).applied += 1;
        }
    }

    /// Counts conflicts at save, by the service whose read changed or whose
    /// command missed its count. A request's scope that ran again counts a
    /// retry for each conflict but the one it answered with.
    pub fn conflicts<'a>(&self, services: impl Iterator<Item = &'a str>) {
        let mut map = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        for service in services {
            entry(&mut map, service).conflicts += 1;
        }
    }

    /// Counts `n` runs again of a scope that `service` was called in.
    pub fn retried(&self, service: &str, n: usize) {
        if n > 0 {
            let mut map = self.services.lock().unwrap_or_else(PoisonError::into_inner);
            entry(&mut map, service).retries += n as u64;
        }
    }

    /// Everything, in the Prometheus text exposition format; `in_flight` is
    /// the number of scopes running now.
    pub fn render(&self, host: &Host, in_flight: usize) -> String {
        let map = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, lines: &dyn Fn(&str, &PerService) -> Vec<String>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (service, m) in map.iter() {
                for line in lines(service, m) {
                    let _ = writeln!(out, "{name}{line}");
                }
            }
        };
        let one = |value: fn(&PerService) -> u64| {
            move |s: &str, m: &PerService| vec![format!("{{service=\"{s}\"}} {}", value(m))]
        };
        family(
            "sluice_calls_total",
            "counter",
            "Calls into a service from a request, one scope each.",
            &one(|m| m.calls),
        );
        family(
            "sluice_call_errors_total",
            "counter",
            "Calls that were not saved, by kind (arguments, service-error, denied, trap, limit, save, unavailable).",
            &|s, m| m.errors.iter().map(|(k, n)| format!("{{service=\"{s}\",kind=\"{k}\"}} {n}")).collect(),
        );
        family("sluice_traps_total", "counter", "Calls that ended in a guest trap.", &one(|m| m.traps));
        family(
            "sluice_limit_breaches_total",
            "counter",
            "Limits broken, by the service that broke them and the limit.",
            &|s, m| m.breaches.iter().map(|(l, n)| format!("{{service=\"{s}\",limit=\"{l}\"}} {n}")).collect(),
        );
        family(
            "sluice_call_duration_seconds",
            "histogram",
            "Time from the start of a scope to its answer (call and save).",
            &|s, m| {
                let mut cumulative = 0;
                let mut lines: Vec<String> = BUCKETS
                    .iter()
                    .zip(m.buckets)
                    .map(|(bound, n)| {
                        cumulative += n;
                        format!("_bucket{{service=\"{s}\",le=\"{bound}\"}} {cumulative}")
                    })
                    .collect();
                lines.push(format!("_bucket{{service=\"{s}\",le=\"+Inf\"}} {}", m.calls));
                lines.push(format!("_sum{{service=\"{s}\"}} {}", m.seconds));
                lines.push(format!("_count{{service=\"{s}\"}} {}", m.calls));
                lines
            },
        );
        family(
            "sluice_commands_applied_total",
            "counter",
            "Commands applied at save, by the service that queued them.",
            &one(|m| m.applied),
        );
        family(
            "sluice_conflicts_total",
            "counter",
            "Saves that were a conflict (a read changed, or a command missed its expected count), by the service \
             whose read or command it was.",
            &one(|m| m.conflicts),
        );
        family(
            "sluice_retries_total",
            "counter",
            "Runs again of a scope whose save was a conflict, by the service the request called.",
            &one(|m| m.retries),
        );
        drop(map);
        let registry = host.registry();
        let gauges = [
            ("sluice_services_loaded", "Services loaded now.", registry.services().count()),
            (
                "sluice_services_failed",
                "Files in the services directory that failed to load.",
                registry.failures().len(),
            ),
            ("sluice_scopes_in_flight", "Scopes running now.", in_flight),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        let reloads = host.reloads();
        let _ = writeln!(
            out,
            "# HELP sluice_reloads_total Reloads of the services directory.\n# TYPE sluice_reloads_total counter\nsluice_reloads_total {reloads}"
        );
        let relays = host.channels().relays();
        for (name, help, count) in [
            (
                "sluice_outbox_delivered_total",
                "Outbox rows (messages, requests) delivered by this host, by channel.",
                (|c| &c.delivered) as fn(&crate::channels::outbox::relay::Counts) -> &std::sync::atomic::AtomicU64,
            ),
            ("sluice_outbox_failed_total", "Delivery tries that failed, by channel.", |c| &c.failed),
            ("sluice_outbox_dead_total", "Outbox rows that went dead after their tries, by channel.", |c| &c.dead),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for r in relays {
                let n = count(&r.counts).load(std::sync::atomic::Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{channel=\"{}\"}} {n}", r.channel);
            }
        }
        process_metrics(&mut out);
        out
    }
}

/// The standard `process_*` metrics Prometheus clients export, read from
/// `/proc/self` (Linux; elsewhere they are left out): CPU seconds, resident
/// and virtual memory, open file descriptors, threads and start time.
fn process_metrics(out: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let Some(fields) = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect::<Vec<_>>()) else {
        return;
    };
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    // USER_HZ is 100 on every Linux this runs on; the page size is 4 KiB.
    let ticks = 100.0;
    let page = 4096.0;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ").and_then(|b| b.trim().parse::<f64>().ok())));
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).ok();
    let metrics = [
        ("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.", cpu_seconds()),
        ("process_resident_memory_bytes", "gauge", "Resident memory size, in bytes.", field(24).map(|p| p * page)),
        ("process_virtual_memory_bytes", "gauge", "Virtual memory size, in bytes.", field(23)),
        ("process_open_fds", "gauge", "Open file descriptors.", fds.map(|n| n as f64)),
        ("process_threads", "gauge", "Threads.", field(20)),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
            field(22).zip(boot).map(|(t, b)| b + t / ticks),
        ),
    ];
    for (name, kind, help, value) in metrics {
        if let Some(value) = value {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
    }
}

/// User and system CPU time of the whole process (every thread, running or
/// ended), in seconds, to the microsecond. `/proc/self/stat` counts it in
/// 10 ms ticks, so a process that had used less than one read 0.
#[expect(unsafe_code, reason = "getrusage writes into a struct this function owns")]
fn cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: RUSAGE_SELF is a valid target and `usage` is a writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: getrusage returned 0, so it filled `usage` (and it was zeroed).
    let usage = unsafe { usage.assume_init() };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

/// The counters of `service`, created on first use without allocating a
/// key for a service already counted.
fn entry<'a>(map: &'a mut BTreeMap<String, PerService>, service: &str) -> &'a mut PerService {
    if !map.contains_key(service) {
        map.insert(service.to_string(), PerService::default());
    }
    map.get_mut(service).expect("inserted above")
}
