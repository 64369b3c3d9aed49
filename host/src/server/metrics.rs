//! Counters per service, rendered for `GET /metrics` in the Prometheus text
//! format: calls, errors by kind, traps, limit breaches by limit, call
//! durations (a histogram) and commands applied.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
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
}

/// The server's counters. One short lock per recorded call.
#[derive(Default)]
pub struct Metrics {
    services: Mutex<BTreeMap<String, PerService>>,
    in_flight: AtomicU64,
}

impl Metrics {
    /// Counts one call of `service` that took `elapsed`.
    pub fn call(&self, service: &str, outcome: &Outcome, elapsed: Duration) {
        self.with(service, |m| {
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
        });
    }

    /// Counts a limit broken by `service` (which may be a service the
    /// called one called).
    pub fn breach(&self, service: &str, limit: &str) {
        self.with(service, |m| *m.breaches.entry(limit.to_string()).or_default() += 1);
    }

    /// Counts commands applied at a save, by the service that queued each.
    pub fn applied<'a>(&self, services: impl Iterator<Item = &'a str>) {
        let mut map = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        for service in services {
            match map.get_mut(service) {
                Some(m) => m.applied += 1,
                None => map.entry(service.to_string()).or_default().applied += 1,
            }
        }
    }

    /// A request entered or left a scope.
    pub fn in_flight(&self, delta: i64) {
        if delta >= 0 {
            self.in_flight.fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
        } else {
            self.in_flight.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    fn with(&self, service: &str, f: impl FnOnce(&mut PerService)) {
        let mut map = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(service) {
            Some(m) => f(m),
            None => f(map.entry(service.to_string()).or_default()),
        }
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn render(&self, host: &Host) -> String {
        let registry = host.registry();
        let map = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, lines: &mut dyn Iterator<Item = String>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
        };
        let each = |f: &dyn Fn(&str, &PerService) -> Vec<String>| -> Vec<String> {
            map.iter().flat_map(|(s, m)| f(s, m)).collect()
        };
        family(
            "sluice_calls_total",
            "counter",
            "Calls into a service from a request, one scope each.",
            &mut each(&|s, m| vec![format!("sluice_calls_total{{service=\"{s}\"}} {}", m.calls)]).into_iter(),
        );
        family(
            "sluice_call_errors_total",
            "counter",
            "Calls that were not saved, by kind (arguments, service-error, denied, trap, limit, save, unavailable).",
            &mut each(&|s, m| {
                m.errors
                    .iter()
                    .map(|(k, n)| format!("sluice_call_errors_total{{service=\"{s}\",kind=\"{k}\"}} {n}"))
                    .collect()
            })
            .into_iter(),
        );
        family(
            "sluice_traps_total",
            "counter",
            "Calls that ended in a guest trap.",
            &mut each(&|s, m| vec![format!("sluice_traps_total{{service=\"{s}\"}} {}", m.traps)]).into_iter(),
        );
        family(
            "sluice_limit_breaches_total",
            "counter",
            "Limits broken, by the service that broke them and the limit.",
            &mut each(&|s, m| {
                m.breaches
                    .iter()
                    .map(|(l, n)| format!("sluice_limit_breaches_total{{service=\"{s}\",limit=\"{l}\"}} {n}"))
                    .collect()
            })
            .into_iter(),
        );
        family(
            "sluice_call_duration_seconds",
            "histogram",
            "Time from the start of a scope to its answer (call and save).",
            &mut each(&|s, m| {
                let mut lines = Vec::new();
                let mut cumulative = 0;
                for (bound, n) in BUCKETS.iter().zip(m.buckets) {
                    cumulative += n;
                    lines.push(format!(
                        "sluice_call_duration_seconds_bucket{{service=\"{s}\",le=\"{bound}\"}} {cumulative}"
                    ));
                }
                lines.push(format!("sluice_call_duration_seconds_bucket{{service=\"{s}\",le=\"+Inf\"}} {}", m.calls));
                lines.push(format!("sluice_call_duration_seconds_sum{{service=\"{s}\"}} {}", m.seconds));
                lines.push(format!("sluice_call_duration_seconds_count{{service=\"{s}\"}} {}", m.calls));
                lines
            })
            .into_iter(),
        );
        family(
            "sluice_commands_applied_total",
            "counter",
            "Commands applied at save, by the service that queued them.",
            &mut each(&|s, m| vec![format!("sluice_commands_applied_total{{service=\"{s}\"}} {}", m.applied)])
                .into_iter(),
        );
        drop(map);
        let gauges = [
            ("sluice_services_loaded", "Services loaded now.", registry.services().count() as u64),
            (
                "sluice_services_failed",
                "Files in the services directory that failed to load.",
                registry.failures().len() as u64,
            ),
            ("sluice_scopes_in_flight", "Scopes running now.", self.in_flight.load(Ordering::Relaxed)),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        let reloads = host.reloads();
        let _ = writeln!(
            out,
            "# HELP sluice_reloads_total Reloads of the services directory.\n# TYPE sluice_reloads_total counter\nsluice_reloads_total {reloads}"
        );
        out
    }
}
