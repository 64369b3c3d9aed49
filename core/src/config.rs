//! The operator's configuration, `sluice.toml`: which channels exist and how
//! to reach them. With no file, one embedded SQLite channel is used.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

pub use crate::channels::ChannelConfig;
use crate::channels::kv::KvConfig;
use crate::channels::sql::SqlConfig;
use crate::limits::LimitSettings;

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
    /// Where the answers of idempotent requests are kept, and for how long.
    #[serde(default)]
    pub idempotency: IdempotencySettings,
    /// Where the ticks of scheduled functions are kept.
    #[serde(default)]
    pub schedules: ScheduleSettings,
    /// Services kept in NATS JetStream for a fleet (`sluice deploy`).
    pub deploy: Option<DeploySettings>,
}

/// `[deploy]`: services kept in NATS JetStream: `sluice deploy` puts them
/// there, and `sluice serve` mirrors them into its services directory.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeploySettings {
    /// The NATS server: `nats://127.0.0.1:4222`.
    pub url: String,
    /// The key-value bucket of the running versions (`sluice_services`);
    /// the components are in the object store `BUCKET_objects`.
    #[serde(default = "default_deploy_bucket")]
    pub bucket: String,
}

fn default_deploy_bucket() -> String {
    "sluice_services".into()
}

/// `[schedules]`: which ticks of `[[schedule]]`d functions have run is kept
/// in a `sql` channel, shared by every host of a fleet.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScheduleSettings {
    /// The `sql` channel (`main` by default). Without one, no schedule runs.
    #[serde(default = "default_idempotency_channel")]
    pub channel: String,
    /// How long a host holds a tick while its scope runs, in seconds (10 by
    /// default); after that (a host that died) another host runs it.
    #[serde(default = "default_idempotency_lease")]
    pub lease_seconds: u64,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        ScheduleSettings { channel: default_idempotency_channel(), lease_seconds: default_idempotency_lease() }
    }
}

/// `[idempotency]`: requests that carry a key (`Idempotency-Key`) have
/// their answer kept in a `sql` channel, written in their scope's save.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IdempotencySettings {
    /// The `sql` channel that keeps them (`main` by default). A request
    /// with a key is refused when there is no such channel.
    #[serde(default = "default_idempotency_channel")]
    pub channel: String,
    /// How long an answer is kept after its save, in seconds (a day by
    /// default); a key used again after that runs again.
    #[serde(default = "default_idempotency_keep")]
    pub keep_seconds: u64,
    /// How long the first request holds its key while it runs, in seconds
    /// (10 by default): a repeat meanwhile is answered 409. After that (a
    /// host that died running it, or a slow request), a repeat takes the
    /// key over and runs; the first can then no longer save, so the
    /// request's effects still apply once.
    #[serde(default = "default_idempotency_lease")]
    pub lease_seconds: u64,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        IdempotencySettings {
            channel: default_idempotency_channel(),
            keep_seconds: default_idempotency_keep(),
            lease_seconds: default_idempotency_lease(),
        }
    }
}

fn default_idempotency_lease() -> u64 {
    10
}

fn default_idempotency_channel() -> String {
    DEFAULT_CHANNEL.into()
}

fn default_idempotency_keep() -> u64 {
    24 * 60 * 60
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

/// How a host checks its scopes' reads at save (`sluice.toml`: `[scopes]
/// isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Every read of a table not relaxed by the manifest is run again at
    /// save; a changed one makes the save a conflict, and the scope runs
    /// again.
    #[default]
    Serializable,
    /// Reads are not checked: a scope may save over data that changed since
    /// it read it.
    ReadCommitted,
}

impl Config {
    /// The configuration used when there is no file: channel `main` is the
    /// SQLite file `main.db` in `data_dir`, and channel `kv` keeps keys in
    /// a table of `main`.
    pub fn embedded(data_dir: &Path) -> Config {
        let url = format!("sqlite://{}", data_dir.join("main.db").display());
        Config {
            channels: BTreeMap::from([
                (DEFAULT_CHANNEL.to_string(), ChannelConfig::Sql(SqlConfig { url })),
                (
                    DEFAULT_KV_CHANNEL.to_string(),
                    ChannelConfig::Kv(KvConfig { url: format!("sql:{DEFAULT_CHANNEL}"), outbox: None }),
                ),
            ]),
            limits: LimitSettings::default(),
            caps: LimitSettings::default(),
            scopes: ScopeSettings::default(),
            idempotency: IdempotencySettings::default(),
            schedules: ScheduleSettings::default(),
            deploy: None,
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
            channel.resolve(base);
        }
        Ok(config)
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
            Some(&ChannelConfig::Sql(SqlConfig { url: "sqlite:///srv/app/data/app.db".into() }))
        );
        Ok(())
    }

    #[test]
    fn refuses_unknown_kinds_and_fields() {
        let err = |t: &str| match Config::parse(t, Path::new(".")) {
            Ok(_) => "parsed".to_string(),
            Err(e) => format!("{e:#}"),
        };
        assert!(err("[channels.main]\nkind = \"queue\"\nurl = \"x\"\n").contains("unknown variant `queue`"));
        assert!(err("[channels.main]\nkind = \"bus\"\nurl = \"x\"\n").contains("missing field `outbox`"));
        assert!(err("[channels.main]\nkind = \"sql\"\nurl = \"x\"\npool = 3\n").contains("unknown field `pool`"));
        assert!(err("").contains("no channels"));
    }
}
