//! The `bus` channel kind: messages published on NATS JetStream after the
//! save commits, through the [`outbox`](super::outbox).
//!
//! `to.publish` is checked as it is queued (the subject's form; a granted
//! `subjects` prefix covers it) and, at save, written as an outbox row in
//! the save transaction of the channel's `outbox` (a `sql` channel). The
//! relay publishes each row on `PREFIX.SUBJECT` with the row's id as
//! `Nats-Msg-Id`, so the stream stores it once even when a host dies
//! between publishing and marking the row; the stream is created with a
//! duplicate window of a day (`duplicate-window-s`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, OnceCell};

use super::outbox::relay::{Deliver, Delivery, Failure};
use super::outbox::{Entry, Outbox};
use super::{Caller, Channel, ChannelError, Denial, Opening, Transaction, wrong_kind};
use crate::channels::ops::{Kind, Operation, Outcome};

use super::grant::{GrantSection, Prefixes};
use super::headers::Headers;
use super::ops::{Family, bytes_json};

/// The `bus` kind.
pub const KIND: Kind = Kind::named("bus");

/// A command of a `bus` channel.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BusOp {
    /// Publish a message once the save has committed.
    Publish {
        /// The subject, within the channel's subjects.
        subject: String,
        /// The message's bytes.
        #[serde(serialize_with = "bytes_json")]
        payload: Vec<u8>,
        /// Its headers, in order.
        headers: Headers,
    },
    /// Record, in the save, that a triggered service handled a message: the
    /// host queues it for the scope a message runs, never a service.
    Receipt {
        /// The subscription: `service/subject`.
        consumer: String,
        /// The message's id.
        id: String,
    },
}

impl Family for BusOp {
    fn kind(&self) -> Kind {
        KIND
    }

    fn check(&self) -> Result<(), String> {
        match self {
            BusOp::Publish { subject, headers, .. } => {
                check_subject(subject)?;
                headers.check_message()
            }
            BusOp::Receipt { .. } => Ok(()),
        }
    }

    fn describe(&self) -> String {
        match self {
            BusOp::Publish { subject, payload, .. } => format!("publish {subject} ({} bytes)", payload.len()),
            BusOp::Receipt { consumer, id } => format!("receipt of message {id} for {consumer}"),
        }
    }

    fn size(&self) -> usize {
        match self {
            BusOp::Publish { subject, payload, headers } => subject.len() + payload.len() + headers.size(),
            BusOp::Receipt { consumer, id } => consumer.len() + id.len(),
        }
    }
}

/// The longest subject a `publish` may name.
pub const MAX_SUBJECT_BYTES: usize = 256;

/// Checks a subject to publish on: dot-separated tokens of printable ASCII,
/// none empty, no wildcard (`*`, `>`), at most [`MAX_SUBJECT_BYTES`].
pub fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("the subject is empty".into());
    }
    if subject.len() > MAX_SUBJECT_BYTES {
        return Err(format!("the subject is {} bytes; at most {MAX_SUBJECT_BYTES} are allowed", subject.len()));
    }
    if !subject.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!("subject {subject:?} has a space or a character that is not printable ASCII"));
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Err(format!("subject {subject:?} has an empty token (two dots, or a dot at an end)"));
        }
        if token == "*" || token == ">" {
            return Err(format!("subject {subject:?} has a wildcard; a message is published on one subject"));
        }
    }
    Ok(())
}

/// What a service may do on a `bus` channel (`[channels.NAME]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BusGrant {
    /// Subject prefixes it may publish on (`["orders."]`; `"*"` for every
    /// subject).
    pub subjects: Prefixes,
    /// Subject prefixes whose messages it may be run by (`[[subscribe]]`),
    /// besides those of `subjects`.
    pub read_subjects: Prefixes,
}

impl BusGrant {
    /// Whether it may be run by messages on subjects that start with
    /// `literal` (a subscription's subject up to its first wildcard).
    pub fn may_subscribe(&self, literal: &str) -> bool {
        self.read_subjects.allows(literal) || self.subjects.allows(literal)
    }
}

impl GrantSection for BusGrant {
    const KEYS: &'static [&'static str] = &["subjects", "read-subjects"];

    fn read<'de, D: serde::Deserializer<'de>>(&mut self, key: &str, value: D) -> Result<(), D::Error> {
        use serde::Deserialize as _;
        match key {
            "subjects" => self.subjects = Prefixes::deserialize(value)?,
            "read-subjects" => self.read_subjects = Prefixes::deserialize(value)?,
            _ => {}
        }
        Ok(())
    }

    fn summary(&self, parts: &mut Vec<String>) {
        for (key, prefixes) in [("publishes on", &self.subjects), ("is run by messages on", &self.read_subjects)] {
            if !prefixes.is_empty() {
                parts.push(format!("{key} {}", prefixes.describe()));
            }
        }
    }
}

