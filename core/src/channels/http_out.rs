//! The `http-out` channel kind: HTTP requests sent after the save commits,
//! through the [`outbox`](super::outbox).
//!
//! `to.send` is checked as it is queued: the method, the headers, the URL
//! (absolute `http(s)`, or a path under the channel's `base`) and the
//! manifest's `destinations` (method and host). At save the request is an
//! outbox row in the save transaction of the channel's `outbox`; the relay
//! sends it with `Idempotency-Key: <row id>`, the same on every try, never
//! following a redirect. A 2xx answer delivers it; a 5xx, 408, 425 or 429
//! answer, or no answer, is tried again with backoff up to `tries`; any
//! other answer makes the row dead at once. The row's `state`, `tries` and
//! `last_error` in `sluice_outbox` (and `sluice outbox CHANNEL`) say where
//! each request is.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use tokio::sync::Notify;

use super::outbox::relay::{Answer, Deliver, Delivery, Failure};
use super::outbox::{Entry, Outbox};
use super::{Caller, Channel, ChannelError, Denial, Opening, Transaction, wrong_kind};
use crate::channels::ops::{Operation, Outcome};

use super::headers::Headers;
use super::ops::{Family, Kind, bytes_json, clip};

/// The `http-out` kind.
pub const KIND: Kind = Kind::named("http-out");

/// A command of an `http-out` channel.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum HttpOp {
    /// Send an HTTP request once the save has committed.
    Send {
        /// The method: `POST`.
        method: String,
        /// Where to: an absolute `http(s)` URL, or a path under the
        /// channel's `base`.
        url: String,
        /// Its headers, in order.
        headers: Headers,
        /// Its body.
        #[serde(serialize_with = "bytes_json")]
        body: Vec<u8>,
        /// Where its answer goes, when the service asked for it
        /// (`to.reply-to`).
        #[serde(skip_serializing_if = "Option::is_none")]
        reply: Option<ReplyTo>,
    },
}

/// The function of the sending service that gets a request's answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReplyTo {
    /// The function's name.
    pub handler: String,
    /// What the service gets back with the answer.
    pub tag: String,
}

/// The longest a reply's tag may be.
pub const MAX_TAG: usize = 1024;

/// How much of a URL a description shows.
const DESCRIBED_URL: usize = 200;

impl Family for HttpOp {
    fn kind(&self) -> Kind {
        KIND
    }

    fn check(&self) -> Result<(), String> {
        let HttpOp::Send { method, url, headers, .. } = self;
        check_method(method)?;
        if url.trim().is_empty() {
            return Err("the url is empty".into());
        }
        headers.check_request()
    }

    fn describe(&self) -> String {
        let HttpOp::Send { method, url, body, .. } = self;
        let mut url = url.clone();
        clip(&mut url, DESCRIBED_URL);
        format!("send {method} {url} ({} bytes)", body.len())
    }

    fn size(&self) -> usize {
        let HttpOp::Send { method, url, headers, body, reply } = self;
        method.len()
            + url.len()
            + headers.size()
            + body.len()
            + reply.as_ref().map_or(0, |r| r.handler.len() + r.tag.len())
    }
}

/// The methods a request of an `http-out` channel may use.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Checks a request's method: one of [`METHODS`].
pub fn check_method(method: &str) -> Result<(), String> {
    if METHODS.contains(&method) {
        return Ok(());
    }
    Err(format!("method {method:?} is not one of {}", METHODS.join(", ")))
}

use super::grant::GrantSection;

/// What a service may do on an `http-out` channel (`[channels.NAME]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpOutGrant {
    /// Where it may send requests.
    pub destinations: Destinations,
}

