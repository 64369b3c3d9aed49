//! Counters per service for `GET /metrics`, kept and rendered by the
//! `prometheus-client` library in the Prometheus text format (0.0.4): calls,
//! errors by kind, traps, limit breaches by limit, call durations (a
//! histogram), commands applied, conflicts and retries; and, read at each
//! scrape, the services loaded, scopes in flight, reloads, outbox deliveries
//! and the standard `process_*` metrics.

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::host::Host;

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByService {
    service: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByKind {
    service: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByLimit {
    service: String,
    limit: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByChannel {
    channel: String,
}

/// A loaded service and the SHA-256 of its component.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Version {
    service: String,
    sha256: String,
}

/// Each new service's duration histogram, with [`BUCKETS`].
#[derive(Debug, Clone, Copy)]
struct Durations;

impl MetricConstructor<Histogram> for Durations {
    fn new_metric(&self) -> Histogram {
        Histogram::new(BUCKETS)
    }
}

/// The server's metrics. The families are shared handles into `registry`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    calls: Family<ByService, Counter>,
    errors: Family<ByKind, Counter>,
    traps: Family<ByService, Counter>,
    breaches: Family<ByLimit, Counter>,
    durations: Family<ByService, Histogram, Durations>,
    applied: Family<ByService, Counter>,
    conflicts: Family<ByService, Counter>,
    retries: Family<ByService, Counter>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::default();
        let calls = Family::<ByService, Counter>::default();
        let errors = Family::<ByKind, Counter>::default();
        let traps = Family::<ByService, Counter>::default();
        let breaches = Family::<ByLimit, Counter>::default();
        let durations = Family::new_with_constructor(Durations);
        let applied = Family::<ByService, Counter>::default();
        let conflicts = Family::<ByService, Counter>::default();
        let retries = Family::<ByService, Counter>::default();
        // Names without `_total`, help without the final stop: the library
        // adds both.
        registry.register("sluice_calls", "Calls into a service from a request, one scope each", calls.clone());
        registry.register(
            "sluice_call_errors",
            "Calls that were not saved, by kind (arguments, service-error, denied, trap, limit, save, unavailable)",
            errors.clone(),
        );
        registry.register("sluice_traps", "Calls that ended in a guest trap", traps.clone());
        registry.register(
            "sluice_limit_breaches",
            "Limits broken, by the service that broke them and the limit",
            breaches.clone(),
        );
        registry.register(
            "sluice_call_duration_seconds",
            "Time from the start of a scope to its answer (call and save)",
            durations.clone(),
        );
        registry.register(
            "sluice_commands_applied",
            "Commands applied at save, by the service that queued them",
            applied.clone(),
        );
        registry.register(
            "sluice_conflicts",
            "Saves that were a conflict (a read changed, or a command missed its expected count), by the service \
             whose read or command it was",
            conflicts.clone(),
        );
        registry.register(
            "sluice_retries",
            "Runs again of a scope whose save was a conflict, by the service the request called",
            retries.clone(),
        );
        Metrics { registry, calls, errors, traps, breaches, durations, applied, conflicts, retries }
    }
}

fn by(service: &str) -> ByService {
    ByService { service: service.to_string() }
}

impl Metrics {
    /// Counts one call of `service` that took `elapsed`.
    pub fn call(&self, service: &str, outcome: &Outcome, elapsed: Duration) {
        let labels = by(service);
        self.calls.get_or_create(&labels).inc();
        self.durations.get_or_create(&labels).observe(elapsed.as_secs_f64());
        if let Outcome::Error(kind) = outcome {
            self.errors.get_or_create(&ByKind { service: labels.service.clone(), kind: (*kind).to_string() }).inc();
            if *kind == "trap" {
                self.traps.get_or_create(&labels).inc();
            }
        }
    }

    /// Counts a limit broken by `service` (which may be a service the
    /// called one called).
    pub fn breach(&self, service: &str, limit: &str) {
        self.breaches.get_or_create(&ByLimit { service: service.to_string(), limit: limit.to_string() }).inc();
    }

    /// Counts commands applied at a save, by the service that queued each.
    pub fn applied<'a>(&self, services: impl Iterator<Item = &'a str>) {
        count_each(&self.applied, services);
    }

    /// Counts conflicts at save, by the service whose read changed or whose
    /// command missed its count. A request's scope that ran again counts a
    /// retry for each conflict but the one it answered with.
    pub fn conflicts<'a>(&self, services: impl Iterator<Item = &'a str>) {
        count_each(&self.conflicts, services);
    }

    /// Counts `n` runs again of a scope that `service` was called in.
    pub fn retried(&self, service: &str, n: usize) {
        if n > 0 {
            self.retries.get_or_create(&by(service)).inc_by(n as u64);
        }
    }

    /// Everything, in the Prometheus text exposition format; `in_flight` is
    /// the number of scopes running now.
    pub fn render(&self, host: &Host, in_flight: usize) -> String {
        let mut now = Registry::default();
        now.register_collector(Box::new(Now::read(host, in_flight)));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &now);
        out
    }
}

