//! Scheduled functions (`[[schedule]]` in a manifest,
//! [`crate::manifest::Schedule`]), run by `sluice serve` beside its routes.
//!
//! Every second each host computes, for each schedule of the services
//! loaded now, its latest tick at or before the clock (an interval's
//! multiples since the epoch, a cron expression's minutes, in UTC). A tick
//! later than the last one known to have run is claimed in `sluice_ticks`
//! ([`crate::channels::sql::ticks`]); the host that gets the claim runs
//! one scope calling the function (with the tick, when it takes a `u64`),
//! like any other scope, and that scope's save also marks the tick as run.
//! So each tick's scope saves **once across every host** on the database.
//!
//! - **Missed ticks**: only the latest tick is ever run. Ticks that came
//!   and went while every host was down (or while a tick's scope kept
//!   failing) are skipped; the latest missed one runs once when a host is
//!   up again.
//! - **A failed tick** (an `err`, a trap, a conflict after its retries) is
//!   not marked: it is tried again every [`RETRY`] until it saves or the
//!   next tick replaces it.
//! - **One at a time per service**: a service's scheduled scopes (at most
//!   [`crate::manifest::MAX_SCHEDULES`] schedules each) run one after
//!   another on a host; a tick due while another of the same service runs
//!   waits for the next look. Other services' ticks do not wait for it.
//! - **A host that dies** running a tick holds it until `[schedules]
//!   lease-seconds` have passed; then another host runs it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use wasmtime::component::Val;

use crate::channels::outbox::now_ms;
use crate::channels::sql::ticks::{Due, Ticks};
use crate::host::Host;
use crate::manifest::Schedule;
use crate::scope::{Answer, Ending, Mode};

/// How often the ticks are looked at.
const EVERY: Duration = Duration::from_secs(1);
/// How long a failed tick waits before it is tried again.
const RETRY: Duration = Duration::from_secs(10);

/// What a host knows of each schedule, by its id.
#[derive(Default)]
struct Known {
    /// The last tick known to have run.
    ran: BTreeMap<String, i64>,
    /// Ticks that failed, with when to try again.
    failed: BTreeMap<String, (i64, Instant)>,
    /// Services with a scheduled scope running on this host now: each
    /// service's ticks run one at a time, so a service whose scheduled
    /// scopes are slow holds back only its own ticks.
    running: BTreeSet<String>,
}

/// Runs the schedules of `host`'s services until dropped (see the module
/// docs).
pub(crate) async fn run(host: Arc<Host>) {
    let known = Arc::new(Mutex::new(Known::default()));
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        every.tick().await;
        let registry = host.registry();
        let scheduled: Vec<(String, Schedule)> = registry
            .services()
            .flat_map(|s| s.manifest.schedule.iter().map(|schedule| (s.name.clone(), schedule.clone())))
            .collect();
        if scheduled.is_empty() {
            continue;
        }
        let ticks = match host.ticks() {
            Ok(ticks) => Arc::clone(ticks),
            Err(why) => {
                if !warned {
                    tracing::warn!("{} schedule(s) cannot run: {why}", scheduled.len());
                    warned = true;
                }
                continue;
            }
        };
        let now = now_ms();
        for (service, schedule) in scheduled {
            let id = schedule.id(&service);
            let Some(tick) = schedule.when().ok().and_then(|w| w.latest(now)) else { continue };
            {
                let mut known = known.lock().unwrap_or_else(PoisonError::into_inner);
                let ran = known.ran.get(&id).is_some_and(|ran| *ran >= tick);
                let waiting = known.failed.get(&id).is_some_and(|(t, after)| *t == tick && Instant::now() < *after);
                if ran || waiting || !known.running.insert(service.clone()) {
                    continue;
                }
            }
            let (host, ticks, known) = (Arc::clone(&host), Arc::clone(&ticks), Arc::clone(&known));
            tokio::task::spawn_blocking(move || {
                let outcome = run_tick(&host, &ticks, &service, &schedule, &id, tick);
                let mut known = known.lock().unwrap_or_else(PoisonError::into_inner);
                known.running.remove(&service);
                match outcome {
                    Ok(Some(ran)) => {
                        known.ran.insert(id.clone(), ran);
                        known.failed.remove(&id);
                    }
                    Ok(None) => {}
                    Err(why) => {
                        tracing::warn!(service = %service, "the tick {tick} of schedule {id:?} did not save: {why}; tried again in {} s", RETRY.as_secs());
                        known.failed.insert(id.clone(), (tick, Instant::now() + RETRY));
                    }
                }
            });
        }
    }
}

/// Runs `tick` of `schedule` (called `id`) of `service` if this host gets
/// its claim: the last tick known to have run, `None` when another host
/// holds it, or why its scope did not save.
fn run_tick(
    host: &Host,
    ticks: &Ticks,
    service: &str,
    schedule: &Schedule,
    id: &str,
    tick: i64,
) -> Result<Option<i64>, String> {
    let claim = match ticks.claim(id, tick).map_err(|e| format!("cannot claim it: {e}"))? {
        Due::Run(claim) => claim,
        Due::Ran(ran) => return Ok(Some(ran)),
        Due::Held => return Ok(None),
    };
    let scope = host.scope();
    let span = tracing::info_span!("scope", scope = %scope.id(), service, schedule = id, tick);
    let _entered = span.enter();
    let ran = run_scope(scope, ticks, service, schedule, &claim);
    match ran {
        Ok(()) => {
            tracing::info!("ran the tick {tick} of schedule {id:?}");
            Ok(Some(tick))
        }
        Err(why) => {
            if let Err(e) = ticks.release(&claim) {
                tracing::warn!("the tick could not be given back (its claim lapses): {e}");
            }
            Err(why)
        }
    }
}

/// One scope calling the scheduled function, whose save marks the tick.
fn run_scope(
    scope: crate::scope::Scope,
    ticks: &Ticks,
    service: &str,
    schedule: &Schedule,
    claim: &crate::channels::sql::ticks::TickClaim,
) -> Result<(), String> {
    let callee = scope.registry().callee(service, &schedule.function).map_err(|e| e.to_string())?;
    let args: Vec<Val> = match callee.function().params.len() {
        0 => Vec::new(),
        _ => vec![Val::U64(u64::try_from(claim.tick_ms).unwrap_or_default())],
    };
    let function = callee.function().name.clone();
    let ended = scope.run(|scope| {
        scope.queue_host(service, "the tick of its schedule", ticks.channel(), ticks.done(claim))?;
        let results = scope.call_to(&callee, &args)?;
        scope.finish(Answer::Results { service, function: &function, results: &results }, Mode::Save)
    });
    match ended {
        Ok(Ending::Saved(_)) => Ok(()),
        Ok(Ending::Discarded { reason, .. }) => Err(reason),
        Ok(Ending::Denied { denials, .. }) => Err(format!("denied: {}", denials.join("; "))),
        Ok(Ending::DryRun(_)) => Err("a dry run".into()),
        Err(e) => Err(e.to_string()),
    }
}
