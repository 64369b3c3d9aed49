//! `sluice:service/from`: reads, grant-checked, then answered at once from
//! committed data.

use crate::bindings::sluice::service::from::Host;
use crate::bindings::{Error, Rows, Value};
use crate::channels::ChannelError;
use crate::grants::Refusal;
use crate::limits::{Breach, size};
use crate::state::ServiceView;
use crate::values;

impl Host for ServiceView<'_> {
    fn query(&mut self, channel: String, sql: String, params: Vec<Value>) -> wasmtime::Result<Result<Rows, Error>> {
        let Some(target) = self.channels.get(&channel) else {
            return Ok(Err(unknown_channel(self, &channel)));
        };
        let Some(service) = self.service else {
            return Ok(Err(Error::Denied("a read from outside any service".into())));
        };
        let asked = sql.len() + params.iter().map(crate::command::value_size).sum::<usize>();
        if asked > service.limits.command_bytes {
            let detail = format!(
                "sent a read of {}, over its limit of {} (limits.command-bytes)",
                size(asked),
                size(service.limits.command_bytes)
            );
            return Err(wasmtime::Error::new(Breach::new(&service.name, "command-bytes", detail)));
        }
        // Refused before the channel sees the statement.
        if let Err(refusal) = service.grants().check_query(&channel, &sql) {
            return Ok(Err(self.refused(refusal)));
        }
        let rows = match target.query(&sql, &params) {
            Ok(rows) => rows,
            Err(e) => return Ok(Err(guest_error(&service.name, &channel, e))),
        };
        let bytes = values::rows_size(&rows);
        if bytes > service.limits.result_bytes {
            return Err(wasmtime::Error::new(Breach::new(
                &service.name,
                "result-bytes",
                format!(
                    "a read on {channel} returned {}, over its limit of {} (limits.result-bytes)",
                    size(bytes),
                    size(service.limits.result_bytes)
                ),
            )));
        }
        Ok(Ok(rows))
    }
}

/// The `unknown-channel` error, listing the channels that do exist.
pub(super) fn unknown_channel(view: &ServiceView<'_>, channel: &str) -> Error {
    let known: Vec<&str> = view.channels.names().collect();
    Error::UnknownChannel(format!("{}: no channel {channel:?}; the host has: {}", view.service(), known.join(", ")))
}

impl ServiceView<'_> {
    /// A grant refusal as the WIT error the guest sees. A denial is also
    /// kept in the scope: a scope that was denied anything is not saved.
    pub(super) fn refused(&mut self, refusal: Refusal) -> Error {
        match refusal {
            Refusal::Denied(m) => {
                tracing::warn!(scope = %self.scope, service = self.service(), "denied: {m}");
                self.denials.push(m.clone());
                Error::Denied(m)
            }
            Refusal::Invalid(m) => Error::Invalid(m),
        }
    }
}

/// Turns a channel's refusal into the WIT error the guest sees.
pub(super) fn guest_error(service: &str, channel: &str, e: ChannelError) -> Error {
    match e {
        ChannelError::Invalid(m) => Error::Invalid(format!("{service} on {channel}: {m}")),
        ChannelError::Unavailable(m) => Error::Unavailable(format!("{service} on {channel}: {m}")),
    }
}