/// How long a publish waits for the stream's acknowledgement.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// How a `bus` channel reaches its stream (`sluice.toml`).
#[derive(Debug, Clone, PartialEq)]
pub struct BusSettings {
    /// `nats://HOST:PORT`.
    pub url: String,
    /// The JetStream stream holding the channel's messages.
    pub stream: String,
    /// What subjects are prefixed with on the server: `PREFIX.SUBJECT`.
    pub prefix: String,
    /// How long the stream remembers message ids to drop repeats.
    pub duplicate_window: Duration,
}

/// A `bus` channel's section of `sluice.toml`.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BusConfig {
    /// The server: `nats://127.0.0.1:4222`.
    pub url: String,
    /// The `sql` channel whose save transactions hold the outbox.
    pub outbox: String,
    /// The stream (created if missing): `SLUICE_<NAME>` by default.
    pub stream: Option<String>,
    /// Subjects on the server are `PREFIX.SUBJECT`; the channel's name by
    /// default.
    pub prefix: Option<String>,
    /// How long the stream remembers message ids to drop a repeat (86400,
    /// a day, by default).
    pub duplicate_window_s: Option<u64>,
}

impl super::KindConfig for BusConfig {
    /// Its outbox.
    fn depends_on(&self) -> Option<&str> {
        Some(&self.outbox)
    }

    /// Opens the channel and registers its relay and its subscriptions'
    /// bus.
    fn open(&self, at: &mut Opening<'_>) -> Result<Arc<dyn Channel>, ChannelError> {
        let name = at.name().to_string();
        let settings = BusSettings {
            url: self.url.clone(),
            stream: self.stream.clone().unwrap_or_else(|| format!("SLUICE_{}", name.to_uppercase())),
            prefix: self.prefix.clone().unwrap_or_else(|| name.clone()),
            duplicate_window: Duration::from_secs(self.duplicate_window_s.unwrap_or(86_400)),
        };
        let opened = Arc::new(BusChannel::open(&name, settings, &self.outbox, at.base(&self.outbox)?)?);
        at.relay(opened.outbox(), opened.clone(), opened.wake());
        at.bus(Arc::clone(&opened));
        Ok(opened)
    }
}

/// A `bus` channel.
pub struct BusChannel {
    name: String,
    settings: BusSettings,
    outbox: Arc<Outbox>,
    wake: Arc<Notify>,
    jetstream: OnceCell<async_nats::jetstream::Context>,
}

impl BusChannel {
    /// The bus channel `name` with its outbox in the `sql` channel `base`
    /// (called `base_name`), creating the outbox table if it is missing. It
    /// connects to the server when it first needs to (in `sluice serve`).
    pub fn open(
        name: &str,
        settings: BusSettings,
        base_name: &str,
        base: Arc<dyn Channel>,
    ) -> Result<BusChannel, ChannelError> {
        if !settings.url.starts_with("nats://") {
            return Err(ChannelError::Invalid(format!("url {:?} is not nats://HOST:PORT", settings.url)));
        }
        crate::channels::bus::check_subject(&settings.prefix)
            .map_err(|e| ChannelError::Invalid(format!("prefix {:?}: {e}", settings.prefix)))?;
        let outbox = Arc::new(Outbox::open(name, base_name, base)?);
        Ok(BusChannel {
            name: name.to_string(),
            settings,
            outbox,
            wake: Arc::new(Notify::new()),
            jetstream: OnceCell::new(),
        })
    }

    /// How the channel reaches its stream.
    pub fn settings(&self) -> &BusSettings {
        &self.settings
    }

    /// The outbox its messages wait in.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// What a relay's save wakes it with.
    pub fn wake(&self) -> &Arc<Notify> {
        &self.wake
    }

    /// The subject on the server of a service's `subject`.
    pub fn wire_subject(&self, subject: &str) -> String {
        format!("{}.{subject}", self.settings.prefix)
    }

