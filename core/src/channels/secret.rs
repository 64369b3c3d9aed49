//! Credentials the host attaches to what an HTTP channel (`http`,
//! `http-out`) sends, which no service ever sees: an operator writes them in
//! `sluice.toml` as references, `${env:NAME}` or `${file:PATH}`, resolved
//! once when the channel opens, never as literal text, and never in a
//! manifest.
//!
//! ```toml
//! [channels.payments.credentials]
//! headers = { Authorization = "Bearer ${env:PAYMENTS_KEY}" }
//! basic = { user = "shop", password = "${file:/run/secrets/payments}" }
//! query = { api_key = "${env:PAYMENTS_KEY}" }
//! ```
//!
//! A resolved value is a [`Secret`]: it prints as `<secret>`, so no log
//! line, error, span or `Debug` dump shows it; the names it is attached
//! under are reserved, so a service can neither set nor override them
//! ([`Credentials::reserves_header`], [`Credentials::reserves_query`]).

use std::collections::BTreeMap;

use super::ChannelError;

/// A resolved credential: its text, which only [`Secret::expose`] gives.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The text, for the one place it is sent.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// The most bytes one credential may hold (a file read for one is read no
/// further).
const MAX_SECRET: usize = 16 << 10;

/// A channel's `credentials` table in `sluice.toml`, as written: templates,
/// not secrets.
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CredentialsConfig {
    /// Headers to attach: name to template.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Basic authentication: `Authorization: Basic …` from a user name and
    /// a password template.
    pub basic: Option<BasicConfig>,
    /// Query parameters to attach: name to template.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
}

/// `basic = { user = "…", password = "${env:…}" }`.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicConfig {
    /// The user name, as written (it may be literal).
    pub user: String,
    /// The password: a template with at least one reference.
    pub password: String,
}

/// Credentials resolved: what the host attaches to each request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Credentials {
    /// Headers, with lower-cased names.
    headers: Vec<(String, Secret)>,
    /// Basic authentication: user and password.
    basic: Option<(Secret, Secret)>,
    /// Query parameters.
    query: Vec<(String, Secret)>,
}

impl Credentials {
    /// Resolves `config`: every reference read now, from the environment
    /// or a file. (The channel's opener names the channel in an error.)
    pub fn resolve(config: &CredentialsConfig) -> Result<Credentials, ChannelError> {
        let bad = |what: &str, why: String| ChannelError::Invalid(format!("credentials {what}: {why}"));
        let mut headers = Vec::new();
        for (name, template) in &config.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(bad(&format!("header {name:?}"), "is not a header name".into()));
            }
            let value = resolve(template, true).map_err(|why| bad(&format!("header {name}"), why))?;
            if reqwest::header::HeaderValue::from_str(value.expose()).is_err() {
                return Err(bad(&format!("header {name}"), "its value is not a valid header value".into()));
            }
            headers.push((name.to_ascii_lowercase(), value));
        }
        let basic = match &config.basic {
            Some(b) => {
                let user = resolve(&b.user, false).map_err(|why| bad("basic user", why))?;
                let password = resolve(&b.password, true).map_err(|why| bad("basic password", why))?;
                if headers.iter().any(|(n, _)| n == "authorization") {
                    return Err(bad("basic", "an Authorization header is given too; give one or the other".into()));
                }
                Some((user, password))
            }
            None => None,
        };
        let mut query = Vec::new();
        for (name, template) in &config.query {
            if name.is_empty() {
                return Err(bad("query", "a parameter name is empty".into()));
            }
            query.push((name.clone(), resolve(template, true).map_err(|why| bad(&format!("query {name}"), why))?));
        }
        Ok(Credentials { headers, basic, query })
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.basic.is_none() && self.query.is_empty()
    }

    /// Whether a service's header `name` would set or override one of
    /// these: a service may not send it.
    pub fn reserves_header(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.headers.iter().any(|(n, _)| *n == name) || (self.basic.is_some() && name == "authorization")
    }

    /// Whether a service's URL query parameter `name` would set or override
    /// one of these.
    pub fn reserves_query(&self, name: &str) -> bool {
        self.query.iter().any(|(n, _)| n == name)
    }

    /// The refusal of a request whose headers or query touch these, if it
    /// does: `headers` as the service gave them, `url` as resolved.
    pub fn check(&self, headers: &[(String, String)], url: &reqwest::Url) -> Result<(), String> {
        if let Some((name, _)) = headers.iter().find(|(n, _)| self.reserves_header(n)) {
            return Err(format!(
                "header {name:?} carries the channel's credentials, which the host sets; a service may not set it"
            ));
        }
        if let Some((name, _)) = url.query_pairs().find(|(n, _)| self.reserves_query(n)) {
            return Err(format!(
                "query parameter {name:?} carries the channel's credentials, which the host sets; a service may not set it"
            ));
        }
        Ok(())
    }

    /// Adds the query parameters to `url`.
    pub fn attach_query(&self, url: &mut reqwest::Url) {
        if self.query.is_empty() {
            return;
        }
        let mut pairs = url.query_pairs_mut();
        for (name, value) in &self.query {
            pairs.append_pair(name, value.expose());
        }
    }

    /// Adds the headers (and basic authentication) to `request`.
    pub fn attach_headers(&self, mut request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.expose());
        }
        if let Some((user, password)) = &self.basic {
            request = request.basic_auth(user.expose(), Some(password.expose()));
        }
        request
    }
}

