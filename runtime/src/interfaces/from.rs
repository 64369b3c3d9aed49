//! `sluice:service/from`: reads, answered at once from committed data by a
//! channel that enforces the service's grant and the call's deadline, and
//! stops reading rows at the service's `result-bytes`.

use crate::bindings::sluice::service::from::Host;
use crate::bindings::sluice::service::types::{Entry, Request, Response};
use crate::bindings::{Error, Rows, Value};
use crate::channels::http::fetch::Asked as Fetch;
use crate::channels::{Caller, ChannelError, Reading, fetches_of, keys_of, sql_of};
use crate::grants::Refusal;
use crate::limits::{Breach, size};
use crate::reads::{Asked, Read, Taped};
use crate::state::ServiceView;

impl Host for ServiceView<'_> {
    fn query(&mut self, channel: String, sql: String, params: Vec<Value>) -> wasmtime::Result<Result<Rows, Error>> {
        let _span = self.span("query", &channel);
        let asked = sql.len() + params.iter().map(crate::command::value_size).sum::<usize>();
        let (target, caller, max_bytes) = match self.reader(&channel, asked)? {
            Ok(reader) => reader,
            Err(e) => return Ok(Err(e)),
        };
        let reading = match sql_of(target.as_ref(), "query").and_then(|t| t.query(&sql, &params, &caller, max_bytes)) {
            Ok(reading) => reading,
            Err(e) => return self.channel_failed(&channel, e, "a read"),
        };
        let params_json = || params.iter().map(crate::command::value_json).collect();
        self.tape(&channel, || Asked::Query { statement: sql.clone(), params: params_json() }, &reading);
        let grant = caller.grant.clone();
        let relaxed = |t: &String| grant.as_ref().is_some_and(|g| g.sql.relaxed_reads.allows(t));
        // A read of no table cannot change; one of relaxed tables only is
        // not checked; any other is kept for the save to run again.
        if self.reads.is_none() || reading.tables.iter().all(relaxed) {
            return Ok(Ok(reading.rows));
        }
        if reading.volatile {
            let service = self.service.map(|s| (s.name.clone(), s.path.clone())).unwrap_or_default();
            let tables = reading.tables.iter().filter(|t| !relaxed(t)).cloned().collect::<Vec<_>>().join(", ");
            return Ok(Err(Error::Invalid(format!(
                "{} on {channel}: this read calls random() or reads the clock ('now'), so its rows cannot be \
                 checked again when the scope is saved; compute that value in the service, or relax the read \
                 in {}: [channels.{channel}] relaxed-reads = [\"{tables}\"]",
                service.0,
                crate::manifest::Manifest::path_for(&service.1).display(),
            ))));
        }
        self.keep(channel, sql, params, &reading)?;
        Ok(Ok(reading.rows))
    }

    fn get(&mut self, channel: String, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let _span = self.span("get", &channel);
        let (target, caller, max_bytes) = match self.reader(&channel, key.len())? {
            Ok(reader) => reader,
            Err(e) => return Ok(Err(e)),
        };
        let keys = match keys_of(target.as_ref(), "get") {
            Ok(keys) => keys,
            Err(e) => return self.channel_failed(&channel, e, "a read"),
        };
        let reading = match keys.get(&key, &caller, max_bytes) {
            Ok(reading) => reading,
            Err(e) => return self.channel_failed(&channel, e, "a read"),
        };
        if keys.constant() {
            // A secret: never on a tape, and it cannot change before the save.
            return Ok(Ok(crate::channels::kv::table::first_value(&reading.rows)));
        }
        self.tape(&channel, || Asked::Get { key: key.clone() }, &reading);
        if self.reads.is_some() {
            self.keep(channel, String::new(), Vec::new(), &reading)?;
        }
        Ok(Ok(crate::channels::kv::table::first_value(&reading.rows)))
    }

    fn list(&mut self, channel: String, prefix: String, limit: u32) -> wasmtime::Result<Result<Vec<Entry>, Error>> {
        let _span = self.span("list", &channel);
        let (target, caller, max_bytes) = match self.reader(&channel, prefix.len())? {
            Ok(reader) => reader,
            Err(e) => return Ok(Err(e)),
        };
        let reading = match keys_of(target.as_ref(), "list").and_then(|t| t.list(&prefix, limit, &caller, max_bytes)) {
            Ok(reading) => reading,
            Err(e) => return self.channel_failed(&channel, e, "a read"),
        };
        self.tape(&channel, || Asked::List { prefix: prefix.clone(), limit }, &reading);
        if self.reads.is_some() {
            self.keep(channel, String::new(), Vec::new(), &reading)?;
        }
        let entries = reading
            .rows
            .values
            .iter()
            .filter_map(|row| match row.as_slice() {
                [Value::Text(key), Value::Blob(value)] => Some(Entry { key: key.clone(), value: value.clone() }),
                [Value::Text(key), Value::Text(value)] => {
                    Some(Entry { key: key.clone(), value: value.clone().into_bytes() })
                }
                _ => None,
            })
            .collect();
        Ok(Ok(entries))
    }

    fn fetch(&mut self, channel: String, request: Request) -> wasmtime::Result<Result<Response, Error>> {
        let _span = self.span("fetch", &channel);
        let asked = request.method.len()
            + request.url.len()
            + request.headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>()
            + request.body.len();
        let (target, caller, max_bytes) = match self.reader(&channel, asked)? {
            Ok(reader) => reader,
            Err(e) => return Ok(Err(e)),
        };
        let fetches = match fetches_of(target.as_ref()) {
            Ok(fetches) => fetches,
            Err(e) => return self.channel_failed(&channel, e, "a fetch"),
        };
        let made = self.fetches.entry(channel.clone()).or_default();
        if *made >= fetches.per_scope() {
            let detail = format!(
                "made more than {} fetches on {channel} in one scope, the channel's limit (fetches-per-scope in \
                 sluice.toml)",
                fetches.per_scope()
            );
            return Err(wasmtime::Error::new(Breach::new(self.service(), "fetches-per-scope", detail)));
        }
        *made += 1;
        let Request { method, url, headers, body } = request;
        let fetch = Fetch { method, path: url, headers, body };
        let reading = match fetches.fetch(&fetch, &caller, max_bytes) {
            Ok(reading) => reading,
            Err(e) => return self.channel_failed(&channel, e, "a fetch"),
        };
        let Some(answer) = crate::channels::http::rows_answer(&reading.rows) else {
            return Ok(Err(Error::Unavailable(format!("{}: {channel} gave a malformed answer", self.service()))));
        };
        self.tape(
            &channel,
            || Asked::Fetch {
                method: fetch.method.clone(),
                path: fetch.path.clone(),
                headers: fetch.headers.clone(),
                body: fetch.body.clone(),
            },
            &reading,
        );
        let relaxed = caller.grant.as_ref().is_some_and(|g| g.http.relaxed_fetches.allows(fetch.route()));
        if self.reads.is_some() && !relaxed {
            self.keep(channel, String::new(), Vec::new(), &reading)?;
        }
        Ok(Ok(Response { status: answer.status, headers: answer.headers, body: answer.body }))
    }
}

