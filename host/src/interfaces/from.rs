//! `sluice:service/from`: reads, answered at once from committed data.

use crate::bindings::sluice::service::from::Host;
use crate::bindings::{Error, Rows, Value};
use crate::channels::ChannelError;
use crate::state::ServiceView;

impl Host for ServiceView<'_> {
    fn query(&mut self, channel: String, sql: String, params: Vec<Value>) -> wasmtime::Result<Result<Rows, Error>> {
        let Some(target) = self.channels.get(&channel) else {
            return Ok(Err(unknown_channel(self, &channel)));
        };
        let rows = target.query(&sql, &params).map_err(|e| guest_error(self.service(), &channel, e));
        Ok(rows)
    }
}

/// The `unknown-channel` error, listing the channels that do exist.
pub(super) fn unknown_channel(view: &ServiceView<'_>, channel: &str) -> Error {
    let known: Vec<&str> = view.channels.names().collect();
    Error::UnknownChannel(format!("{}: no channel {channel:?}; the host has: {}", view.service(), known.join(", ")))
}

/// Turns a channel's refusal into the WIT error the guest sees.
pub(super) fn guest_error(service: &str, channel: &str, e: ChannelError) -> Error {
    match e {
        ChannelError::Invalid(m) => Error::Invalid(format!("{service} on {channel}: {m}")),
        ChannelError::Unavailable(m) => Error::Unavailable(format!("{service} on {channel}: {m}")),
    }
}
