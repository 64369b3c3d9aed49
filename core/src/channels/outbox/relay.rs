//! The relay: a task of `sluice serve` per effect channel that claims due
//! outbox rows, delivers them, and marks each delivered, to be tried again
//! after a backoff, or dead after the channel's tries.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{Entry, Outbox};

/// How many rows one claim takes at most.
const BATCH: u32 = 32;

/// How many deliveries an unordered channel has in flight at once.
const IN_FLIGHT: usize = 64;

/// How many of them one service's rows may be: a destination that is slow,
/// or never answers, holds up its own service's rows only.
const PER_SERVICE: usize = 8;

/// How often a relay with nothing to do looks again (for rows of other
/// hosts, and rows whose retry is due); a save of this host wakes it at once.
const POLL: Duration = Duration::from_millis(250);

/// The first retry's delay; each later one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long delivered rows are kept for reading their status.
const KEEP_DELIVERED: Duration = Duration::from_secs(7 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// How old the row of a journaled commit (files, Redis with an `outbox`)
/// must be before a relay makes the commit instead of the save that wrote
/// it, which is about to.
pub const JOURNAL_AFTER: Duration = Duration::from_secs(5);

/// Why one delivery failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// For people and the row's `last_error`.
    pub reason: String,
    /// Whether trying again cannot help (a 4xx answer): the row is dead at
    /// once.
    pub permanent: bool,
    /// What the receiver answered, when it answered (an `http-out` row
    /// whose service asked for the reply).
    pub answer: Option<Answer>,
}

/// What a receiver answered one delivery, kept for the service's reply
/// handler (`to.reply-to`): status, headers and a body of at most the
/// channel's `reply-bytes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Why the body is not kept (it was longer than the channel keeps, or
    /// broke off); it is then empty.
    pub cut: Option<String>,
}

/// A future of a receiver made ready.
pub type Ready<'a> = Pin<Box<dyn Future<Output = Result<(), Failure>> + Send + 'a>>;

/// A future of one delivery: done, with the receiver's answer when the
/// row wants it kept ([`Entry::reply`]).
pub type Delivery<'a> = Pin<Box<dyn Future<Output = Result<Option<Answer>, Failure>> + Send + 'a>>;

/// What an effect channel does with one claimed row.
pub trait Deliver: Send + Sync + 'static {
    /// Delivers `entry` once; done when the receiver has it.
    fn deliver<'a>(&'a self, entry: &'a Entry) -> Delivery<'a>;
    /// How many tries a row gets before it is dead; `None`: it is tried
    /// until it is delivered.
    fn tries(&self) -> Option<u32>;
    /// The longest one delivery may take.
    fn timeout(&self) -> Duration;
    /// How old a row must be before this relay takes it: a files channel
    /// leaves the rows its own commit is about to apply to that commit.
    fn min_age(&self) -> Duration {
        Duration::ZERO
    }
    /// Whether rows are delivered one after another in the order they
    /// were written (a bus), rather than all of a claim at once.
    fn ordered(&self) -> bool {
        false
    }
    /// Readies the receiver before the first claim (a bus connects and
    /// creates its stream, so that services subscribed to it find it).
    fn prepare(&self) -> Ready<'_> {
        Box::pin(async { Ok(()) })
    }
}

/// What a relay has done, for `/metrics` and the tests.
#[derive(Debug, Default)]
pub struct Counts {
    /// Rows delivered.
    pub delivered: AtomicU64,
    /// Tries that failed (and will be tried again, or are dead).
    pub failed: AtomicU64,
    /// Rows that went dead.
    pub dead: AtomicU64,
}

/// One effect channel's relay.
pub struct Relay {
    /// The channel's name, for logs.
    pub channel: String,
    /// Its rows.
    pub outbox: Arc<Outbox>,
    /// Its deliveries.
    pub deliver: Arc<dyn Deliver>,
    /// Notified when a save of this host committed rows.
    pub wake: Arc<Notify>,
    /// What it has done.
    pub counts: Arc<Counts>,
}

impl Relay {
    /// Runs until the task is dropped: claim, deliver, mark, repeat.
    pub async fn run(self, owner: String) {
        let lease = self.deliver.timeout() * 2 + Duration::from_secs(5);
        let mut pruned = Instant::now();
        let outbox = Arc::clone(&self.outbox);
        let me = owner.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || outbox.release(&me)).await {
            tracing::warn!(channel = %self.channel, "the leases of an earlier run could not be given back: {e}");
        }
        while let Err(e) = self.deliver.prepare().await {
            tracing::warn!(channel = %self.channel, "{}; trying again in 2 s", e.reason);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        if self.deliver.ordered() {
            loop {
                let entries = self.claim(&owner, BATCH, lease, Vec::new()).await;
                if entries.is_empty() {
                    self.idle(&mut pruned).await;
                } else {
                    self.in_order(entries).await;
                }
            }
        } else {
            self.side_by_side(&owner, lease, &mut pruned).await;
        }
    }