    /// The JetStream context, connected and with the stream created, once.
    pub async fn jetstream(&self) -> Result<&async_nats::jetstream::Context, String> {
        self.jetstream
            .get_or_try_init(|| async {
                let client = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(5))
                    .connect(self.settings.url.trim_start_matches("nats://"))
                    .await
                    .map_err(|e| format!("cannot reach {}: {e}", self.settings.url))?;
                let context = async_nats::jetstream::new(client);
                context
                    .get_or_create_stream(async_nats::jetstream::stream::Config {
                        name: self.settings.stream.clone(),
                        subjects: vec![format!("{}.>", self.settings.prefix)],
                        duplicate_window: self.settings.duplicate_window,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("stream {} on {}: {e}", self.settings.stream, self.settings.url))?;
                Ok(context)
            })
            .await
    }

    async fn publish(&self, entry: &Entry) -> Result<(), Failure> {
        let transient = |reason: String| Failure { reason, permanent: false, answer: None };
        let jetstream = self.jetstream().await.map_err(transient)?;
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in &entry.headers.0 {
            headers.append(name.as_str(), value.as_str());
        }
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(entry.body.clone().into())
            .headers(headers)
            .message_id(&entry.id);
        let subject = self.wire_subject(&entry.target);
        // A message over the server's max_payload can never be taken:
        // dead at once, or, delivered in order, it would hold up every
        // message written after it for good.
        let ack = jetstream.send_publish(subject, message).await.map_err(|e| Failure {
            permanent: matches!(e.kind(), async_nats::jetstream::context::PublishErrorKind::MaxPayloadExceeded),
            reason: e.to_string(),
            answer: None,
        })?;
        tokio::time::timeout(PUBLISH_TIMEOUT, ack)
            .await
            .map_err(|_| transient("the stream did not acknowledge in time".into()))?
            .map_err(|e| transient(e.to_string()))?;
        Ok(())
    }
}

impl Deliver for BusChannel {
    fn deliver<'a>(&'a self, entry: &'a Entry) -> Delivery<'a> {
        Box::pin(async move { self.publish(entry).await.map(|()| None) })
    }

    /// A message is tried until the stream has it: none is ever dropped,
    /// but one the server can never take (over its `max_payload`), which is
    /// dead at once.
    fn tries(&self) -> Option<u32> {
        None
    }

    fn timeout(&self) -> Duration {
        PUBLISH_TIMEOUT * 2
    }

    /// Messages go out in the order their rows were written.
    fn ordered(&self) -> bool {
        true
    }

    fn prepare(&self) -> super::outbox::relay::Ready<'_> {
        Box::pin(async {
            self.jetstream().await.map(drop).map_err(|reason| Failure { reason, permanent: false, answer: None })
        })
    }
}

impl Channel for BusChannel {
    fn kind(&self) -> Kind {
        crate::channels::bus::KIND
    }

    fn check_command(&self, op: &Operation, caller: &Caller) -> Result<(), ChannelError> {
        let Operation::Bus(BusOp::Publish { subject, .. }) = op else {
            return Err(wrong_kind(crate::channels::bus::KIND, op.kind(), &op.describe()));
        };
        if caller.host || caller.grant.as_deref().is_some_and(|g| g.bus.subjects.allows(subject)) {
            return Ok(());
        }
        Err(ChannelError::Denied(Denial::ungranted(
            format!("publish on subject {subject}"),
            format!("subjects = [{subject:?}]"),
        )))
    }

    fn shares(&self) -> Option<&str> {
        Some(self.outbox.base_name())
    }

    fn apply_shared(&self, tx: &mut dyn Transaction, op: &Operation, caller: &Caller) -> Result<Outcome, ChannelError> {
        let (subject, payload, headers) = match op {
            Operation::Bus(BusOp::Publish { subject, payload, headers }) => (subject, payload, headers),
            // Only the host queues receipts (no `to` function makes one).
            Operation::Bus(BusOp::Receipt { consumer, id }) => return self.outbox.receipt(tx, consumer, id, caller),
            _ => return Err(wrong_kind(crate::channels::bus::KIND, op.kind(), &op.describe())),
        };
        // Checked again: the grant may have changed since it was queued.
        self.check_command(op, caller)?;
        let service = caller.service.as_deref().unwrap_or("host");
        self.outbox.insert(tx, service, subject, headers, payload, caller).map(|_| Outcome::Affected(1))
    }

    fn committed(&self) {
        self.wake.notify_one();
    }

    fn begin(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        Err(super::outbox::no_transaction(&self.name, self.outbox.base_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_plain_tokens() {
        assert!(check_subject("orders.placed").is_ok());
        for bad in ["", "orders..placed", ".orders", "orders.*", "orders.>", "a b", "é"] {
            assert!(check_subject(bad).is_err(), "{bad:?}");
        }
        assert!(check_subject(&"a".repeat(300)).is_err());
    }
}