/// Adds one per item to the counter of the service it names, without
/// building labels again for a run of the same service.
fn count_each<'a>(family: &Family<ByService, Counter>, services: impl Iterator<Item = &'a str>) {
    let mut run: Option<(&str, u64)> = None;
    let flush = |run: Option<(&str, u64)>| {
        if let Some((service, n)) = run {
            family.get_or_create(&by(service)).inc_by(n);
        }
    };
    for service in services {
        match &mut run {
            Some((same, n)) if *same == service => *n += 1,
            _ => flush(run.replace((service, 1))),
        }
    }
    flush(run);
}

/// What `GET /metrics` reads at the moment of the scrape.
#[derive(Debug)]
struct Now {
    gauges: Vec<(&'static str, &'static str, i64)>,
    reloads: u64,
    /// Per outbox relay: its channel and delivered, failed, dead counts.
    relays: Vec<(String, [u64; 3])>,
    /// Each loaded service with its component's SHA-256.
    versions: Vec<Version>,
    process: Vec<(&'static str, &'static str, Sample)>,
}

/// One process metric's value.
#[derive(Debug, Clone, Copy)]
enum Sample {
    Counter(f64),
    Gauge(i64),
    Seconds(f64),
}

impl Now {
    fn read(host: &Host, in_flight: usize) -> Now {
        let registry = host.registry();
        let gauges = vec![
            ("sluice_services_loaded", "Services loaded now", count(registry.services().count())),
            (
                "sluice_services_failed",
                "Files in the services directory that failed to load",
                count(registry.failures().len()),
            ),
            ("sluice_scopes_in_flight", "Scopes running now", count(in_flight)),
        ];
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let relays = host
            .channels()
            .relays()
            .iter()
            .map(|r| (r.channel.clone(), [load(&r.counts.delivered), load(&r.counts.failed), load(&r.counts.dead)]))
            .collect();
        let versions =
            registry.services().map(|s| Version { service: s.name.clone(), sha256: s.sha256.clone() }).collect();
        Now { gauges, reloads: host.reloads(), relays, versions, process: process_metrics() }
    }
}

impl Collector for Now {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in &self.gauges {
            let gauge = ConstGauge::new(*value);
            gauge.encode(encoder.encode_descriptor(name, &format!("{help}."), None, gauge.metric_type())?)?;
        }
        let mut family = encoder.encode_descriptor(
            "sluice_service_info",
            "The services this host runs, with the SHA-256 of each one's component (always 1).",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for version in &self.versions {
            ConstGauge::new(1).encode(family.encode_family(version)?)?;
        }
        let reloads = ConstCounter::new(self.reloads);
        reloads.encode(encoder.encode_descriptor(
            "sluice_reloads",
            "Reloads of the services directory.",
            None,
            reloads.metric_type(),
        )?)?;
        let outbox = [
            ("sluice_outbox_delivered", "Outbox rows (messages, requests) delivered by this host, by channel."),
            ("sluice_outbox_failed", "Delivery tries that failed, by channel."),
            ("sluice_outbox_dead", "Outbox rows that went dead after their tries, by channel."),
        ];
        for (i, (name, help)) in outbox.into_iter().enumerate() {
            let mut family =
                encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
            for (channel, counts) in &self.relays {
                let labels = ByChannel { channel: channel.clone() };
                ConstCounter::new(counts[i]).encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, sample) in &self.process {
            match *sample {
                Sample::Counter(v) => {
                    let c = ConstCounter::new(v);
                    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
                }
                Sample::Gauge(v) => {
                    let g = ConstGauge::new(v);
                    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
                }
                Sample::Seconds(v) => {
                    let g = ConstGauge::new(v);
                    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
                }
            }
        }
        Ok(())
    }
}

/// The standard `process_*` metrics Prometheus clients export (the library
/// has none), read from `/proc/self` (Linux; elsewhere only CPU time is
/// known): CPU seconds, resident and virtual memory, open file
/// descriptors, threads and start time.
fn process_metrics() -> Vec<(&'static str, &'static str, Sample)> {
    let mut found = Vec::new();
    if let Some(cpu) = cpu_seconds() {
        found.push(("process_cpu_seconds", "User and system CPU time spent, in seconds.", Sample::Counter(cpu)));
    }
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return found };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let Some(fields) = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect::<Vec<_>>()) else {
        return found;
    };
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<i64>().ok());
    // USER_HZ is 100 on every Linux this runs on; the page size is 4 KiB.
    let ticks = 100.0;
    let page = 4096;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ").and_then(|b| b.trim().parse::<f64>().ok())));
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).ok();
    #[expect(clippy::cast_precision_loss, reason = "clock ticks since boot fit a double exactly for millennia")]
    let started = field(22).zip(boot).map(|(t, b)| Sample::Seconds(b + t as f64 / ticks));
    let read = [
        (
            "process_resident_memory_bytes",
            "Resident memory size, in bytes.",
            field(24).map(|p| Sample::Gauge(p * page)),
        ),
        ("process_virtual_memory_bytes", "Virtual memory size, in bytes.", field(23).map(Sample::Gauge)),
        ("process_open_fds", "Open file descriptors.", fds.map(|n| Sample::Gauge(count(n)))),
        ("process_threads", "Threads.", field(20).map(Sample::Gauge)),
        ("process_start_time_seconds", "Start time of the process since the Unix epoch, in seconds.", started),
    ];
    found.extend(read.into_iter().filter_map(|(name, help, value)| value.map(|v| (name, help, v))));
    found
}

/// A count as a gauge's value.
fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
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
