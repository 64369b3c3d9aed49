//! [`Channels`]: every channel of a host, opened from its configuration,
//! with the relays of the effect channels.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Channel, ChannelError, bus, files, http_out, kv, outbox, sql};
use crate::config::{ChannelConfig, Config};

/// Every channel the host has, by name. Built once per host from [`Config`].
#[derive(Clone, Default)]
pub struct Channels {
    by_name: BTreeMap<String, Arc<dyn Channel>>,
    /// The `bus` channels, for the relays and the services they trigger.
    buses: BTreeMap<String, Arc<bus::BusChannel>>,
    /// Every effect channel's relay parts: its outbox, deliveries and wake.
    relays: Vec<RelayParts>,
}

/// What a relay of one effect channel needs ([`outbox::relay::Relay`]).
#[derive(Clone)]
pub struct RelayParts {
    /// The channel.
    pub channel: String,
    /// Its rows.
    pub outbox: Arc<outbox::Outbox>,
    /// Its deliveries.
    pub deliver: Arc<dyn outbox::relay::Deliver>,
    /// What its saves wake the relay with.
    pub wake: Arc<tokio::sync::Notify>,
    /// What its relay has done.
    pub counts: Arc<outbox::relay::Counts>,
}

impl RelayParts {
    fn new(
        channel: &str,
        outbox: &Arc<outbox::Outbox>,
        deliver: Arc<dyn outbox::relay::Deliver>,
        wake: &Arc<tokio::sync::Notify>,
    ) -> RelayParts {
        RelayParts {
            channel: channel.to_string(),
            outbox: Arc::clone(outbox),
            deliver,
            wake: Arc::clone(wake),
            counts: Arc::default(),
        }
    }
}

impl Channels {
    /// Opens every channel the configuration names.
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        let mut channels = Channels::default();
        // Channels kept in a `sql` channel (a kv table, an outbox) after
        // the others: they need it open.
        let (after, first): (Vec<_>, Vec<_>) = config.channels.iter().partition(|(_, c)| c.depends_on().is_some());
        for (name, channel) in first.into_iter().chain(after) {
            let base = |base: &str| {
                channels.by_name.get(base).cloned().ok_or_else(|| {
                    let known: Vec<&str> = channels.by_name.keys().map(String::as_str).collect();
                    anyhow::anyhow!("channel {name}: no sql channel {base:?}; the host has: {}", known.join(", "))
                })
            };
            let fail = |e: ChannelError| anyhow::anyhow!("channel {name}: {e}");
            let opened: Arc<dyn Channel> = match channel {
                ChannelConfig::Kv { url, outbox } => {
                    let journal = match outbox {
                        Some(base_name) => {
                            Some(Arc::new(outbox::Outbox::open(name, base_name, base(base_name)?).map_err(fail)?))
                        }
                        None => None,
                    };
                    let (opened, commits) = kv::open(name, url, &channels.by_name, journal.clone()).map_err(fail)?;
                    if let (Some(journal), Some(commits)) = (journal, commits) {
                        channels.relays.push(RelayParts::new(name, &journal, commits, &Arc::default()));
                    }
                    opened
                }
                ChannelConfig::Files { path, outbox } => {
                    let journal = match outbox {
                        Some(base_name) => {
                            Some(Arc::new(outbox::Outbox::open(name, base_name, base(base_name)?).map_err(fail)?))
                        }
                        None => None,
                    };
                    let opened = Arc::new(files::FilesChannel::open(name, path, journal.clone()).map_err(fail)?);
                    if let Some(journal) = journal {
                        let steps = Arc::new(files::journal::Steps { dir: opened.dir() });
                        channels.relays.push(RelayParts::new(name, &journal, steps, &Arc::default()));
                    }
                    opened
                }
                ChannelConfig::Sql { url } if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                    Arc::new(sql::PostgresChannel::open(url).map_err(fail)?)
                }
                ChannelConfig::Sql { url } => Arc::new(sql::SqliteChannel::open(url).map_err(fail)?),
                ChannelConfig::Bus { url, outbox, stream, prefix, duplicate_window_s } => {
                    let settings = bus::BusSettings {
                        url: url.clone(),
                        stream: stream.clone().unwrap_or_else(|| format!("SLUICE_{}", name.to_uppercase())),
                        prefix: prefix.clone().unwrap_or_else(|| name.clone()),
                        duplicate_window: std::time::Duration::from_secs(duplicate_window_s.unwrap_or(86_400)),
                    };
                    let opened = Arc::new(bus::BusChannel::open(name, settings, outbox, base(outbox)?).map_err(fail)?);
                    channels.relays.push(RelayParts::new(name, opened.outbox(), opened.clone(), opened.wake()));
                    channels.buses.insert(name.clone(), Arc::clone(&opened));
                    opened
                }
                ChannelConfig::HttpOut { outbox, base: url_base, tries, timeout_ms } => {
                    let base_url = match url_base {
                        Some(b) => Some(
                            reqwest::Url::parse(b).map_err(|e| anyhow::anyhow!("channel {name}: base {b:?}: {e}"))?,
                        ),
                        None => None,
                    };
                    let settings = http_out::HttpOutSettings {
                        base: base_url,
                        tries: tries.unwrap_or(8).clamp(1, 100),
                        timeout: std::time::Duration::from_millis(timeout_ms.unwrap_or(10_000).clamp(100, 120_000)),
                    };
                    let opened =
                        Arc::new(http_out::HttpOutChannel::open(name, settings, outbox, base(outbox)?).map_err(fail)?);
                    channels.relays.push(RelayParts::new(name, opened.outbox(), opened.clone(), opened.wake()));
                    opened
                }
            };
            channels.by_name.insert(name.clone(), opened);
        }
        Ok(channels)
    }

    /// The `bus` channel called `name`, if there is one.
    pub fn bus(&self, name: &str) -> Option<&Arc<bus::BusChannel>> {
        self.buses.get(name)
    }

    /// The relays of the effect channels (`bus`, `http-out`), for `sluice
    /// serve` to run.
    pub fn relays(&self) -> &[RelayParts] {
        &self.relays
    }

    /// Adds (or replaces) the channel `name`: for an embedder with a channel
    /// of its own, and for tests with a fake one.
    pub fn insert(&mut self, name: impl Into<String>, channel: Arc<dyn Channel>) {
        self.by_name.insert(name.into(), channel);
    }

    /// The channel called `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Channel>> {
        self.by_name.get(name)
    }

    /// The channel names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}
