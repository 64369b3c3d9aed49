//! The operator's configuration, `sluice.toml`: which channels exist and how
//! to reach them. With no file, one embedded SQLite channel is used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

use crate::limits::{LimitSettings, Limits};
use crate::reads::Isolation;
use crate::runtime::RuntimeOptions;

/// The name of the channel every host has when no configuration names any.
pub const DEFAULT_CHANNEL: &str = "main";

/// The `kv` channel every host has when no configuration names any
/// channel: keys in a table of [`DEFAULT_CHANNEL`].
pub const DEFAULT_KV_CHANNEL: &str = "kv";

/// The parsed `sluice.toml`.
///
/// ```toml
/// [channels.main]
/// kind = "sql"
/// url = "sqlite://data/app.db"   # relative to this file's directory
///
/// [limits]          # every service's defaults (same keys as a manifest's)
/// deadline-ms = 5000
///
/// [caps]            # the most a manifest may ask for
/// memory-mb = 128
///
/// [scopes]
/// isolation = "serializable"   # or "read-committed": reads are not checked at save
/// retries = 1                  # runs again of a scope whose save was a conflict
/// ```
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Channels by name.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Default limits for services whose manifest does not set them.
    #[serde(default)]
    pub limits: LimitSettings,
    /// The most a manifest may set each limit to.
    #[serde(default)]
    pub caps: LimitSettings,
    /// How saves treat what their scopes read.
    #[serde(default)]
    pub scopes: ScopeSettings,
}

/// `[scopes]`: how saves check what their scopes read, and how often a
/// conflicted scope runs again. Unset keys keep the host's options.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScopeSettings {
    /// `serializable` (the default) or `read-committed`.
    pub isolation: Option<Isolation>,
    /// Runs again of a scope whose save was a conflict (1 by default, at most
    /// 100).
    pub retries: Option<usize>,
}

/// The most `[scopes] retries` may be: each run costs a whole scope.
pub const MAX_RETRIES: usize = 100;

/// How to reach one channel; `kind` selects the variant.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ChannelConfig {
    /// A SQL database: SQLite or PostgreSQL.
    Sql {
        /// Where the database is: `sqlite://data/app.db`, or
        /// `postgres://user@host:5432/db` (`postgresql://` too).
        url: String,
    },
    /// A key-value store: `sql:NAME` keeps the keys in a table of the `sql`
    /// channel `NAME` (they commit in its transaction), `redis://HOST:PORT`
    /// in Redis.
    Kv {
        /// Where the keys are, e.g. `sql:main` or `redis://127.0.0.1:6379`.
        url: String,
    },
}

impl Config {
    /// The configuration used when there is no file: channel `main` is the
    /// SQLite file `main.db` in `data_dir`, and channel `kv` keeps keys in
    /// a table of `main`.
    pub fn embedded(data_dir: &Path) -> Config {
        let url = format!("sqlite://{}", data_dir.join("main.db").display());
        Config {
            channels: BTreeMap::from([
                (DEFAULT_CHANNEL.to_string(), ChannelConfig::Sql { url }),
                (DEFAULT_KV_CHANNEL.to_string(), ChannelConfig::Kv { url: format!("sql:{DEFAULT_CHANNEL}") }),
            ]),
            limits: LimitSettings::default(),
            caps: LimitSettings::default(),
            scopes: ScopeSettings::default(),
        }
    }

    /// Reads `path`. Relative SQLite paths are taken relative to the file's
    /// directory, so the host can be started from anywhere.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).with_context(|| format!("config {}", path.display()))
    }

    /// Parses configuration text, resolving relative paths against `base`.
    pub fn parse(text: &str, base: &Path) -> anyhow::Result<Config> {
        let mut config: Config = toml::from_str(text)?;
        if config.channels.is_empty() {
            anyhow::bail!("no channels: add a [channels.NAME] table with kind and url");
        }
        for channel in config.channels.values_mut() {
            let ChannelConfig::Sql { url } = channel else { continue };
            if let Some(rest) = url.strip_prefix("sqlite://") {
                let file = PathBuf::from(rest);
                if file.is_relative() {
                    *url = format!("sqlite://{}", base.join(file).display());
                }
            }
        }
        Ok(config)
    }
}

impl Config {
    /// `options` with this file's `[caps]` and `[limits]` applied (caps
    /// first, then defaults, which must fit under them), and its `[scopes]`.
    pub fn apply_limits(&self, options: &mut RuntimeOptions) -> anyhow::Result<()> {
        let caps = self.caps.apply(options.caps, &Limits::UNBOUNDED).map_err(|e| anyhow::anyhow!("[caps]: {e}"))?;
        let ceiling = Limits { fuel: Some(caps.fuel.unwrap_or(u64::MAX)), ..caps };
        options.limits = self.limits.apply(options.limits, &ceiling).map_err(|e| anyhow::anyhow!("[limits]: {e}"))?;
        options.caps = caps;
        self.apply_scopes(options)
    }

    /// `options` with this file's `[scopes]` applied.
    pub fn apply_scopes(&self, options: &mut RuntimeOptions) -> anyhow::Result<()> {
        if let Some(isolation) = self.scopes.isolation {
            options.isolation = isolation;
        }
        if let Some(retries) = self.scopes.retries {
            if retries > MAX_RETRIES {
                anyhow::bail!("[scopes]: retries = {retries} is over the most allowed, {MAX_RETRIES}");
            }
            options.retries = retries;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_channels_and_resolves_relative_paths() -> anyhow::Result<()> {
        let config =
            Config::parse("[channels.main]\nkind = \"sql\"\nurl = \"sqlite://data/app.db\"\n", Path::new("/srv/app"))?;
        assert_eq!(
            config.channels.get("main"),
            Some(&ChannelConfig::Sql { url: "sqlite:///srv/app/data/app.db".into() })
        );
        Ok(())
    }

    #[test]
    fn refuses_unknown_kinds_and_fields() {
        let err = |t: &str| match Config::parse(t, Path::new(".")) {
            Ok(_) => "parsed".to_string(),
            Err(e) => format!("{e:#}"),
        };
        assert!(err("[channels.main]\nkind = \"bus\"\nurl = \"x\"\n").contains("unknown variant `bus`"));
        assert!(err("[channels.main]\nkind = \"sql\"\nurl = \"x\"\npool = 3\n").contains("unknown field `pool`"));
        assert!(err("").contains("no channels"));
    }

    #[test]
    fn scopes_set_isolation_and_retries_within_bounds() -> anyhow::Result<()> {
        let base = "[channels.main]\nkind = \"sql\"\nurl = \"sqlite://a.db\"\n";
        let mut options = RuntimeOptions::default();
        assert_eq!((options.isolation, options.retries), (Isolation::Serializable, 1));
        let config =
            Config::parse(&format!("{base}[scopes]\nisolation = \"read-committed\"\nretries = 0\n"), Path::new("."))?;
        config.apply_limits(&mut options)?;
        assert_eq!((options.isolation, options.retries), (Isolation::ReadCommitted, 0));
        let over = Config::parse(&format!("{base}[scopes]\nretries = 101\n"), Path::new("."))?;
        let refused = over.apply_limits(&mut options).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(refused, Err("[scopes]: retries = 101 is over the most allowed, 100".to_string()));
        let unknown = Config::parse(&format!("{base}[scopes]\nisolation = \"snapshot\"\n"), Path::new("."));
        assert!(unknown.is_err_and(|e| format!("{e:#}").contains("unknown variant `snapshot`")));
        Ok(())
    }
}
