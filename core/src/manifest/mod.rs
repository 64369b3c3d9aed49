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

pub use effects::{Destinations, METHODS, Subscription, check_method};

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

/// What a statement or command does to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Reads rows.
    Read,
    /// Inserts rows.
    Insert,
    /// Updates rows.
    Update,
    /// Deletes rows.
    Delete,
}

impl Access {
    /// The manifest key that grants it.
    pub fn key(self) -> &'static str {
        match self {
            Access::Read => "reads",
            Access::Insert => "inserts",
            Access::Update => "updates",
            Access::Delete => "deletes",
        }
    }

    /// The verb, for messages: `insert into`.
    pub fn verb(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Insert => "insert into",
            Access::Update => "update",
            Access::Delete => "delete from",
        }
    }
}

/// What a service may do on one channel.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ChannelGrant {
    /// Tables it may read (`from.query`, and the tables a written statement reads).
    #[serde(default)]
    pub reads: Tables,
    /// Tables it may insert into.
    #[serde(default)]
    pub inserts: Tables,
    /// Tables it may update.
    #[serde(default)]
    pub updates: Tables,
    /// Tables it may delete from.
    #[serde(default)]
    pub deletes: Tables,
    /// Whether its raw SQL may change the schema (`CREATE`, `DROP`, `ALTER`
    /// …). Table accesses still need their grants, and no grant allows
    /// transaction control, `ATTACH`, pragmas or SQL functions outside the
    /// allow-list.
    #[serde(default)]
    pub raw_sql: bool,
    /// Tables whose reads are not checked at save: a scope that read only
    /// these may save over changes made since (listing a catalogue, reading
    /// a price). Reads of other tables are checked.
    #[serde(default)]
    pub relaxed_reads: Tables,
    /// Key prefixes of a `kv` channel it may read and write (`["cart/"]`;
    /// `"*"` for every key).
    #[serde(default)]
    pub keys: Prefixes,
    /// Key prefixes of a `kv` channel it may only read.
    #[serde(default)]
    pub read_keys: Prefixes,
    /// Subject prefixes of a `bus` channel it may publish on
    /// (`["orders."]`; `"*"` for every subject).
    #[serde(default)]
    pub subjects: Prefixes,
    /// Subject prefixes of a `bus` channel whose messages it may be run by
    /// (`[[subscribe]]`), besides those of `subjects`.
    #[serde(default)]
    pub read_subjects: Prefixes,
    /// Where an `http-out` channel may send its requests.
    #[serde(default)]
    pub destinations: Destinations,
}

/// Key prefixes of a `kv` channel: a key is covered when it starts with
/// one of them. `"*"` covers every key. Keys compare byte for byte.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Prefixes(Vec<String>);

impl Prefixes {
    /// Whether `key` starts with a listed prefix.
    pub fn allows(&self, key: &str) -> bool {
        self.0.iter().any(|p| key.starts_with(p.as_str()))
    }

    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The prefixes, for people: `cart/, hits/`; `every key` for `"*"`.
    pub fn describe(&self) -> String {
        if self.0.iter().any(String::is_empty) {
            return "every key".into();
        }
        self.0.join(", ")
    }
}

impl<'de> Deserialize<'de> for Prefixes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // "*" is every key: the empty prefix.
        let Some(prefixes) = list_or_star(d, "key prefixes")? else { return Ok(Prefixes(vec![String::new()])) };
        if prefixes.iter().any(String::is_empty) {
            return Err(serde::de::Error::custom("a key prefix is empty; write \"*\" for every key"));
        }
        Ok(Prefixes(prefixes))
    }
}

/// A set of table names, or every table (`"*"`). Names compare without
/// regard to case, as SQL's do.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Tables {
    /// No table.
    #[default]
    None,
    /// Every table.
    All,
    /// These tables, lower-cased.
    Some(BTreeSet<String>),
}

impl Tables {
    /// Whether `table` is in the set.
    pub fn allows(&self, table: &str) -> bool {
        if ungrantable(table).is_some() {
            return false;
        }
        match self {
            Tables::None => false,
            Tables::All => true,
            // Names are kept lower-cased; most arrive so already.
            Tables::Some(names) if table.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) => {
                names.contains(&table.to_lowercase())
            }
            Tables::Some(names) => names.contains(table),
        }
    }
}

