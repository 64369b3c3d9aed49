//! What a service may fetch from an `http` channel (`[channels.NAME]` of its
//! manifest): `fetch = ["GET /quotes/", "* /status"]`, a method (or `*`,
//! any the channel allows) and a path prefix under the channel's `base`;
//! and `relaxed-fetches`, path prefixes whose answers the save does not
//! check.

use crate::channels::grant::GrantSection;

/// A service's grant on an `http` channel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpGrant {
    /// What it may fetch.
    pub fetch: Fetchable,
    /// Paths whose answers are not checked at save.
    pub relaxed_fetches: Paths,
}

impl GrantSection for HttpGrant {
    const KEYS: &'static [&'static str] = &["fetch", "relaxed-fetches"];

    fn read<'de, D: serde::Deserializer<'de>>(&mut self, key: &str, value: D) -> Result<(), D::Error> {
        use serde::Deserialize as _;
        match key {
            "fetch" => self.fetch = Fetchable::deserialize(value)?,
            _ => self.relaxed_fetches = Paths::deserialize(value)?,
        }
        Ok(())
    }

    fn summary(&self, parts: &mut Vec<String>) {
        if !self.fetch.0.is_empty() {
            parts.push(format!("fetches {}", self.fetch.describe()));
        }
        if !self.relaxed_fetches.0.is_empty() {
            parts.push(format!("relaxed fetches {}", self.relaxed_fetches.0.join(", ")));
        }
    }
}

/// `"METHOD /prefix"` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetchable(Vec<(String, String)>);

impl Fetchable {
    /// Whether a `method` fetch of `path` (without its query) is allowed.
    pub fn allows(&self, method: &str, path: &str) -> bool {
        self.0.iter().any(|(m, prefix)| (m == "*" || m == method) && under(path, prefix))
    }

    /// The entries, for people.
    pub fn describe(&self) -> String {
        self.0.iter().map(|(m, p)| format!("{m} {p}")).collect::<Vec<_>>().join(", ")
    }
}

/// Path prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paths(Vec<String>);

impl Paths {
    /// Whether `path` is under one of them.
    pub fn allows(&self, path: &str) -> bool {
        self.0.iter().any(|prefix| under(path, prefix))
    }
}

/// Whether `path` is `prefix` or under it, segment by segment: `/quotes`
/// covers `/quotes` and `/quotes/1`, not `/quotesX`; `/` covers every path.
pub fn under(path: &str, prefix: &str) -> bool {
    let Some(rest) = path.strip_prefix(prefix) else { return false };
    prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/')
}

fn prefix(p: &str) -> Result<String, String> {
    if !p.starts_with('/') || p.contains(['?', '#', '\\', ' ']) || p.contains("//") {
        return Err(format!("path prefix {p:?} must start with / and hold no ?, #, \\, space or //"));
    }
    if p.split('/').any(|segment| segment == "." || segment == "..") || p.to_ascii_lowercase().contains('%') {
        return Err(format!("path prefix {p:?} holds a dot segment or a %-escape"));
    }
    Ok(p.to_string())
}

impl<'de> serde::Deserialize<'de> for Fetchable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let lines = <Vec<String> as serde::Deserialize>::deserialize(d)?;
        let mut out = Vec::new();
        for line in lines {
            let bad = |why: String| {
                serde::de::Error::custom(format!(
                    "fetch entry {line:?} is not \"METHOD /path-prefix\" (for example \"GET /quotes/\"): {why}"
                ))
            };
            let (method, path) = line.split_once(' ').ok_or_else(|| bad("no space".into()))?;
            if method != "*" {
                crate::channels::http_out::check_method(method).map_err(bad)?;
            }
            out.push((method.to_string(), prefix(path).map_err(bad)?));
        }
        Ok(Fetchable(out))
    }
}

impl<'de> serde::Deserialize<'de> for Paths {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Some(list) = crate::channels::grant::list_or_star(d, "path prefixes")? else {
            return Ok(Paths(vec!["/".into()]));
        };
        list.iter().map(|p| prefix(p)).collect::<Result<_, _>>().map(Paths).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cover_whole_segments() {
        assert!(under("/quotes", "/quotes") && under("/quotes/1", "/quotes") && under("/quotes/1", "/quotes/"));
        assert!(!under("/quotesX", "/quotes") && !under("/quote", "/quotes"));
        assert!(under("/anything", "/"));
        let grant: HttpGrant = toml::from_str::<crate::channels::grant::ChannelGrant>(
            "fetch = [\"GET /quotes/\", \"* /status\"]\nrelaxed-fetches = [\"/status\"]",
        )
        .expect("a grant")
        .http;
        assert!(grant.fetch.allows("GET", "/quotes/1") && !grant.fetch.allows("POST", "/quotes/1"));
        assert!(grant.fetch.allows("HEAD", "/status") && !grant.fetch.allows("GET", "/admin"));
        assert!(grant.relaxed_fetches.allows("/status") && !grant.relaxed_fetches.allows("/quotes/1"));
        for bad in
            ["fetch = [\"GET quotes\"]", "fetch = [\"GET /a/../b\"]", "fetch = [\"GET /a%2f\"]", "fetch = [\"GRAB /\"]"]
        {
            assert!(toml::from_str::<crate::channels::grant::ChannelGrant>(bad).is_err(), "{bad}");
        }
    }
}