/// Resolves one secret's template, which must hold a reference (a
/// `secrets` channel's value): why not, when it cannot.
pub fn resolve_secret(template: &str) -> Result<Secret, String> {
    resolve(template, true)
}

/// A secret of `text`, for tests of the kinds that hold one.
#[cfg(test)]
pub(crate) fn test_secret(text: &str) -> Secret {
    Secret(text.to_string())
}

/// Resolves one template: literal text with `${env:NAME}` and
/// `${file:PATH}` references. With `secret`, at least one reference is
/// required: a credential written out in `sluice.toml` is refused.
fn resolve(template: &str, secret: bool) -> Result<Secret, String> {
    let mut out = String::new();
    let mut rest = template;
    let mut references = 0;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('}').ok_or_else(|| "a reference `${` is not closed with `}`".to_string())?;
        let reference = &rest[at + 2..at + end];
        out.push_str(&read(reference)?);
        references += 1;
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    if secret && references == 0 {
        return Err("is written out in sluice.toml; give it as ${env:NAME} or ${file:PATH}".into());
    }
    if out.len() > MAX_SECRET {
        return Err(format!("is longer than {MAX_SECRET} bytes"));
    }
    Ok(Secret(out))
}

/// The text of one reference: `env:NAME` or `file:PATH` (one trailing
/// newline of a file is dropped).
fn read(reference: &str) -> Result<String, String> {
    if let Some(name) = reference.strip_prefix("env:") {
        return match std::env::var(name) {
            Ok(value) if !value.is_empty() => Ok(value),
            Ok(_) => Err(format!("the environment variable {name} is empty")),
            Err(_) => Err(format!("the environment variable {name} is not set")),
        };
    }
    if let Some(path) = reference.strip_prefix("file:") {
        use std::io::Read as _;
        let file = std::fs::File::open(path).map_err(|e| format!("cannot open {path}: {e}"))?;
        let mut text = String::new();
        file.take(MAX_SECRET as u64 + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read {path} as text: {e}"))?;
        let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text).to_string();
        if text.is_empty() {
            return Err(format!("the file {path} is empty"));
        }
        return Ok(text);
    }
    Err(format!("`${{{reference}}}` is not ${{env:NAME}} or ${{file:PATH}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(headers: &[(&str, &str)]) -> CredentialsConfig {
        CredentialsConfig {
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            ..CredentialsConfig::default()
        }
    }

    #[test]
    fn references_resolve_and_never_print() {
        // (The process's own environment: setting a variable would need
        // unsafe code.)
        let home = std::env::var("HOME").expect("HOME is set");
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("key");
        std::fs::write(&file, "from-file\n").expect("write");
        let mut c = config(&[("Authorization", "Bearer ${env:HOME}")]);
        c.query.insert("key".into(), format!("${{file:{}}}", file.display()));
        let creds = Credentials::resolve(&c).expect("resolves");
        assert_eq!(creds.headers[0].1.expose(), format!("Bearer {home}"));
        assert_eq!(creds.query[0].1.expose(), "from-file");
        let shown = format!("{creds:?}");
        assert!(!shown.contains(&home) && !shown.contains("from-file"), "{shown}");
        assert!(creds.reserves_header("authorization") && creds.reserves_query("key"));
        assert!(!creds.reserves_header("x-other"));
    }

    #[test]
    fn literal_and_missing_secrets_are_refused() {
        let literal = Credentials::resolve(&config(&[("Authorization", "Bearer abc")])).expect_err("refused");
        assert!(literal.to_string().contains("${env:NAME}"), "{literal}");
        assert!(!literal.to_string().contains("abc"), "{literal}");
        let missing = Credentials::resolve(&config(&[("X-Key", "${env:SLUICE_TEST_UNSET_X}")])).expect_err("refused");
        assert!(missing.to_string().contains("SLUICE_TEST_UNSET_X is not set"), "{missing}");
        let other = Credentials::resolve(&config(&[("X-Key", "${vault:x}")])).expect_err("refused");
        assert!(other.to_string().contains("is not ${env:NAME}"), "{other}");
    }
}