impl GrantSection for HttpOutGrant {
    const KEYS: &'static [&'static str] = &["destinations"];

    fn read<'de, D: serde::Deserializer<'de>>(&mut self, key: &str, value: D) -> Result<(), D::Error> {
        use serde::Deserialize as _;
        if key == "destinations" {
            self.destinations = Destinations::deserialize(value)?;
        }
        Ok(())
    }

    fn summary(&self, parts: &mut Vec<String>) {
        if !self.destinations.is_empty() {
            parts.push(format!("sends {}", self.destinations.describe()));
        }
    }
}

/// The destinations an `http-out` grant allows: `"METHOD HOST"` or
/// `"METHOD HOST:PORT"`, `*` for any method (`"POST api.example.com"`,
/// `"* 127.0.0.1:9090"`). A host without a port allows every port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destinations(Vec<(String, String, Option<u16>)>);

impl Destinations {
    /// Whether a `method` request to `host` on `port` is allowed.
    pub fn allows(&self, method: &str, host: &str, port: u16) -> bool {
        self.0
            .iter()
            .any(|(m, h, p)| (m == "*" || m == method) && h.eq_ignore_ascii_case(host) && p.is_none_or(|p| p == port))
    }

    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The destinations, for people.
    pub fn describe(&self) -> String {
        let one = |(m, h, p): &(String, String, Option<u16>)| match p {
            Some(p) => format!("{m} {h}:{p}"),
            None => format!("{m} {h}"),
        };
        self.0.iter().map(one).collect::<Vec<_>>().join(", ")
    }
}

impl<'de> serde::Deserialize<'de> for Destinations {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let lines = <Vec<String> as serde::Deserialize>::deserialize(d)?;
        let mut out = Vec::new();
        for line in lines {
            let bad = || {
                serde::de::Error::custom(format!(
                    "destination {line:?} is not \"METHOD HOST\" or \"METHOD HOST:PORT\" (for example \"POST api.example.com\")"
                ))
            };
            let (method, target) = line.split_once(' ').ok_or_else(bad)?;
            if method != "*" && check_method(method).is_err() {
                return Err(bad());
            }
            let (host, port) = match target.rsplit_once(':') {
                Some((h, p)) if !h.starts_with('[') || h.ends_with(']') => {
                    (h, Some(p.parse::<u16>().map_err(|_| bad())?))
                }
                _ => (target, None),
            };
            if host.is_empty() || host == "*" || host.contains(['/', ' ', '@']) {
                return Err(bad());
            }
            out.push((method.to_string(), host.to_ascii_lowercase(), port));
        }
        Ok(Destinations(out))
    }
}

/// How an `http-out` channel sends (`sluice.toml`).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpOutSettings {
    /// What a request URL that is a path is relative to.
    pub base: Option<Url>,
    /// Tries of one request before it is dead.
    pub tries: u32,
    /// The longest one try may take.
    pub timeout: Duration,
    /// What is attached to every request as it is sent.
    pub credentials: super::secret::Credentials,
    /// The most bytes of an answer's body kept for a reply handler.
    pub reply_bytes: usize,
}

/// An `http-out` channel's section of `sluice.toml`.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HttpOutConfig {
    /// The `sql` channel whose save transactions hold the outbox.
    pub outbox: String,
    /// What a request URL that is a path (`/hooks/orders`) is relative to.
    pub base: Option<String>,
    /// Tries of one request before it is dead (8 by default).
    pub tries: Option<u32>,
    /// The longest one try may take (10000 by default).
    pub timeout_ms: Option<u64>,
    /// Credentials attached to every request when it is sent, from the
    /// environment or a file ([`super::secret`]); never stored in the
    /// outbox.
    pub credentials: Option<super::secret::CredentialsConfig>,
    /// The most bytes of an answer's body kept for the service's reply
    /// handler (65536 by default, at most 4 MiB).
    pub reply_bytes: Option<u64>,
}

impl super::KindConfig for HttpOutConfig {
    /// Its outbox.
    fn depends_on(&self) -> Option<&str> {
        Some(&self.outbox)
    }