impl<'de> Deserialize<'de> for Tables {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Some(names) = list_or_star(d, "tables")? else { return Ok(Tables::All) };
        if let Some(empty) = names.iter().find(|n| n.trim().is_empty()) {
            return Err(serde::de::Error::custom(format!("table name {empty:?} is empty")));
        }
        if let Some((name, whose)) = names.iter().find_map(|n| ungrantable(n).map(|w| (n, w))) {
            return Err(serde::de::Error::custom(format!("table {name:?} is {whose}; no grant covers it")));
        }
        if names.is_empty() {
            return Ok(Tables::None);
        }
        Ok(Tables::Some(names.iter().map(|n| n.to_lowercase()).collect()))
    }
}

/// Whether `table` is one of the host's own (`sluice_kv`, `sluice_outbox`,
/// `sluice_migrations` …): no grant covers it, not even `"*"`, so a service
/// reaches it only through the channel kinds built on it.
pub fn is_host_table(table: &str) -> bool {
    table.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("sluice_"))
}

/// Whose `table` is when it is not the application's: the host's own
/// ([`is_host_table`]) or the engine's (SQLite's `sqlite_…` tables,
/// PostgreSQL's `pg_…` catalogs and `information_schema`). No grant covers
/// such a table, not even `"*"`, on any kind: a grant names the
/// application's tables only. `None` for an application table.
pub fn ungrantable(table: &str) -> Option<&'static str> {
    let starts = |prefix: &str| table.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix));
    if is_host_table(table) {
        Some("the host's own (sluice_…)")
    } else if starts("sqlite_") || starts("pg_") || table.eq_ignore_ascii_case("information_schema") {
        Some("the database engine's own catalog")
    } else {
        None
    }
}

/// A manifest list (`["a", "b"]`) or `"*"` for everything (`None`; also a
/// list holding `"*"`). A lone string other than `"*"` is an error that
/// shows the list to write.
fn list_or_star<'de, D: serde::Deserializer<'de>>(d: D, what: &str) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    match Raw::deserialize(d)? {
        Raw::One(s) if s == "*" => Ok(None),
        Raw::One(s) => Err(serde::de::Error::custom(format!(
            "expected a list of {what} or \"*\", found the string {s:?}; write [{s:?}]"
        ))),
        Raw::Many(list) if list.iter().any(|n| n == "*") => Ok(None),
        Raw::Many(list) => Ok(Some(list)),
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
        for subscription in &manifest.subscribe {
            subscription.check()?;
            let grant = manifest.channel(&subscription.channel);
            let literal = subscription.literal_prefix();
            if !grant.is_some_and(|g| g.read_subjects.allows(&literal) || g.subjects.allows(&literal)) {
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
    /// nothing on any channel.
    pub fn summary(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (channel, grant) in &self.channels {
            let mut parts = Vec::new();
            for (key, tables) in [
                ("reads", &grant.reads),
                ("inserts", &grant.inserts),
                ("updates", &grant.updates),
                ("deletes", &grant.deletes),
                ("relaxed reads of", &grant.relaxed_reads),
            ] {
                match tables {
                    Tables::None => {}
                    Tables::All => parts.push(format!("{key} every table")),
                    Tables::Some(names) => {
                        parts.push(format!("{key} {}", names.iter().cloned().collect::<Vec<_>>().join(", ")))
                    }
                }
            }
            if grant.raw_sql {
                parts.push("raw SQL".into());
            }
            for (key, prefixes) in [
                ("reads and writes keys", &grant.keys),
                ("reads keys", &grant.read_keys),
                ("publishes on", &grant.subjects),
                ("is run by messages on", &grant.read_subjects),
            ] {
                if !prefixes.is_empty() {
                    parts.push(format!("{key} {}", prefixes.describe()));
                }
            }
            if !grant.destinations.is_empty() {
                parts.push(format!("sends {}", grant.destinations.describe()));
            }
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
        assert!(main.reads.allows("anything"));
        assert!(main.inserts.allows("ORDERS"));
        assert!(!main.updates.allows("orders"));
        assert!(main.raw_sql);
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
