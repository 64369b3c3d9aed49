//! The `http` channel kind: an HTTP API read at call time (`from.fetch`).
//!
//! A fetch is checked before anything is sent: the method is one the
//! channel allows (`GET` and `HEAD` unless `methods` says more), the path
//! is under the channel's `base` ([`fetch::Client::target`]), the headers
//! are well formed and none the host sets or the credentials use, and the
//! service's grant has a `fetch` entry for the method and path. The answer
//! is read within the caller's deadline and `result-bytes`, while it
//! streams in; a redirect is followed only when the channel allows it,
//! each hop passing the same checks.
//!
//! Serializable: an answer is kept like a read. Its digest is its status
//! and `ETag`, or, without one, its status and body. At save the request
//! is sent again (with `If-None-Match` when there was an `ETag`, where a
//! `304` holds) and a different digest is a conflict. Paths the manifest
//! lists in `relaxed-fetches` are not kept.

pub mod fetch;
pub mod grant;

use std::hash::Hasher as _;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

use self::fetch::{Answer, Asked, Client, Hop};
use super::headers::Headers;
use super::ops::Kind;
use super::secret::{Credentials, CredentialsConfig};
use super::{Caller, Channel, ChannelError, Denial, Fetches, Opening, Reading, Recheck, Transaction, wrong_kind};
use crate::bindings::{Rows, Value};
use crate::channels::ops::{Operation, Outcome};

/// The `http` kind.
pub const KIND: Kind = Kind::named("http");

/// The columns of the one row a fetch's [`Reading`] holds.
pub const COLUMNS: [&str; 3] = ["status", "headers", "body"];

/// An `http` channel's section of `sluice.toml`.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HttpConfig {
    /// The API every path is under: `https://api.example.com/v1`.
    pub base: String,
    /// The methods a fetch may use (`["GET", "HEAD"]` by default).
    pub methods: Option<Vec<String>>,
    /// How many redirects one fetch follows, each within the base and the
    /// service's grant (0 by default: a redirect is answered as it came).
    pub redirects: Option<u32>,
    /// The longest one request may take (10000 by default), whatever the
    /// caller's deadline.
    pub timeout_ms: Option<u64>,
    /// The most fetches one scope may make on the channel (16 by default).
    pub fetches_per_scope: Option<u32>,
    /// Credentials attached to every request, from the environment or a
    /// file ([`super::secret`]).
    pub credentials: Option<CredentialsConfig>,
}

impl super::KindConfig for HttpConfig {
    fn open(&self, at: &mut Opening<'_>) -> Result<Arc<dyn Channel>, ChannelError> {
        let name = at.name().to_string();
        let invalid = ChannelError::Invalid;
        let base = Url::parse(&self.base).map_err(|e| invalid(format!("base {:?}: {e}", self.base)))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none_or(str::is_empty) {
            return Err(invalid(format!("base {:?} is not an http(s) URL with a host", self.base)));
        }
        if !base.username().is_empty() || base.password().is_some() || base.query().is_some() {
            return Err(invalid("base holds credentials or a query; give them under credentials".into()));
        }
        let methods = self.methods.clone().unwrap_or_else(|| vec!["GET".into(), "HEAD".into()]);
        for m in &methods {
            super::http_out::check_method(m).map_err(invalid)?;
        }
        let credentials = match &self.credentials {
            Some(c) => Credentials::resolve(c)?,
            None => Credentials::default(),
        };
        let timeout = Duration::from_millis(self.timeout_ms.unwrap_or(10_000).clamp(100, 120_000));
        let client = Client::new(&name, base, timeout, credentials)?;
        Ok(Arc::new(HttpChannel {
            inner: Arc::new(Inner {
                methods,
                redirects: self.redirects.unwrap_or(0).min(10),
                per_scope: self.fetches_per_scope.unwrap_or(16).clamp(1, 1000),
                client,
            }),
        }))
    }
}

/// An `http` channel.
pub struct HttpChannel {
    inner: Arc<Inner>,
}

struct Inner {
    methods: Vec<String>,
    redirects: u32,
    per_scope: u32,
    client: Client,
}

impl Inner {
    fn name(&self) -> &str {
        &self.client.name
    }

