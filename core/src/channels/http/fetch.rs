//! One fetch of an `http` channel: the path checked and placed under the
//! channel's `base`, the request sent on the channel's own runtime with the
//! credentials attached, and the answer read within the caller's deadline
//! and byte limit, stopping at the limit while the body streams in.
//! Redirects are followed one hop at a time by the caller ([`Hop`]), so
//! that each hop's target passes the same checks as the first.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::Url;

use crate::channels::secret::Credentials;
use crate::channels::{Caller, ChannelError};

/// What a service asked to fetch, as the channel sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Asked {
    /// `GET`.
    pub method: String,
    /// The path under the base, with its query: `/quotes/1?size=3`.
    pub path: String,
    /// The service's headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Asked {
    /// The path without its query: what grants are matched against.
    pub fn route(&self) -> &str {
        self.path.split_once('?').map_or(&self.path, |(p, _)| p)
    }
}

/// An answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Its status code.
    pub status: u16,
    /// Its headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
}

impl Answer {
    /// Its `ETag`, when it has one.
    pub fn etag(&self) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == "etag").map(|(_, v)| v.as_str())
    }
}

/// What one hop came back with.
pub enum Hop {
    /// An answer.
    Answer(Answer),
    /// A redirect to follow: the method to follow it with and where.
    Redirect(String, String),
}

