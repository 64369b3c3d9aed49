//! What `sluice serve` runs beside its routes: the relay of every effect
//! channel ([`crate::channels::outbox::relay`]), and the services triggered
//! by messages.
//!
//! A manifest's `[[subscribe]]` names a subject of a `bus` channel. For each
//! one the host keeps a durable JetStream consumer
//! (`sluice_<service>_<hash>`, explicit acks, every message of the stream
//! from its start), and runs one scope per message that calls the
//! service's `handler.handle` with it. The scope's save also writes the
//! message's receipt (`sluice_inbox`) in the same transaction, and the
//! message is acknowledged only after that save committed: a message
//! delivered again (the host died before its ack) whose receipt exists is
//! acknowledged without running. A run that fails (an `err`, a trap, a
//! denial, a conflict after its retries) is delivered again after a
//! backoff; after the subscription's `tries` runs the message is published
//! to the dead-letter subject `dead.<service>.<subject>` of the same channel
//! and acknowledged. The subscriptions follow the services directory as it
//! reloads.

use std::collections::BTreeMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures_util::StreamExt as _;
use wasmtime::component::Val;

use crate::channels::bus::BusChannel;
use crate::channels::outbox::relay::{Relay, backoff};
use crate::host::Host;
use crate::manifest::Subscription;
use crate::scope::{Answer, Ending, Mode, ScopeError};

/// How often the subscriptions are compared with the services.
const RECONCILE: Duration = Duration::from_secs(1);

/// How long the server waits for an ack before it delivers a message
/// again; a scope still running tells it to wait longer every
/// [`PROGRESS`], so this bounds only how late a message held by a host
/// that died is delivered again.
const ACK_WAIT: Duration = Duration::from_secs(10);
const PROGRESS: Duration = Duration::from_secs(3);

/// The relays and subscriptions of one host; dropping it stops them.
pub struct Background {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The name this host claims outbox rows under: `SLUICE_HOST_ID` when set
/// (give each of several hosts that share their directories its own), else
/// the machine and the host's services, data and configuration, so that the same host started
/// again takes up the rows it held when it stopped (two processes started
/// with the very same options share it, and may then deliver a row twice,
/// which the receivers drop by its id).
pub fn owner(options: &crate::HostOptions) -> String {
    if let Ok(id) = std::env::var("SLUICE_HOST_ID")
        && !id.trim().is_empty()
    {
        return id.trim().to_string();
    }
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let mut hasher = std::hash::DefaultHasher::new();
    for path in [Some(&options.services), Some(&options.data_dir), options.config.as_ref()].into_iter().flatten() {
        std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()).hash(&mut hasher);
    }
    format!("{machine}:{:016x}", hasher.finish())
}

/// Starts the relays and the subscriptions of `host` on the current tokio
/// runtime; `owner` names the leases of its relays ([`owner`]).
pub fn start(host: Arc<Host>, owner: &str) -> Background {
    let mut background = Background { tasks: Vec::new() };
    for parts in host.channels().relays() {
        let relay = Relay {
            channel: parts.channel.clone(),
            outbox: Arc::clone(&parts.outbox),
            deliver: Arc::clone(&parts.deliver),
            wake: Arc::clone(&parts.wake),
            counts: Arc::clone(&parts.counts),
        };
        background.tasks.push(tokio::spawn(relay.run(owner.to_string())));
    }
    background.tasks.push(tokio::spawn(sweep_answers(Arc::clone(&host))));
    background.tasks.push(tokio::spawn(crate::schedules::run(Arc::clone(&host))));
    background.tasks.push(tokio::spawn(crate::replies::run(Arc::clone(&host), owner.to_string())));
    background.tasks.push(tokio::spawn(reconcile(host)));
    background
}

/// Deletes, every hour, the answers of idempotent requests past their
/// keep time ([`crate::idempotent`]).
async fn sweep_answers(host: Arc<Host>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60 * 60));
    loop {
        every.tick().await;
        let Ok(answers) = host.answers() else { return };
        let answers = Arc::clone(answers);
        match tokio::task::spawn_blocking(move || answers.sweep()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!("deleted {n} expired answer(s) of idempotent requests"),
            Ok(Err(e)) => tracing::warn!("the expired answers of idempotent requests could not be deleted: {e}"),
            Err(e) => tracing::warn!("the sweep of expired answers failed: {e}"),
        }
    }
}

/// One subscription of one service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    service: String,
    channel: String,
    subject: String,
    tries: u32,
}