    /// Checks `asked` for `caller` before anything is sent: method, path,
    /// headers, body and grant. Returns its URL.
    fn check(&self, asked: &Asked, caller: &Caller) -> Result<Url, ChannelError> {
        if !self.methods.contains(&asked.method) {
            return Err(ChannelError::Invalid(format!(
                "channel {} allows {} (its methods in sluice.toml), not {:?}",
                self.name(),
                self.methods.join(", "),
                asked.method
            )));
        }
        let url = self.client.target(&asked.path)?;
        let headers = Headers(asked.headers.clone());
        headers.check_request().map_err(ChannelError::Invalid)?;
        if let Some((name, _)) = asked.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("if-none-match")) {
            return Err(ChannelError::Invalid(format!(
                "header {name:?} is set by the host, which checks the answer at save"
            )));
        }
        self.client.credentials.check(&asked.headers, &url).map_err(ChannelError::Invalid)?;
        if matches!(asked.method.as_str(), "GET" | "HEAD") && !asked.body.is_empty() {
            return Err(ChannelError::Invalid(format!("a {} request has no body", asked.method)));
        }
        granted(asked, caller).map(|()| url)
    }

    /// Sends `asked` and reads its answer, following as many redirects as
    /// the channel allows, each hop checked as the first; a redirect past
    /// them is answered as it came.
    fn send(
        &self,
        asked: &Asked,
        condition: Option<&str>,
        caller: &Caller,
        max_bytes: usize,
    ) -> Result<Answer, ChannelError> {
        let mut url = self.check(asked, caller)?;
        let mut hop = asked.clone();
        for followed in 0..=self.redirects {
            let follow = followed < self.redirects;
            match self.client.hop(&hop, url.clone(), condition, follow, caller, max_bytes)? {
                Hop::Answer(answer) => return Ok(answer),
                Hop::Redirect(method, location) => {
                    let Some(path) = self.client.path_of(&url, &location) else {
                        return Err(ChannelError::Invalid(format!(
                            "{} {} redirected outside the channel's base",
                            hop.method,
                            hop.route()
                        )));
                    };
                    if method != "*" {
                        hop.method = method;
                        hop.body.clear();
                    }
                    hop.path = path;
                    url = self.check(&hop, caller)?;
                }
            }
        }
        // (The last hop follows nothing, so it always answers.)
        Err(ChannelError::Unavailable(format!("more than {} redirects", self.redirects)))
    }
}

/// Whether `caller`'s grant has a `fetch` entry for `asked`'s method and
/// path; the refusal names the line that would grant it. (A replayed case
/// checks fetches with it too.)
pub fn granted(asked: &Asked, caller: &Caller) -> Result<(), ChannelError> {
    let route = asked.route();
    if caller.host || caller.grant.as_deref().is_some_and(|g| g.http.fetch.allows(&asked.method, route)) {
        return Ok(());
    }
    Err(ChannelError::Denied(Denial::ungranted(
        format!("fetch {} {route}", asked.method),
        format!("fetch = [\"{} {route}\"]", asked.method),
    )))
}

/// The digest of an answer: its status and `ETag`, or without one its
/// status and body.
fn digest(status: u16, etag: Option<&str>, body: &[u8]) -> u64 {
    let mut d = super::digester();
    d.write_u16(status);
    match etag {
        Some(tag) => {
            d.write_u8(1);
            d.write(tag.as_bytes());
        }
        None => {
            d.write_u8(0);
            d.write_usize(body.len());
            d.write(body);
        }
    }
    d.finish()
}

/// What the save sends again: method, path, headers (JSON), body, the
/// status seen and the `ETag` seen (empty for none).
fn recheck_params(asked: &Asked, answer: &Answer) -> Vec<Value> {
    vec![
        Value::Text(asked.method.clone()),
        Value::Text(asked.path.clone()),
        Value::Text(serde_json::to_string(&asked.headers).unwrap_or_default()),
        Value::Blob(asked.body.clone()),
        Value::Integer(answer.status.into()),
        Value::Text(answer.etag().unwrap_or_default().to_string()),
    ]
}

