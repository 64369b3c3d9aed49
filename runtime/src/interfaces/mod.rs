//! Host implementations of the `sluice:service` interfaces, one file each,
//! and of `wasi:io/poll`, which the host links over WASI's own.

mod from;
pub(crate) mod poll;
mod to;
mod types;

impl crate::state::ServiceView<'_> {
    /// One host call's span: the scope, the service, the function and the
    /// channel. It is at debug level, so that while debug is off a host call
    /// pays one check of the level and nothing more.
    fn span(&self, function: &'static str, channel: &str) -> tracing::span::EnteredSpan {
        tracing::debug_span!("host-call", scope = %self.scope, service = self.service(), function, channel).entered()
    }
}