/// Keeps one task per subscription of the services loaded now.
async fn reconcile(host: Arc<Host>) {
    let mut running: BTreeMap<Key, tokio::task::JoinHandle<()>> = BTreeMap::new();
    let mut warned: Vec<Key> = Vec::new();
    loop {
        let registry = host.registry();
        let mut wanted: Vec<Key> = Vec::new();
        for service in registry.services() {
            for Subscription { channel, subject, tries } in &service.manifest.subscribe {
                let key = Key {
                    service: service.name.clone(),
                    channel: channel.clone(),
                    subject: subject.clone(),
                    tries: *tries,
                };
                let problem = if host.channels().bus(channel).is_none() {
                    Some(format!("the host has no bus channel {channel:?}"))
                } else if service.function("handle").is_err() {
                    Some("it exports no sluice:service/handler".to_string())
                } else {
                    None
                };
                match problem {
                    Some(why) => {
                        if !warned.contains(&key) {
                            tracing::warn!(service = %service.name, "subscription to {subject} on {channel} is not run: {why}");
                            warned.push(key);
                        }
                    }
                    None => wanted.push(key),
                }
            }
        }
        drop(registry);
        running.retain(|key, task| {
            let keep = wanted.contains(key) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for key in wanted {
            if let std::collections::btree_map::Entry::Vacant(slot) = running.entry(key) {
                let task = tokio::spawn(subscribe(Arc::clone(&host), slot.key().clone()));
                slot.insert(task);
            }
        }
        tokio::time::sleep(RECONCILE).await;
    }
}

/// The durable consumer's name for a subscription: a token (letters,
/// digits, `_`, `-`) unique per service and subject.
fn consumer_name(service: &str, subject: &str) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    subject.hash(&mut hasher);
    let plain: String =
        service.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(100).collect();
    format!("sluice_{plain}_{:016x}", hasher.finish())
}

/// Runs one subscription until aborted, reconnecting after failures.
async fn subscribe(host: Arc<Host>, key: Key) {
    loop {
        if let Err(e) = consume(&host, &key).await {
            tracing::warn!(service = %key.service, channel = %key.channel, "subscription to {}: {e}; again in 2 s", key.subject);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn consume(host: &Arc<Host>, key: &Key) -> Result<(), String> {
    let bus = host.channels().bus(&key.channel).ok_or("no such bus channel")?;
    let jetstream = bus.jetstream().await?;
    let stream = jetstream.get_stream(&bus.settings().stream).await.map_err(|e| e.to_string())?;
    let name = consumer_name(&key.service, &key.subject);
    let consumer: async_nats::jetstream::consumer::Consumer<pull::Config> = stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: bus.wire_subject(&key.subject),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: ACK_WAIT,
                max_ack_pending: 64,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let consumer_id = format!("{}/{}", key.service, key.subject);
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        handle(host, bus, key, &consumer_id, &message).await;
    }
    Err("the consumer's messages ended".into())
}

/// What one message is, for the handler.
struct Incoming {
    id: String,
    subject: String,
    payload: Vec<u8>,
    headers: Vec<(String, String)>,
    delivery: u32,
}

impl Incoming {
    fn val(&self) -> Val {
        let bytes = Val::List(self.payload.iter().map(|b| Val::U8(*b)).collect());
        let headers = self
            .headers
            .iter()
            .map(|(n, v)| Val::Tuple(vec![Val::String(n.clone()), Val::String(v.clone())]))
            .collect();
        Val::Record(vec![
            ("id".into(), Val::String(self.id.clone())),
            ("subject".into(), Val::String(self.subject.clone())),
            ("payload".into(), bytes),
            ("headers".into(), Val::List(headers)),
            ("delivery".into(), Val::U32(self.delivery)),
        ])
    }
}

/// Runs one message's scope, then acks it, naks it for later, or sends it
/// to the dead-letter subject.
async fn handle(
    host: &Arc<Host>,
    bus: &Arc<BusChannel>,
    key: &Key,
    consumer: &str,
    message: &async_nats::jetstream::Message,
) {
    let Ok(info) = message.info() else { return };
    let delivery = u32::try_from(info.delivered).unwrap_or(1).max(1);
    let mut headers = Vec::new();
    let mut id = format!("{}-{}", info.stream, info.stream_sequence);
    if let Some(map) = &message.headers {
        for (name, values) in map.iter() {
            let name = name.to_string();
            for value in values {
                if name.eq_ignore_ascii_case("Nats-Msg-Id") {
                    id = value.to_string();
                } else {
                    headers.push((name.clone(), value.to_string()));
                }
            }
        }
    }
    let prefix = format!("{}.", bus.settings().prefix);
    let subject = message.subject.as_str().strip_prefix(&prefix).unwrap_or(message.subject.as_str()).to_string();
    let incoming = Incoming { id, subject, payload: message.payload.to_vec(), headers, delivery };

    let run_host = Arc::clone(host);
    let (service, channel, consumer_id) = (key.service.clone(), key.channel.clone(), consumer.to_string());
    let message_id = incoming.id.clone();
    let argument = incoming.val();
    let mut running =
        tokio::task::spawn_blocking(move || run(&run_host, &service, &channel, &consumer_id, &message_id, argument));
    let outcome = loop {
        tokio::select! {
            done = &mut running => break done.unwrap_or_else(|e| Err(Failed::again(format!("the host thread running the scope failed: {e}")))),
            () = tokio::time::sleep(PROGRESS) => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    };
    let acked = match outcome {
        Ok(()) => message.ack().await,
        Err(Failed { why, again }) if !again || delivery >= key.tries => {
            tracing::warn!(service = %key.service, id = %incoming.id, "message on {} failed {} time(s), the last: {why}; it goes to the dead letters", incoming.subject, delivery);
            match dead_letter(bus, key, &incoming, &why).await {
                Ok(()) => message.ack_with(AckKind::Term).await,
                Err(e) => {
                    tracing::warn!(service = %key.service, "the dead letter could not be published: {e}");
                    message.ack_with(AckKind::Nak(Some(backoff(delivery)))).await
                }
            }
        }
        Err(Failed { why, .. }) => {
            let after = backoff(delivery);
            tracing::info!(service = %key.service, id = %incoming.id, "message on {} failed (run {delivery} of {}): {why}; again in {} ms", incoming.subject, key.tries, after.as_millis());
            message.ack_with(AckKind::Nak(Some(after))).await
        }
    };
    if let Err(e) = acked {
        // Not acknowledged: the server delivers it again after ACK_WAIT,
        // and its receipt (if the scope saved) makes that run a no-op.
        tracing::warn!(service = %key.service, id = %incoming.id, "the message could not be acknowledged: {e}");
    }
}

/// Why a message's scope did not save, and whether running it again may
/// (a save that left part of itself applied must not run again: that part
/// would be applied twice).
struct Failed {
    why: String,
    again: bool,
}

impl Failed {
    fn again(why: String) -> Failed {
        Failed { why, again: true }
    }
}

/// Runs the scope of one message: `Ok` when it saved (or the message's
/// receipt shows an earlier save did), else why not.
fn run(host: &Host, service: &str, channel: &str, consumer: &str, id: &str, message: Val) -> Result<(), Failed> {
    let bus = host.channels().bus(channel).ok_or_else(|| Failed::again("no such bus channel".into()))?;
    if bus.outbox().received(consumer, id).map_err(|e| Failed::again(e.to_string()))? {
        return Ok(());
    }
    let scope = host.scope();
    let span = tracing::info_span!("scope", scope = %scope.id(), service, message = id);
    let _entered = span.enter();
    let args = [message];
    let ended = scope.run(|scope| {
        scope.queue_receipt(service, channel, consumer, id)?;
        let results = scope.call(service, "handle", &args)?;
        let answer = Answer::Results { service, function: "handle", results: &results };
        let ending = scope.finish(answer, Mode::Save)?;
        Ok((results, ending))
    });
    match ended {
        Ok((_, Ending::Saved(_))) => Ok(()),
        Ok((results, Ending::Discarded { reason, .. })) => {
            let refusal = results.first().map(crate::values::to_json).unwrap_or_default();
            Err(Failed::again(format!("{reason}: {refusal}")))
        }
        Ok((_, Ending::Denied { denials, .. })) => Err(Failed::again(format!("denied: {}", denials.join("; ")))),
        Ok((_, Ending::DryRun(_))) => Err(Failed::again("a dry run".into())),
        // Another run (another host, or a delivery after a lost ack)
        // saved the receipt first.
        Err(e @ ScopeError::Command { .. }) if bus.outbox().received(consumer, id).unwrap_or(false) => {
            tracing::info!("message {id} was handled by another run: {e}");
            Ok(())
        }
        // Part of the save committed (its receipt maybe not): straight to
        // the dead letters, with what committed, for someone to look at.
        Err(e) if e.partially_applied() => Err(Failed { why: e.to_string(), again: false }),
        Err(e) => Err(Failed::again(e.to_string())),
    }
}

/// Publishes a message that failed every run on `dead.SERVICE.SUBJECT`,
/// with why.
async fn dead_letter(bus: &BusChannel, key: &Key, incoming: &Incoming, why: &str) -> Result<(), String> {
    let jetstream = bus.jetstream().await?;
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in &incoming.headers {
        headers.append(name.as_str(), value.as_str());
    }
    let reason: String = why.chars().filter(|c| !c.is_control()).take(1000).collect();
    headers.insert("Sluice-Error", reason.as_str());
    headers.insert("Sluice-Message-Id", incoming.id.as_str());
    headers.insert("Sluice-Subject", incoming.subject.as_str());
    let service: String =
        key.service.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    let subject = bus.wire_subject(&format!("dead.{service}.{}", incoming.subject));
    let publish = async_nats::jetstream::message::PublishMessage::build()
        .payload(incoming.payload.clone().into())
        .headers(headers)
        .message_id(format!("dead-{service}-{}", incoming.id));
    let ack = jetstream.send_publish(subject, publish).await.map_err(|e| e.to_string())?;
    ack.await.map_err(|e| e.to_string())?;
    Ok(())
}
