//! The manifest's grants for effects: the subjects that run a service
//! (`[[subscribe]]`) and the destinations of an `http-out` channel.

use serde::Deserialize;

/// `[[subscribe]]`: a subject of a `bus` channel whose messages each run
/// one scope calling the service's `handler.handle`.
///
/// ```toml
/// [[subscribe]]
/// channel = "events"
/// subject = "orders.placed"   # `*` matches one token, a last `>` the rest
/// tries = 5                   # then the message goes to the dead-letter subject
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Subscription {
    /// The `bus` channel.
    pub channel: String,
    /// The subject, as services publish it.
    pub subject: String,
    /// Runs of one message before it goes to the dead-letter subject
    /// (1 to 100; 5 by default).
    #[serde(default = "default_tries")]
    pub tries: u32,
}

fn default_tries() -> u32 {
    5
}

impl Subscription {
    /// The subject up to its first wildcard: `orders.` for `orders.>`,
    /// the whole subject when it has none. A grant's prefix must cover it.
    pub fn literal_prefix(&self) -> String {
        let mut literal = String::new();
        for token in self.subject.split('.') {
            if token == "*" || token == ">" {
                return literal;
            }
            literal.push_str(token);
            literal.push('.');
        }
        literal.pop();
        literal
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.tries) {
            return Err(format!("subscribe tries = {} must be from 1 to 100", self.tries));
        }
        let tokens: Vec<&str> = self.subject.split('.').collect();
        let fine = |t: &str| {
            !t.is_empty() && t.chars().all(|c| c.is_ascii_graphic()) && (t.len() == 1 || !t.contains(['*', '>']))
        };
        if self.subject.is_empty() || !tokens.iter().all(|t| fine(t)) || tokens[..tokens.len() - 1].contains(&">") {
            return Err(format!(
                "subscribe subject {:?} must be dot-separated tokens of printable ASCII, with `*` for one token and `>` only last",
                self.subject
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::Manifest;

    #[test]
    fn destinations_are_a_method_and_a_host() -> Result<(), String> {
        let m = Manifest::parse("[channels.hooks]\ndestinations = [\"POST 127.0.0.1\", \"* Api.Example.com:443\"]\n")?;
        let d = &m.channel("hooks").ok_or("no grant")?.http_out.destinations;
        assert!(d.allows("POST", "127.0.0.1", 9090));
        assert!(!d.allows("GET", "127.0.0.1", 9090));
        assert!(d.allows("DELETE", "api.example.com", 443));
        assert!(!d.allows("DELETE", "api.example.com", 80));
        assert!(!d.allows("POST", "evil.example.com", 443));
        for bad in ["POST", "FETCH host", "POST *", "POST host:port", "POST a/b", "POST user@host"] {
            let text = format!("[channels.hooks]\ndestinations = [\"{bad}\"]\n");
            assert!(Manifest::parse(&text).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn subscriptions_are_checked() {
        let parse = |s: &str, tries: u32| {
            Manifest::parse(&format!(
                "[channels.events]\nread-subjects = \"*\"\n[[subscribe]]\nchannel = \"events\"\nsubject = \"{s}\"\n\
                 tries = {tries}\n"
            ))
        };
        assert!(parse("orders.placed", 5).is_ok());
        assert!(parse("orders.*", 5).is_ok());
        assert!(parse("orders.>", 5).is_ok());
        assert!(parse("orders.>.x", 5).is_err());
        assert!(parse("orders..x", 5).is_err());
        assert!(parse("ord*rs", 5).is_err());
        assert!(parse("orders", 0).is_err());
        assert!(parse("orders", 101).is_err());
    }

    #[test]
    fn host_tables_are_in_no_grant() {
        let m = Manifest::parse("[channels.main]\nreads = \"*\"\n").unwrap_or_default();
        let main = m.channel("main").cloned().unwrap_or_default();
        assert!(main.sql.reads.allows("orders"));
        assert!(!main.sql.reads.allows("sluice_outbox"));
        assert!(!main.sql.reads.allows("SLUICE_KV"));
        assert!(Manifest::parse("[channels.main]\nreads = [\"sluice_inbox\"]\n").is_err());
    }

    #[test]
    fn a_subscription_needs_a_grant_of_its_subjects() {
        let sub = |grant: &str, subject: &str| {
            Manifest::parse(&format!(
                "[channels.events]\n{grant}\n[[subscribe]]\nchannel = \"events\"\nsubject = \"{subject}\"\n"
            ))
        };
        assert!(sub("read-subjects = [\"orders.\"]", "orders.placed").is_ok());
        assert!(sub("read-subjects = [\"orders.\"]", "orders.>").is_ok());
        assert!(sub("subjects = [\"orders.\"]", "orders.*").is_ok());
        let refused = sub("read-subjects = [\"orders.\"]", ">").err().unwrap_or_default();
        assert!(refused.contains("read-subjects = [\">\"]"), "{refused}");
        assert!(sub("read-subjects = [\"orders.\"]", "payments.done").is_err());
        assert!(sub("", "orders.placed").is_err());
    }
}
