//! [`Channels`]: every channel of a host, opened from its configuration,
//! with the relays of the effect channels.

use std::collections::BTreeMap;
use std::sync::Arc;

use std::path::Path;

use super::outbox::Outbox;
use super::outbox::relay::Deliver;
use super::{Channel, ChannelError, bus, outbox};

/// A kind's section of `sluice.toml` (`[channels.NAME]` with its `kind`):
/// what it needs opened first, how its paths are read, and how it opens.
pub trait KindConfig {
    /// The `sql` channel this one needs open first: a `kv` table's, or an
    /// outbox's.
    fn depends_on(&self) -> Option<&str> {
        None
    }

    /// Takes relative paths (a SQLite file, a directory) relative to
    /// `base`, the configuration file's directory.
    fn resolve(&mut self, base: &Path) {
        let _ = base;
    }

    /// Opens the channel, registering its relay when it has one.
    fn open(&self, at: &mut Opening<'_>) -> Result<Arc<dyn Channel>, ChannelError>;
}

/// Defines [`ChannelConfig`], one variant per registered kind (the
/// registration is in [`super::kinds`]): a `[channels.NAME]` table of
/// `sluice.toml`, whose `kind` selects the variant.
macro_rules! configs {
    ($($(#[$doc:meta])* $variant:ident($name:literal, $config:ty)),* $(,)?) => {
        /// How to reach one channel: a `[channels.NAME]` table of
        /// `sluice.toml`, whose `kind` selects its kind's section.
        #[derive(Debug, Clone, serde::Deserialize, PartialEq)]
        #[serde(tag = "kind")]
        pub enum ChannelConfig {
            $(
                $(#[$doc])*
                #[serde(rename = $name)]
                $variant($config),
            )*
        }

        impl ChannelConfig {
            pub(crate) fn section(&self) -> &dyn $crate::channels::KindConfig {
                match self {
                    $(ChannelConfig::$variant(c) => c,)*
                }
            }

            pub(crate) fn section_mut(&mut self) -> &mut dyn $crate::channels::KindConfig {
                match self {
                    $(ChannelConfig::$variant(c) => c,)*
                }
            }
        }
    };
}
pub(crate) use configs;

pub use super::kinds::ChannelConfig;

impl ChannelConfig {
    /// The `sql` channel this one needs open first.
    pub fn depends_on(&self) -> Option<&str> {
        self.section().depends_on()
    }

    /// Takes relative paths relative to `base`.
    pub fn resolve(&mut self, base: &Path) {
        self.section_mut().resolve(base);
    }

    fn open(&self, at: &mut Opening<'_>) -> Result<Arc<dyn Channel>, ChannelError> {
        self.section().open(at)
    }
}

/// What a kind may use while one of its channels opens: the channels
/// opened before it, and the host's list of relays.
pub struct Opening<'a> {
    name: &'a str,
    channels: &'a mut Channels,
}

impl Opening<'_> {
    /// The channel's name.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The channels opened so far.
    pub fn opened(&self) -> &BTreeMap<String, Arc<dyn Channel>> {
        &self.channels.by_name
    }

    /// The channel `base`, opened before this one.
    pub fn base(&self, base: &str) -> Result<Arc<dyn Channel>, ChannelError> {
        self.channels.by_name.get(base).cloned().ok_or_else(|| {
            let known: Vec<&str> = self.channels.by_name.keys().map(String::as_str).collect();
            ChannelError::Invalid(format!("no sql channel {base:?}; the host has: {}", known.join(", ")))
        })
    }

    /// This channel's outbox in the `sql` channel `base`.
    pub fn outbox(&self, base: &str) -> Result<Arc<Outbox>, ChannelError> {
        Ok(Arc::new(Outbox::open(self.name, base, self.base(base)?)?))
    }

    /// Registers the relay that delivers this channel's rows of `outbox`
    /// (in `sluice serve`), woken by `wake`.
    pub fn relay(&mut self, outbox: &Arc<Outbox>, deliver: Arc<dyn Deliver>, wake: &Arc<tokio::sync::Notify>) {
        self.channels.relays.push(RelayParts::new(self.name, outbox, deliver, wake));
    }

    /// Registers a bus, for the services it triggers.
    pub fn bus(&mut self, bus: Arc<bus::BusChannel>) {
        self.channels.buses.insert(self.name.to_string(), bus);
    }
}

/// Every channel the host has, by name. Built once per host from its
/// configuration.
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
    /// Opens every channel of `config` (the `[channels]` of `sluice.toml`),
    /// each by its kind.
    pub fn open(config: &BTreeMap<String, ChannelConfig>) -> anyhow::Result<Self> {
        let mut channels = Channels::default();
        // Channels kept in a `sql` channel (a kv table, an outbox) after
        // the others: they need it open.
        let (after, first): (Vec<_>, Vec<_>) = config.iter().partition(|(_, c)| c.depends_on().is_some());
        for (name, channel) in first.into_iter().chain(after) {
            let mut at = Opening { name, channels: &mut channels };
            let opened = channel.open(&mut at).map_err(|e| anyhow::anyhow!("channel {name}: {e}"))?;
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
