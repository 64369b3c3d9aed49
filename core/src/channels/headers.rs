//! The headers of the effect commands (`publish` on a `bus` channel,
//! `send` on an `http-out` one): their form, and the ones a service may not
//! set.

use serde::Serialize;

/// The most headers one message or request may carry.
pub const MAX_HEADERS: usize = 64;

/// Request headers the host sets itself, or that belong to the connection:
/// a service may not set them.
const HOST_REQUEST_HEADERS: [&str; 11] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
    "idempotency-key",
];

/// A message's or request's headers, in order: `(name, value)`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// Their bytes, names and values.
    pub fn size(&self) -> usize {
        self.0.iter().map(|(n, v)| n.len() + v.len()).sum()
    }

    /// Checks a message's headers: well formed, and none of the `Nats-`
    /// headers, which steer JetStream (`Nats-Msg-Id` is the host's).
    pub fn check_message(&self) -> Result<(), String> {
        self.check_form()?;
        if let Some((name, _)) = self.0.iter().find(|(n, _)| n.to_ascii_lowercase().starts_with("nats-")) {
            return Err(format!("header {name:?} is reserved: Nats- headers steer the server, and the host sets them"));
        }
        Ok(())
    }

    /// Checks a request's headers: well formed, and none the host or the
    /// connection owns (`Host`, `Content-Length`, `Idempotency-Key` …).
    pub fn check_request(&self) -> Result<(), String> {
        self.check_form()?;
        if let Some((name, _)) = self.0.iter().find(|(n, _)| HOST_REQUEST_HEADERS.contains(&&*n.to_ascii_lowercase())) {
            return Err(format!("header {name:?} is set by the host; a service may not set it"));
        }
        Ok(())
    }

    fn check_form(&self) -> Result<(), String> {
        if self.0.len() > MAX_HEADERS {
            return Err(format!("{} headers; at most {MAX_HEADERS} are allowed", self.0.len()));
        }
        for (name, value) in &self.0 {
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || !name.chars().all(token) {
                return Err(format!("header name {name:?} is not a token (letters, digits and !#$%&'*+-.^_`|~)"));
            }
            // The rule the relay's HTTP client applies when it builds the
            // request (RFC 9110's field-value), checked here so that a
            // value it would refuse is refused when queued, not at delivery.
            if let Some(b) = value.bytes().find(|&b| !(b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80)) {
                return Err(format!("header {name:?} has the control character {b:#04x} in its value"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value is accepted when queued exactly when the relay's HTTP client
    /// accepts it at delivery: every character from U+0000 to U+00FF.
    #[test]
    fn header_values_are_judged_as_delivery_judges_them() {
        for c in (0u8..=255).map(char::from) {
            let value = format!("a{c}b");
            let queued = Headers(vec![("x-a".into(), value.clone())]).check_request().is_ok();
            let delivered = reqwest::header::HeaderValue::from_str(&value).is_ok();
            assert_eq!(queued, delivered, "{:#04x}", u32::from(c));
        }
    }

    #[test]
    fn headers_the_host_owns_are_refused() {
        let one = |n: &str, v: &str| Headers(vec![(n.into(), v.into())]);
        assert!(one("content-type", "application/json").check_request().is_ok());
        assert!(one("Idempotency-Key", "x").check_request().is_err());
        assert!(one("Host", "x").check_request().is_err());
        assert!(one("x-a", "b\r\nHost: evil").check_request().is_err());
        assert!(one("bad name", "x").check_request().is_err());
        assert!(one("Nats-Msg-Id", "x").check_message().is_err());
        assert!(one("trace", "x").check_message().is_ok());
        assert!(one("x-a", "tab\tand é").check_request().is_ok());
        assert!(one("x-a", "bell\u{7}").check_request().is_err());
    }
}
