//! Channels: named connections to external systems, configured by the
//! operator. Each channel kind lives in its own module behind [`Channel`].
//!
//! Reads go straight to the channel. Commands are applied at save through a
//! [`Transaction`], one per channel per save, so a channel's share of the
//! queue is applied in full or not at all.

pub mod sql;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::bindings::{Rows, Value};
use crate::command::{Operation, Outcome};
use crate::config::{ChannelConfig, Config};

/// Why a channel refused or failed a request.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ChannelError {
    /// The request is malformed for this channel: SQL that does not parse, a
    /// write passed to a read, a wrong parameter count.
    #[error("{0}")]
    Invalid(String),
    /// The channel could not do it: the database is locked, a constraint
    /// failed, a file could not be opened.
    #[error("{0}")]
    Unavailable(String),
}

/// A named connection that services read from and queue commands for.
///
/// Implementations are shared by every scope of the host, so they are
/// `Send + Sync` and do their own connection pooling.
pub trait Channel: Send + Sync {
    /// Runs one read at once, against committed data.
    fn query(&self, sql: &str, params: &[Value]) -> Result<Rows, ChannelError>;

    /// Starts the transaction a save applies this channel's commands in.
    fn begin(&self) -> Result<Box<dyn Transaction>, ChannelError>;

    /// Applies each `(name, script)` migration this channel has not had yet,
    /// in order, each atomically, and records it. Returns each name with
    /// `true` when it was applied now and `false` when it was applied before.
    fn migrate(&self, migrations: &[(String, String)]) -> Result<Vec<(String, bool)>, ChannelError>;
}

/// One open transaction on a channel. Dropping it without [`commit`] rolls
/// back everything applied through it.
///
/// [`commit`]: Transaction::commit
pub trait Transaction: Send {
    /// Applies one command inside the transaction.
    fn apply(&mut self, op: &Operation) -> Result<Outcome, ChannelError>;

    /// Makes everything applied so far durable.
    fn commit(self: Box<Self>) -> Result<(), ChannelError>;
}

/// Every channel the host has, by name. Built once per host from [`Config`].
#[derive(Clone, Default)]
pub struct Channels {
    by_name: BTreeMap<String, Arc<dyn Channel>>,
}

impl Channels {
    /// Opens every channel the configuration names.
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        let mut by_name = BTreeMap::new();
        for (name, channel) in &config.channels {
            let opened: Arc<dyn Channel> = match channel {
                ChannelConfig::Sql { url } => {
                    Arc::new(sql::SqliteChannel::open(url).map_err(|e| anyhow::anyhow!("channel {name}: {e}"))?)
                }
            };
            by_name.insert(name.clone(), opened);
        }
        Ok(Channels { by_name })
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
