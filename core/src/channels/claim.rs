//! What a scope's last run keeps other writers off while it runs
//! ([`super::Channel::hold`]): on each channel, the tables its services
//! may read or write there, as their grants name them. Every other
//! writer of those tables (a save of this host or of another host on the
//! same database, or any other client) waits until the last run ends, so
//! its reads cannot change before its save and the run cannot be lost to
//! one of them. Writers of other tables do not wait.

use std::collections::BTreeSet;

/// The tables a last run holds on one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    /// Tables by name, lower-cased (the grants' own names, and the host
    /// tables of kinds kept in this channel, such as `sluice_kv`).
    pub tables: BTreeSet<String>,
    /// Every table of the services' schema: a grant said `"*"`.
    pub every_table: bool,
}

impl Claim {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && !self.every_table
    }

    /// Adds what `other` holds.
    pub fn extend(&mut self, other: Claim) {
        self.tables.extend(other.tables);
        self.every_table |= other.every_table;
    }
}
