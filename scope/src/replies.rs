//! Replies to sends (`to.reply-to`), run by `sluice serve` beside its
//! relays: for each `http-out` channel, ready replies
//! ([`crate::channels::outbox::replies`]) are claimed with a lease and each
//! runs one scope calling the sending service's handler with the reply;
//! that scope's save marks the reply done, so each reply's effects are
//! saved once across every host.
//!
//! At most [`IN_FLIGHT`] replies run at once on a host, and at most
//! [`PER_SERVICE`] of one service's: a service whose handler is slow holds
//! back its own replies only. A handler that does not save runs again
//! after a backoff, up to [`crate::channels::outbox::replies::RUNS`] runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use wasmtime::component::Val;

use crate::channels::outbox::Outbox;
use crate::channels::outbox::relay::backoff;
use crate::channels::outbox::replies::Reply;
use crate::host::Host;
use crate::scope::{Answer, Ending, Mode};

/// How often ready replies are looked for.
const EVERY: Duration = Duration::from_millis(250);
/// Replies running at once on a host.
const IN_FLIGHT: usize = 8;
/// Of them, one service's.
const PER_SERVICE: usize = 2;
/// How long a claim holds a reply: a host that dies running one loses it
/// then, and another host runs it.
const LEASE: Duration = Duration::from_secs(60);

/// Runs the replies of `host`'s `http-out` channels until dropped; `owner`
/// names its claims.
pub(crate) async fn run(host: Arc<Host>, owner: String) {
    let outboxes: Vec<Arc<Outbox>> = host
        .channels()
        .relays()
        .iter()
        .filter(|r| host.channels().get(&r.channel).is_some_and(|c| c.kind() == crate::channels::http_out::KIND))
        .map(|r| Arc::clone(&r.outbox))
        .collect();
    if outboxes.is_empty() {
        return;
    }
    for outbox in &outboxes {
        let (outbox, me) = (Arc::clone(outbox), owner.clone());
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || outbox.release_replies(&me)).await {
            tracing::warn!("the replies an earlier run held could not be given back (their claims lapse): {e}");
        }
    }
    let running: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for outbox in &outboxes {
            let busy: usize = running.lock().unwrap_or_else(PoisonError::into_inner).values().sum();
            if busy >= IN_FLIGHT {
                break;
            }
            let limit = u32::try_from(IN_FLIGHT - busy).unwrap_or(1);
            let full: Vec<String> = running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .filter(|(_, n)| **n >= PER_SERVICE)
                .map(|(service, _)| service.clone())
                .collect();
            let (claimer, who) = (Arc::clone(outbox), owner.clone());
            let claimed = tokio::task::spawn_blocking(move || claimer.claim_replies(&who, limit, LEASE, &full)).await;
            let replies = match claimed {
                Ok(Ok(replies)) => replies,
                Ok(Err(e)) => {
                    tracing::warn!("replies could not be claimed: {e}");
                    continue;
                }
                Err(_) => continue,
            };
            for reply in replies {
                {
                    let mut running = running.lock().unwrap_or_else(PoisonError::into_inner);
                    let mine = running.entry(reply.service.clone()).or_default();
                    if *mine >= PER_SERVICE {
                        // Given back at once: its lease does not hold it.
                        let outbox = Arc::clone(outbox);
                        tokio::task::spawn_blocking(move || outbox.unclaim_reply(&reply));
                        continue;
                    }
                    *mine += 1;
                }
                let (host, outbox, running) = (Arc::clone(&host), Arc::clone(outbox), Arc::clone(&running));
                tokio::task::spawn_blocking(move || {
                    let service = reply.service.clone();
                    if let Err(why) = handle(&host, &outbox, &reply) {
                        let after = backoff(reply.run);
                        tracing::warn!(service = %service, id = %reply.id, "the reply handler {} did not save (run {}): {why}", reply.handler, reply.run);
                        if let Err(e) = outbox.reply_failed(&reply, &why, after) {
                            tracing::warn!(id = %reply.id, "the reply could not be given back (its claim lapses): {e}");
                        }
                    }
                    let mut running = running.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(mine) = running.get_mut(&service) {
                        *mine -= 1;
                        if *mine == 0 {
                            running.remove(&service);
                        }
                    }
                });
            }
        }
    }
}

/// One scope calling `reply`'s handler, whose save marks it done.
fn handle(host: &Host, outbox: &Outbox, reply: &Reply) -> Result<(), String> {
    let scope = host.scope();
    let span = tracing::info_span!("scope", scope = %scope.id(), service = %reply.service, reply = %reply.id);
    let _entered = span.enter();
    let callee = scope.registry().callee(&reply.service, &reply.handler).map_err(|e| e.to_string())?;
    let function = callee.function().name.clone();
    let args = [value(reply)];
    let service = reply.service.as_str();
    let mut returned = String::new();
    let ended = scope.run(|scope| {
        scope.queue_host(service, "the receipt of the reply", outbox.base_name(), outbox.reply_done(reply))?;
        let results = scope.call_to(&callee, &args)?;
        returned = results.first().map(|r| crate::values::to_json(r).to_string()).unwrap_or_default();
        scope.finish(Answer::Results { service, function: &function, results: &results }, Mode::Save)
    });
    match ended {
        Ok(Ending::Saved(_)) => {
            tracing::info!("ran the reply handler {}", reply.handler);
            Ok(())
        }
        Ok(Ending::Discarded { reason, .. }) => Err(format!("{reason}: {returned}")),
        Ok(Ending::Denied { denials, .. }) => Err(format!("denied: {}", denials.join("; "))),
        Ok(Ending::DryRun(_)) => Err("a dry run".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The WIT `reply` record.
fn value(reply: &Reply) -> Val {
    let text = |s: &str| Val::String(s.to_string());
    let response = reply.answer.as_ref().map(|a| {
        let headers = a.headers.iter().map(|(n, v)| Val::Tuple(vec![text(n), text(v)])).collect();
        Box::new(Val::Record(vec![
            ("status".into(), Val::U16(a.status)),
            ("headers".into(), Val::List(headers)),
            ("body".into(), Val::List(a.body.iter().map(|b| Val::U8(*b)).collect())),
        ]))
    });
    Val::Record(vec![
        ("tag".into(), text(&reply.tag)),
        ("id".into(), text(&reply.id)),
        ("response".into(), Val::Option(response)),
        ("failure".into(), Val::Option(reply.failure.as_deref().map(|f| Box::new(text(f))))),
    ])
}