    /// Opens the channel and registers its relay.
    fn open(&self, at: &mut Opening<'_>) -> Result<Arc<dyn Channel>, ChannelError> {
        let base = match &self.base {
            Some(b) => Some(Url::parse(b).map_err(|e| ChannelError::Invalid(format!("base {b:?}: {e}")))?),
            None => None,
        };
        let credentials = match &self.credentials {
            Some(c) => super::secret::Credentials::resolve(c)?,
            None => super::secret::Credentials::default(),
        };
        let settings = HttpOutSettings {
            base,
            tries: self.tries.unwrap_or(8).clamp(1, 100),
            timeout: Duration::from_millis(self.timeout_ms.unwrap_or(10_000).clamp(100, 120_000)),
            credentials,
            reply_bytes: usize::try_from(self.reply_bytes.unwrap_or(64 << 10).min(4 << 20)).unwrap_or(64 << 10),
        };
        let opened = Arc::new(HttpOutChannel::open(at.name(), settings, &self.outbox, at.base(&self.outbox)?)?);
        at.relay(opened.outbox(), opened.clone(), opened.wake());
        Ok(opened)
    }
}

/// An `http-out` channel.
pub struct HttpOutChannel {
    name: String,
    settings: HttpOutSettings,
    outbox: Arc<Outbox>,
    wake: Arc<Notify>,
    client: reqwest::Client,
}

impl HttpOutChannel {
    /// The channel `name` with its outbox in the `sql` channel `base_name`.
    pub fn open(
        name: &str,
        settings: HttpOutSettings,
        base_name: &str,
        base: Arc<dyn Channel>,
    ) -> Result<HttpOutChannel, ChannelError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ChannelError::Invalid(format!("cannot build the HTTP client: {e}")))?;
        let outbox = Arc::new(Outbox::open(name, base_name, base)?);
        Ok(HttpOutChannel { name: name.to_string(), settings, outbox, wake: Arc::new(Notify::new()), client })
    }

    /// The outbox its requests wait in.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// What a save wakes its relay with.
    pub fn wake(&self) -> &Arc<Notify> {
        &self.wake
    }

    /// The absolute URL a request names: itself, or a path under `base`.
    fn resolve(&self, url: &str) -> Result<Url, ChannelError> {
        let invalid = |why: String| ChannelError::Invalid(format!("url {url:?}: {why}"));
        let resolved = match (&self.settings.base, url.starts_with('/')) {
            (Some(base), true) => base.join(url.trim_start_matches('/')).map_err(|e| invalid(e.to_string()))?,
            (None, true) => {
                return Err(invalid(format!("channel {} has no base; give an absolute http(s) URL", self.name)));
            }
            (_, false) => Url::parse(url).map_err(|e| invalid(e.to_string()))?,
        };
        if !matches!(resolved.scheme(), "http" | "https") {
            return Err(invalid("only http and https are sent".into()));
        }
        if !resolved.username().is_empty() || resolved.password().is_some() {
            return Err(invalid("credentials in the URL are refused; send them in a header".into()));
        }
        if resolved.host_str().is_none_or(str::is_empty) {
            return Err(invalid("it names no host".into()));
        }
        Ok(resolved)
    }

    async fn send(&self, entry: &Entry) -> Result<Option<Answer>, Failure> {
        let permanent = |reason: String| Failure { reason, permanent: true, answer: None };
        let (method, url) = entry.target.split_once(' ').ok_or_else(|| permanent("a malformed row".into()))?;
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| permanent(e.to_string()))?;
        let mut url = Url::parse(url).map_err(|e| permanent(e.to_string()))?;
        self.settings.credentials.attach_query(&mut url);
        let mut request = self.client.request(method, url).header("Idempotency-Key", &entry.id);
        for (name, value) in &entry.headers.0 {
            request = request.header(name.as_str(), value.as_str());
        }
        let answer = self
            .settings
            .credentials
            .attach_headers(request)
            .body(entry.body.clone())
            .send()
            .await
            .map_err(|e| Failure { reason: error_chain(&e.without_url()), permanent: false, answer: None })?;
        let status = answer.status();
        let again = status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429);
        // The answer is read only for a service that asked for it, and
        // only as far as `reply-bytes`.
        let kept = match entry.reply {
            true => Some(self.read_answer(answer).await),
            false => None,
        };
        if status.is_success() {
            return Ok(kept);
        }
        Err(Failure { reason: format!("the receiver answered {status}"), permanent: !again, answer: kept })
    }

    /// The answer for a reply handler: status, headers and a body of at
    /// most `reply-bytes` (read no further), with why the body was not
    /// kept when it was longer.
    async fn read_answer(&self, mut answer: reqwest::Response) -> Answer {
        let status = answer.status().as_u16();
        let headers = answer
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let limit = self.settings.reply_bytes;
        let mut body = Vec::new();
        let mut cut = None;
        if answer.content_length().is_some_and(|n| n > limit as u64) {
            cut = Some(format!("the answer's body is longer than {limit} bytes (reply-bytes); it was not kept"));
        }
        while cut.is_none() {
            match answer.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() > limit => {
                    cut = Some(format!("the answer's body passed {limit} bytes (reply-bytes); it was not kept"));
                }
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => cut = Some(format!("the answer's body broke off: {}", error_chain(&e.without_url()))),
            }
        }
        if cut.is_some() {
            body.clear();
        }
        Answer { status, headers, body, cut }
    }
}