    /// Claims up to `limit` due rows, none of the services in `skip`; a
    /// failed claim is logged and gives none, after a second.
    async fn claim(&self, owner: &str, limit: u32, lease: Duration, skip: Vec<String>) -> Vec<Entry> {
        let outbox = Arc::clone(&self.outbox);
        let who = owner.to_string();
        let min_age = self.deliver.min_age();
        match tokio::task::spawn_blocking(move || outbox.claim(&who, limit, lease, min_age, &skip)).await {
            Ok(Ok(entries)) => entries,
            Ok(Err(e)) => {
                tracing::warn!(channel = %self.channel, "the outbox could not be read: {e}; trying again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                Vec::new()
            }
            Err(e) => {
                tracing::error!(channel = %self.channel, "the outbox claim failed: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                Vec::new()
            }
        }
    }

    /// Nothing to do: prunes now and then, then waits for a save of this
    /// host or the poll.
    async fn idle(&self, pruned: &mut Instant) {
        if pruned.elapsed() > PRUNE_EVERY {
            *pruned = Instant::now();
            let outbox = Arc::clone(&self.outbox);
            let _ = tokio::task::spawn_blocking(move || outbox.prune(KEEP_DELIVERED)).await;
        }
        tokio::select! {
            () = self.wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }

    /// Delivers one row within the channel's timeout.
    async fn attempt(deliver: &dyn Deliver, entry: &Entry) -> Result<Option<Answer>, Failure> {
        let timeout = deliver.timeout();
        match tokio::time::timeout(timeout, deliver.deliver(entry)).await {
            Ok(result) => result,
            Err(_) => Err(Failure {
                reason: format!("no answer within {} ms", timeout.as_millis()),
                permanent: false,
                answer: None,
            }),
        }
    }

    /// Delivers the rows one after another, in order; after a failure the
    /// rest wait behind the failed row, so a later row never overtakes it
    /// within this host.
    async fn in_order(&self, entries: Vec<Entry>) {
        let mut rows = entries.into_iter();
        while let Some(entry) = rows.next() {
            let result = Self::attempt(self.deliver.as_ref(), &entry).await;
            let failed = result.is_err();
            let rest: Vec<Entry> = if failed { rows.by_ref().collect() } else { Vec::new() };
            let (outbox, counts, channel, tries) =
                (Arc::clone(&self.outbox), Arc::clone(&self.counts), self.channel.clone(), self.deliver.tries());
            let _ = tokio::task::spawn_blocking(move || {
                // Behind the failed row's next try (at once, if it is dead).
                let after = mark(&outbox, &channel, &entry, result, tries, &counts).unwrap_or_default();
                for later in rest {
                    let _ = outbox.failed(&later.id, "waiting behind an earlier row that failed", Some(after));
                }
            })
            .await;
            if failed {
                return;
            }
        }
    }

    /// Delivers rows side by side as they come due: at most [`IN_FLIGHT`]
    /// at once and [`PER_SERVICE`] of one service's, whose further rows
    /// are left unclaimed, so that one service's slow destination never
    /// holds up another service's rows.
    async fn side_by_side(&self, owner: &str, lease: Duration, pruned: &mut Instant) {
        let mut tasks = tokio::task::JoinSet::new();
        let mut services: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut busy: HashMap<String, usize> = HashMap::new();
        loop {
            let mut started = 0;
            let free = IN_FLIGHT - tasks.len();
            if free > 0 {
                let full: Vec<String> =
                    busy.iter().filter(|(_, n)| **n >= PER_SERVICE).map(|(service, _)| service.clone()).collect();
                let limit = u32::try_from(free).unwrap_or(BATCH).min(BATCH);
                let mut over = Vec::new();
                for entry in self.claim(owner, limit, lease, full).await {
                    let running = busy.entry(entry.service.clone()).or_default();
                    if *running >= PER_SERVICE {
                        over.push(entry.id);
                        continue;
                    }
                    *running += 1;
                    started += 1;
                    let service = entry.service.clone();
                    let id = tasks.spawn(self.delivery(entry)).id();
                    services.insert(id, service);
                }
                if !over.is_empty() {
                    let (outbox, who) = (Arc::clone(&self.outbox), owner.to_string());
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || outbox.unclaim(&who, &over)).await {
                        // Their leases run out, and they are claimed again.
                        tracing::warn!(channel = %self.channel, "rows over a service's share could not be given back: {e}");
                    }
                }
            }
            if tasks.is_empty() && started == 0 {
                self.idle(pruned).await;
                continue;
            }
            // Claim again at once while rows come and there is room;
            // otherwise wait for a delivery to end, a save, or the poll.
            if started == 0 || tasks.len() >= IN_FLIGHT {
                tokio::select! {
                    Some(done) = tasks.join_next_with_id() => {
                        let id = done.map_or_else(|e| e.id(), |(id, ())| id);
                        finished(&mut services, &mut busy, id);
                    }
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
            }
            while let Some(done) = tasks.try_join_next_with_id() {
                let id = done.map_or_else(|e| e.id(), |(id, ())| id);
                finished(&mut services, &mut busy, id);
            }
        }
    }

    /// One row's delivery and its mark, to run beside others.
    fn delivery(&self, entry: Entry) -> impl Future<Output = ()> + Send + 'static {
        let deliver = Arc::clone(&self.deliver);
        let outbox = Arc::clone(&self.outbox);
        let counts = Arc::clone(&self.counts);
        let channel = self.channel.clone();
        async move {
            let result = Self::attempt(deliver.as_ref(), &entry).await;
            let tries = deliver.tries();
            let _ = tokio::task::spawn_blocking(move || mark(&outbox, &channel, &entry, result, tries, &counts)).await;
        }
    }
}

/// A delivery ended: its service has one fewer in flight.
fn finished(services: &mut HashMap<tokio::task::Id, String>, busy: &mut HashMap<String, usize>, id: tokio::task::Id) {
    let Some(service) = services.remove(&id) else { return };
    if let Some(running) = busy.get_mut(&service) {
        *running = running.saturating_sub(1);
        if *running == 0 {
            busy.remove(&service);
        }
    }
}

/// Records the result of delivering `entry`; returns when it is tried
/// again (`None`: delivered, or dead).
fn mark(
    outbox: &Outbox,
    channel: &str,
    entry: &Entry,
    result: Result<Option<Answer>, Failure>,
    tries: Option<u32>,
    counts: &Counts,
) -> Option<Duration> {
    let mut again = None;
    let marked = match result {
        Ok(answer) => {
            counts.delivered.fetch_add(1, Ordering::Relaxed);
            match (entry.reply, answer) {
                (true, answer) => outbox.replied(&entry.id, answer.as_ref(), None),
                (false, _) => outbox.delivered(&entry.id),
            }
        }
        Err(failure) => {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            let spent = tries.is_some_and(|n| entry.tries >= n);
            if failure.permanent || spent {
                counts.dead.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(channel, id = %entry.id, service = %entry.service, "{} is dead after {} tries: {}", entry.target, entry.tries, failure.reason);
                if entry.reply {
                    outbox.replied(&entry.id, failure.answer.as_ref(), Some(&failure.reason))
                } else {
                    outbox.failed(&entry.id, &failure.reason, None)
                }
            } else {
                let after = backoff(entry.tries);
                again = Some(after);
                tracing::info!(channel, id = %entry.id, service = %entry.service, "{} failed (try {}): {}; again in {} ms", entry.target, entry.tries, failure.reason, after.as_millis());
                outbox.failed(&entry.id, &failure.reason, Some(after))
            }
        }
    };
    if let Err(e) = marked {
        // The lease runs out and the row is tried again: never lost.
        tracing::warn!(channel, id = %entry.id, "the outbox row could not be marked: {e}");
    }
    again
}

/// The delay before try `tries + 1`: doubling from [`FIRST_BACKOFF`] up to
/// [`MAX_BACKOFF`], with up to a tenth more at random so that rows failed
/// together spread out.
pub fn backoff(tries: u32) -> Duration {
    let base = FIRST_BACKOFF.saturating_mul(1u32 << tries.saturating_sub(1).min(16)).min(MAX_BACKOFF);
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * base.as_millis() as u64 / 2550;
    base + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        assert!(backoff(1) >= FIRST_BACKOFF && backoff(1) < FIRST_BACKOFF * 2);
        assert!(backoff(3) >= FIRST_BACKOFF * 4);
        assert!(backoff(40) >= MAX_BACKOFF && backoff(40) <= MAX_BACKOFF + MAX_BACKOFF / 10);
    }
}