impl ServiceView<'_> {
    /// Records a read with its rows when the scope is being recorded.
    fn tape(&mut self, channel: &str, asked: impl FnOnce() -> Asked, reading: &Reading) {
        let Some(tape) = self.tape.as_deref_mut() else { return };
        if !tape.room(crate::values::rows_size(&reading.rows) + channel.len()) {
            return;
        }
        tape.reads.push(Taped {
            service: self.service.map(|s| s.name.clone()).unwrap_or_default(),
            chain: self.frames.iter().map(ToString::to_string).collect(),
            channel: channel.to_string(),
            asked: asked(),
            rows: crate::reads::rows_json(&reading.rows),
        });
    }

    /// What every read needs before it reaches its channel: the channel,
    /// the calling service within its `command-bytes` for what it sent
    /// (`asked` bytes; a trap otherwise), and the caller with its grant,
    /// deadline and `result-bytes`. `Ok(Err(..))` is the guest's error.
    #[expect(clippy::type_complexity, reason = "the three parts of a read, or why it cannot start")]
    fn reader(
        &mut self,
        channel: &str,
        asked: usize,
    ) -> wasmtime::Result<Result<(std::sync::Arc<dyn crate::channels::Channel>, Caller, usize), Error>> {
        let Some(target) = self.channels.get(channel).cloned() else {
            return Ok(Err(unknown_channel(self, channel)));
        };
        let Some(service) = self.service else {
            return Ok(Err(Error::Denied("a read from outside any service".into())));
        };
        if asked > service.limits.command_bytes {
            let detail = format!(
                "sent a read of {}, over its limit of {} (limits.command-bytes)",
                size(asked),
                size(service.limits.command_bytes)
            );
            return Err(wasmtime::Error::new(Breach::new(&service.name, "command-bytes", detail)));
        }
        let caller = service.caller(channel, self.deadline.at).cancelled_by(&self.deadline.cancel);
        Ok(Ok((target, caller, service.limits.result_bytes)))
    }

    /// Keeps a read for the save to check, as the channel says to run it
    /// again ([`crate::channels::Reading::recheck`]), within the scope's
    /// cap on what it holds (a trap past it).
    fn keep(&mut self, channel: String, sql: String, params: Vec<Value>, reading: &Reading) -> wasmtime::Result<()> {
        let Some(service) = self.service else { return Ok(()) };
        let (channel, sql, params, host, asked) = match &reading.recheck {
            Some(again) => (
                again.channel.clone(),
                again.statement.clone(),
                again.params.clone(),
                again.host,
                Some(format!("{} on {channel}", again.asked)),
            ),
            None => (channel, sql, params, false, None),
        };
        let read = Read {
            channel,
            service: service.name.clone(),
            chain: self.chain.of(self.frames),
            sql,
            params,
            host,
            asked,
            digest: reading.digest,
        };
        let bytes = read.size();
        let scope_cap = self.queue.cap_bytes();
        if self.queue.bytes() + bytes > scope_cap {
            let detail = format!(
                "kept a read of {} to check at save when the scope already held {}, over the host's limit of {} \
                 for one scope",
                size(bytes),
                size(self.queue.bytes()),
                size(scope_cap)
            );
            return Err(wasmtime::Error::new(Breach::new(&service.name, "scope-queued-bytes", detail)));
        }
        if let Some(reads) = self.reads.as_deref_mut()
            && reads.add(read)
        {
            self.queue.charge(bytes);
        }
        Ok(())
    }
}