/// The sending side of an `http` channel: its client, on a runtime of its
/// own (a scope's thread waits for the answer, with its deadline and
/// cancel flag).
pub struct Client {
    /// The channel's name, for errors.
    pub name: String,
    /// The base every path is under.
    pub base: Url,
    /// The longest one request may take, whatever the caller's deadline.
    pub timeout: Duration,
    /// The credentials attached to every request.
    pub credentials: Credentials,
    http: reqwest::Client,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Client {
    /// A client of channel `name` for `base`.
    pub fn new(name: &str, base: Url, timeout: Duration, credentials: Credentials) -> Result<Client, ChannelError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("sluice-http-{name}"))
            .enable_all()
            .build()
            .map_err(|e| ChannelError::Invalid(format!("cannot start its runtime: {e}")))?;
        let http = {
            let _in = runtime.enter();
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| ChannelError::Invalid(format!("cannot build the HTTP client: {e}")))?
        };
        Ok(Client { name: name.to_string(), base, timeout, credentials, http, runtime: Some(runtime) })
    }

    /// The URL of `path` under the base: `path` starts with `/`, holds no
    /// dot segment, backslash, fragment or escaped `/`, `\` or `.`, so
    /// that what a grant matched is what the API gets.
    pub fn target(&self, path: &str) -> Result<Url, ChannelError> {
        let invalid = |why: &str| ChannelError::Invalid(format!("path {path:?} {why}"));
        if !path.starts_with('/') || path.starts_with("//") {
            return Err(invalid("must be a path under the channel's base, starting with one /"));
        }
        if path.contains(['#', '\\']) || path.chars().any(|c| c.is_control() || c == ' ') {
            return Err(invalid("holds a #, a \\, a space or a control character"));
        }
        let route = path.split_once('?').map_or(path, |(p, _)| p);
        let lower = route.to_ascii_lowercase();
        if ["%2f", "%5c", "%2e", "%00"].iter().any(|e| lower.contains(e)) {
            return Err(invalid("escapes a /, \\, . or NUL"));
        }
        if route.split('/').any(|s| s == "." || s == "..") || route.contains("//") {
            return Err(invalid("holds a dot segment or an empty one"));
        }
        let base = self.base.as_str().trim_end_matches('/');
        let url = Url::parse(&format!("{base}{path}")).map_err(|e| invalid(&e.to_string()))?;
        if url.origin() != self.base.origin() || !url.path().starts_with(self.base.path().trim_end_matches('/')) {
            return Err(invalid("leaves the channel's base"));
        }
        Ok(url)
    }

    /// The path under the base of a redirect's `location`, seen from
    /// `from`; `None` when it leaves the base.
    pub fn path_of(&self, from: &Url, location: &str) -> Option<String> {
        let to = from.join(location).ok()?;
        if to.origin() != self.base.origin() {
            return None;
        }
        let base = self.base.path().trim_end_matches('/');
        let path = to.path().strip_prefix(base)?;
        if !path.starts_with('/') {
            return None;
        }
        // The credentials' parameters are the host's; they are attached
        // again, never carried over from the API's answer.
        let query: Vec<(String, String)> = to
            .query_pairs()
            .filter(|(n, _)| !self.credentials.reserves_query(n))
            .map(|(n, v)| (n.into(), v.into()))
            .collect();
        let mut out = path.to_string();
        if !query.is_empty() {
            let mut encoded = Url::parse("http://x/").ok()?;
            encoded.query_pairs_mut().extend_pairs(query);
            out.push('?');
            out.push_str(encoded.query().unwrap_or_default());
        }
        Some(out)
    }

    /// Sends one hop of `asked` (to `url`, from [`Client::target`]) and
    /// waits for it within `caller`'s deadline: an answer whose headers and
    /// body fit in `max_bytes`, or, when `follow`, the redirect it named.
    /// `condition` is an `If-None-Match` value.
    pub fn hop(
        &self,
        asked: &Asked,
        url: Url,
        condition: Option<&str>,
        follow: bool,
        caller: &Caller,
        max_bytes: usize,
    ) -> Result<Hop, ChannelError> {
        let now = Instant::now();
        if caller.deadline <= now {
            return Err(ChannelError::Timeout);
        }
        let by_caller = caller.deadline - now < self.timeout;
        let within = (caller.deadline - now).min(self.timeout);
        let mut url = url;
        self.credentials.attach_query(&mut url);
        let method = reqwest::Method::from_bytes(asked.method.as_bytes())
            .map_err(|e| ChannelError::Invalid(format!("method {:?}: {e}", asked.method)))?;
        let mut request = self.http.request(method, url).timeout(within);
        for (name, value) in &asked.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(etag) = condition {
            request = request.header("if-none-match", etag);
        }
        request = self.credentials.attach_headers(request).body(asked.body.clone());
        let what = format!("{} {} {}", self.name, asked.method, asked.route());
        let (tx, rx) = mpsc::sync_channel(1);
        let runtime = self.runtime.as_ref().ok_or_else(|| ChannelError::Unavailable("the channel is closed".into()))?;
        let task = runtime.spawn(async move {
            let _ = tx.send(send(request, follow, max_bytes).await);
        });
        let outcome = loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(outcome) => break outcome,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Err(Sent::Failed("the request's task ended without an answer".into()));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let cancelled = caller.cancel.as_ref().is_some_and(crate::work::Canceller::is_cancelled);
                    if cancelled || Instant::now() >= now + within {
                        task.abort();
                        break Err(Sent::TimedOut);
                    }
                }
            }
        };
        match outcome {
            Ok(hop) => Ok(hop),
            Err(Sent::TooLarge(bytes)) => Err(ChannelError::TooLarge { bytes }),
            Err(Sent::TimedOut) if by_caller => Err(ChannelError::Timeout),
            Err(Sent::TimedOut) => Err(ChannelError::Unavailable(format!(
                "{what}: no answer within the channel's {} ms",
                self.timeout.as_millis()
            ))),
            Err(Sent::Failed(why)) => Err(ChannelError::Unavailable(format!("{what}: {why}"))),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Without waiting: a channel may be dropped on an async thread.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Why a hop ended without an answer.
enum Sent {
    TooLarge(usize),
    TimedOut,
    Failed(String),
}

/// Sends `request` and reads its answer, at most `max_bytes` of headers
/// and body (a `Content-Length` over it is refused before any of the
/// body is read).
async fn send(request: reqwest::RequestBuilder, follow: bool, max_bytes: usize) -> Result<Hop, Sent> {
    let mut answer = request.send().await.map_err(failed)?;
    let status = answer.status();
    let location = answer.headers().get("location").and_then(|l| l.to_str().ok()).map(str::to_string);
    if follow
        && status.is_redirection()
        && status != reqwest::StatusCode::NOT_MODIFIED
        && let Some(location) = location
    {
        return Ok(Hop::Redirect(redirect_method(status.as_u16()).to_string(), location));
    }
    let mut bytes = 0;
    let mut headers = Vec::with_capacity(answer.headers().len());
    for (name, value) in answer.headers() {
        bytes += name.as_str().len() + value.len();
        headers.push((name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()));
    }
    if bytes > max_bytes {
        return Err(Sent::TooLarge(bytes));
    }
    if let Some(length) = answer.content_length()
        && bytes.saturating_add(usize::try_from(length).unwrap_or(usize::MAX)) > max_bytes
    {
        return Err(Sent::TooLarge(bytes.saturating_add(usize::try_from(length).unwrap_or(usize::MAX))));
    }
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await.map_err(failed)? {
        if bytes + body.len() + chunk.len() > max_bytes {
            return Err(Sent::TooLarge(bytes + body.len() + chunk.len()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Hop::Answer(Answer { status: status.as_u16(), headers, body }))
}

/// The method a redirect is followed with: `GET` after a 303 (and, as
/// clients do, after a 301 or 302); the same method after a 307 or 308.
/// (`*` stands for "the same".)
fn redirect_method(status: u16) -> &'static str {
    match status {
        307 | 308 => "*",
        _ => "GET",
    }
}

/// A client error and its causes on one line, without its URL (which
/// holds the credentials' query parameters).
fn failed(e: reqwest::Error) -> Sent {
    let timeout = if e.is_timeout() { "timed out: " } else { "" };
    Sent::Failed(format!("{timeout}{}", crate::channels::http_out::error_chain(&e.without_url())))
}
