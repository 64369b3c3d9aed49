//! A `files` channel's section of `sluice.toml`, and its opening.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::FilesChannel;
use crate::channels::{Channel, ChannelError, KindConfig, Opening};

/// A `files` channel's section of `sluice.toml`.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FilesConfig {
    /// The directory, relative to the config file's; created if missing.
    pub path: String,
    /// A `sql` channel whose save transactions record each commit's
    /// renames in advance, so that a host killed after the data committed
    /// loses none of them (optional).
    pub outbox: Option<String>,
}

impl KindConfig for FilesConfig {
    /// Its outbox, when it has one.
    fn depends_on(&self) -> Option<&str> {
        self.outbox.as_deref()
    }

    /// A relative directory is taken relative to `base`.
    fn resolve(&mut self, base: &Path) {
        if PathBuf::from(&self.path).is_relative() {
            self.path = base.join(&self.path).display().to_string();
        }
    }

    /// Opens the directory, with its journal's relay when it has one.
    fn open(&self, at: &mut Opening<'_>) -> Result<Arc<dyn Channel>, ChannelError> {
        let journal = self.outbox.as_deref().map(|base| at.outbox(base)).transpose()?;
        let opened = Arc::new(FilesChannel::open(at.name(), &self.path, journal.clone())?);
        if let Some(journal) = journal {
            let steps = Arc::new(super::journal::Steps { dir: opened.dir() });
            at.relay(&journal, steps, &Arc::default());
        }
        Ok(opened)
    }
}