impl ServiceView<'_> {
    /// What a channel's failure becomes: a denial or an error value for the
    /// guest, or a trap for a breached limit (the deadline, result bytes).
    pub(super) fn channel_failed<T>(
        &mut self,
        channel: &str,
        e: ChannelError,
        what: &str,
    ) -> wasmtime::Result<Result<T, Error>> {
        let Some(service) = self.service else {
            return Ok(Err(Error::Denied("a request from outside any service".into())));
        };
        let name = &service.name;
        match e {
            ChannelError::Denied(denial) => {
                let refusal = service.grants().refusal(channel, &denial);
                Ok(Err(self.refused(refusal)))
            }
            ChannelError::Timeout => Err(self.deadline.passed(name)),
            ChannelError::TooLarge { bytes } => Err(wasmtime::Error::new(Breach::new(
                name,
                "result-bytes",
                format!(
                    "{what} on {channel} returned more than {}, over its limit of {} (limits.result-bytes); \
                     reading stopped there",
                    size(bytes.min(service.limits.result_bytes)),
                    size(service.limits.result_bytes)
                ),
            ))),
            ChannelError::Invalid(m) | ChannelError::Constraint(m) => {
                Ok(Err(Error::Invalid(format!("{name} on {channel}: {m}"))))
            }
            // (A commit's outcome is never a read's; told as unavailable.)
            ChannelError::Unavailable(m) | ChannelError::Conflict(m) | ChannelError::Unknown(m) => {
                Ok(Err(Error::Unavailable(format!("{name} on {channel}: {m}"))))
            }
        }
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