/// A fetch as [`recheck_params`] wrote it, with the status and `ETag` seen.
fn from_params(params: &[Value]) -> Option<(Asked, u16, Option<String>)> {
    let [
        Value::Text(method),
        Value::Text(path),
        Value::Text(headers),
        Value::Blob(body),
        Value::Integer(status),
        Value::Text(etag),
    ] = params
    else {
        return None;
    };
    let asked = Asked {
        method: method.clone(),
        path: path.clone(),
        headers: serde_json::from_str(headers).ok()?,
        body: body.clone(),
    };
    Some((asked, u16::try_from(*status).ok()?, (!etag.is_empty()).then(|| etag.clone())))
}

/// An answer as the one row of a [`Reading`]: status, headers (one
/// `name: value` per line) and body.
pub fn answer_rows(answer: &Answer) -> Rows {
    let headers: String = answer.headers.iter().map(|(n, v)| format!("{n}: {v}\n")).collect();
    Rows {
        columns: COLUMNS.iter().map(ToString::to_string).collect(),
        values: vec![vec![
            Value::Integer(answer.status.into()),
            Value::Text(headers),
            Value::Blob(answer.body.clone()),
        ]],
    }
}

/// The answer a [`Reading`]'s row holds ([`answer_rows`]).
pub fn rows_answer(rows: &Rows) -> Option<Answer> {
    let [Value::Integer(status), Value::Text(headers), body] = rows.values.first()?.as_slice() else {
        return None;
    };
    let body = match body {
        Value::Blob(_) | Value::Text(_) => super::outbox::bytes(body),
        _ => return None,
    };
    let headers =
        headers.lines().filter_map(|line| line.split_once(": ").map(|(n, v)| (n.to_string(), v.to_string()))).collect();
    Some(Answer { status: u16::try_from(*status).ok()?, headers, body })
}

impl Fetches for HttpChannel {
    fn fetch(&self, asked: &Asked, caller: &Caller, max_bytes: usize) -> Result<Reading, ChannelError> {
        let answer = self.inner.send(asked, None, caller, max_bytes)?;
        let digest = digest(answer.status, answer.etag(), &answer.body);
        let recheck = Recheck {
            channel: self.inner.name().to_string(),
            statement: format!("{} {}", asked.method, asked.path),
            params: recheck_params(asked, &answer),
            host: false,
            asked: format!("fetch {} {}", asked.method, asked.path),
        };
        Ok(Reading {
            rows: answer_rows(&answer),
            digest,
            tables: vec![asked.route().to_string()],
            volatile: false,
            recheck: Some(recheck),
        })
    }

    fn per_scope(&self) -> u32 {
        self.inner.per_scope
    }
}

impl Channel for HttpChannel {
    fn kind(&self) -> Kind {
        KIND
    }

    fn fetches(&self) -> Option<&dyn Fetches> {
        Some(self)
    }

    /// An `http` channel takes no commands: what a service sends after its
    /// save goes through an `http-out` channel.
    fn check_command(&self, op: &Operation, _: &Caller) -> Result<(), ChannelError> {
        Err(wrong_kind(KIND, op.kind(), &op.describe()))
    }

    /// The save's part: sending its kept fetches again.
    fn begin(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        Ok(Box::new(Check { inner: Arc::clone(&self.inner) }))
    }
}

/// A save's transaction on an `http` channel: it applies nothing, and
/// checks the kept fetches by sending them again.
struct Check {
    inner: Arc<Inner>,
}

impl Transaction for Check {
    fn apply(&mut self, op: &Operation, _: &Caller) -> Result<Outcome, ChannelError> {
        Err(wrong_kind(KIND, op.kind(), &op.describe()))
    }

    fn digest(&mut self, _: &str, params: &[Value], caller: &Caller, max_bytes: usize) -> Result<u64, ChannelError> {
        let (asked, status, etag) =
            from_params(params).ok_or_else(|| ChannelError::Invalid("a malformed kept fetch".into()))?;
        let answer = self.inner.send(&asked, etag.as_deref(), caller, max_bytes)?;
        if answer.status == 304 && etag.is_some() {
            return Ok(digest(status, etag.as_deref(), &[]));
        }
        Ok(digest(answer.status, answer.etag(), &answer.body))
    }

    fn commit(self: Box<Self>) -> Result<(), ChannelError> {
        Ok(())
    }
}