/// An error and its causes on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Deliver for HttpOutChannel {
    fn deliver<'a>(&'a self, entry: &'a Entry) -> Delivery<'a> {
        Box::pin(self.send(entry))
    }

    fn tries(&self) -> Option<u32> {
        Some(self.settings.tries)
    }

    fn timeout(&self) -> Duration {
        self.settings.timeout
    }
}

impl Channel for HttpOutChannel {
    fn kind(&self) -> Kind {
        crate::channels::http_out::KIND
    }

    fn check_command(&self, op: &Operation, caller: &Caller) -> Result<(), ChannelError> {
        let Operation::HttpOut(HttpOp::Send { method, url, headers, .. }) = op else {
            return Err(wrong_kind(crate::channels::http_out::KIND, op.kind(), &op.describe()));
        };
        let url = self.resolve(url)?;
        self.settings.credentials.check(&headers.0, &url).map_err(ChannelError::Invalid)?;
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(0);
        if caller.host || caller.grant.as_deref().is_some_and(|g| g.http_out.destinations.allows(method, host, port)) {
            return Ok(());
        }
        Err(ChannelError::Denied(Denial::ungranted(
            format!("send {method} requests to {host}:{port}"),
            format!("destinations = [\"{method} {host}:{port}\"]"),
        )))
    }

    fn shares(&self) -> Option<&str> {
        Some(self.outbox.base_name())
    }

    fn apply_shared(&self, tx: &mut dyn Transaction, op: &Operation, caller: &Caller) -> Result<Outcome, ChannelError> {
        let Operation::HttpOut(HttpOp::Send { method, url, headers, body, reply }) = op else {
            return Err(wrong_kind(crate::channels::http_out::KIND, op.kind(), &op.describe()));
        };
        // Checked again: the grant (or the base) may have changed since.
        self.check_command(op, caller)?;
        let target = format!("{method} {}", self.resolve(url)?);
        let service = caller.service.as_deref().unwrap_or("host");
        let id = self.outbox.insert(tx, service, &target, headers, body, caller)?;
        if let Some(reply) = reply {
            self.outbox.want_reply(tx, &id, service, &reply.handler, &reply.tag, caller)?;
        }
        Ok(Outcome::Affected(1))
    }

    fn committed(&self) {
        self.wake.notify_one();
    }

    fn begin(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        Err(super::outbox::no_transaction(&self.name, self.outbox.base_name()))
    }
}
