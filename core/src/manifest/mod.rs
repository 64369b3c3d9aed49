//! A service's manifest, `services/<name>.toml` beside its component: the
//! grants (which channels, tables and operations; which services it may
//! call) and its limits. No manifest means no grants: the service may
//! compute and nothing more.
//!
//! ```toml
//! calls = ["inventory"]
//!
//! [channels.main]
//! reads = ["products", "stock"]
//! inserts = ["orders"]
//! updates = ["orders"]
//! deletes = []
//! raw-sql = false
//!
//! [limits]
//! deadline-ms = 2000
//!
//! [http]
//! expose = ["place"]  # functions reachable over HTTP (none by default)
//! prefix = "/shop"    # only for a component exporting wasi:http/incoming-handler
//! ```

use std::collections::{BTreeMap, BTreeSet};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::limits::LimitSettings;

mod effects;
mod schedule;

pub use effects::Subscription;
pub use schedule::{Cron, Schedule, When};

// Each kind's section of a channel grant is the kind's own; these are its
// names here, where the manifest is read.
pub use crate::channels::grant::{ChannelGrant, Prefixes};
pub use crate::channels::http_out::Destinations;
pub use crate::channels::sql::grant::{Access, Tables, is_host_table, ungrantable};
pub use crate::command::{METHODS, check_method};

/// The most `[[schedule]]`s one manifest may have: each is a scope the
/// host starts on its own.
pub const MAX_SCHEDULES: usize = 16;

/// The parsed manifest of one service.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// Services this one may call, by name.
    #[serde(default)]
    pub calls: BTreeSet<String>,
    /// Grants per channel name.
    #[serde(default)]
    pub channels: BTreeMap<String, Arc<ChannelGrant>>,
    /// Limits that replace the host's defaults for this service.
    #[serde(default)]
    pub limits: LimitSettings,
    /// What `sluice serve` exposes of the service.
    #[serde(default)]
    pub http: Http,
    /// Subjects whose messages run the service (`[[subscribe]]`).
    #[serde(default)]
    pub subscribe: Vec<Subscription>,
    /// Functions run on a timer (`[[schedule]]`).
    #[serde(default)]
    pub schedule: Vec<Schedule>,
}

/// What of a service is reachable over HTTP. Nothing is by default: calls
/// between services need no exposure, only a grant.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Http {
    /// The functions `POST /services/NAME/FUNCTION` may call, or `"*"`.
    #[serde(default)]
    pub expose: Tables,
    /// Where a `wasi:http` component is mounted: every request whose path is
    /// the prefix or starts with the prefix and `/` goes to its handler.
    /// `/shop`: starts with `/`, no trailing `/`, not one of the host's own
    /// routes.
    pub prefix: Option<String>,
}

/// The paths `sluice serve` answers itself; no component may be mounted on
/// or under them.
pub const RESERVED_PREFIXES: [&str; 4] = ["/services", "/openapi.json", "/healthz", "/metrics"];

impl Http {
    /// Whether `path` falls under the mount prefix.
    pub fn covers(&self, path: &str) -> bool {
        self.prefix.as_deref().is_some_and(|prefix| {
            path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// Whether `POST /services/…/function` may call `function`.
    pub fn exposes(&self, function: &str) -> bool {
        self.expose.allows(function)
    }

    fn check(&self) -> Result<(), String> {
        let Some(p) = &self.prefix else { return Ok(()) };
        let fine_chars = p.chars().all(|c| c.is_ascii_alphanumeric() || "/-_.~".contains(c));
        if !p.starts_with('/') || p.len() < 2 || p.ends_with('/') || p.contains("//") || !fine_chars {
            return Err(format!(
                "http.prefix {p:?} must start with '/', not end with '/', and hold only letters, digits and /-_.~ (for example \"/shop\")"
            ));
        }
        if let Some(taken) = RESERVED_PREFIXES
            .iter()
            .find(|r| p == *r || p.starts_with(&format!("{r}/")) || r.starts_with(&format!("{p}/")))
        {
            return Err(format!("http.prefix {p:?} overlaps the host's own route {taken}; pick another"));
        }
        Ok(())
    }
}

impl Manifest {
    /// Where the manifest of the component at `component` lives: the same
    /// path with `.toml` instead of `.wasm`.
    pub fn path_for(component: &Path) -> PathBuf {
        component.with_extension("toml")
    }

    /// Reads the manifest beside `component`. A missing file is the empty
    /// manifest; an unreadable or invalid one is an error with the line.
    pub fn load(component: &Path) -> Result<Manifest, String> {
        let path = Manifest::path_for(component);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
            Err(e) => return Err(format!("cannot read manifest {}: {e}", path.display())),
        };
        Manifest::parse(&text).map_err(|e| format!("manifest {}: {e}", path.display()))
    }

    /// Parses manifest text.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))?;
        manifest.http.check()?;
        if manifest.schedule.len() > MAX_SCHEDULES {
            return Err(format!(
                "{} [[schedule]] tables; a service may have at most {MAX_SCHEDULES}",
                manifest.schedule.len()
            ));
        }
        for schedule in &manifest.schedule {
            schedule.check()?;
        }
        for subscription in &manifest.subscribe {
            subscription.check()?;
            let grant = manifest.channel(&subscription.channel);
            let literal = subscription.literal_prefix();
            if !grant.is_some_and(|g| g.bus.may_subscribe(&literal)) {
                return Err(format!(
                    "subscribe to {} on channel {} is not granted: add [channels.{}] read-subjects = [{:?}]",
                    subscription.subject, subscription.channel, subscription.channel, subscription.subject
                ));
            }
        }
        Ok(manifest)
    }

    /// What the manifest grants, one line per channel, for people:
    /// `main: reads products, orders; inserts orders`. Empty when it grants
    /// nothing on any channel. Each kind's section says its own part.
    pub fn summary(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (channel, grant) in &self.channels {
            let parts = grant.summary();
            if !parts.is_empty() {
                lines.push(format!("{channel}: {}", parts.join("; ")));
            }
        }
        lines
    }

    /// The grant for `channel`, if the manifest has one.
    pub fn channel(&self, channel: &str) -> Option<&Arc<ChannelGrant>> {
        self.channels.get(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grants_and_limits() -> Result<(), String> {
        let m = Manifest::parse(
            "calls = [\"inventory\"]\n[channels.main]\nreads = \"*\"\ninserts = [\"Orders\"]\nraw-sql = true\n\
             [limits]\ndeadline-ms = 500\n",
        )?;
        assert!(m.calls.contains("inventory"));
        let main = m.channel("main").ok_or("no main")?;
        assert!(main.sql.reads.allows("anything"));
        assert!(main.sql.inserts.allows("ORDERS"));
        assert!(!main.sql.updates.allows("orders"));
        assert!(main.sql.raw_sql);
        assert_eq!(m.limits.deadline_ms, Some(500));
        assert_eq!(m.summary(), ["main: reads every table; inserts orders; raw SQL"]);
        assert!(Manifest::default().summary().is_empty());
        Ok(())
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        let err = |t: &str| Manifest::parse(t).err().unwrap_or_default();
        assert!(err("[channels.main]\nwrites = [\"t\"]\n").contains("unknown field `writes`"));
        assert!(err("[channels.main]\nreads = \"orders\"\n").contains("write [\"orders\"]"));
        assert!(err("[limits]\ntimeout = 3\n").contains("unknown field `timeout`"));
        assert!(err("calls = \"inventory\"\n").contains("invalid type"));
    }
}
