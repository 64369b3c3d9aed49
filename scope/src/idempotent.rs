//! Idempotent requests: a request that carries a key runs once; a repeat
//! of the key is answered with what the first one saved, without running
//! anything, on any host that keeps its answers in the same channel
//! (`[idempotency]`, [`crate::channels::sql::answers`]).
//!
//! - [`begin`] claims the key before the scope starts, or says how the
//!   repeat is answered: the stored answer, `running` (the first request
//!   has not ended: the client is told to try again, nothing waits), or
//!   `different` (the key was used for another request).
//! - [`Key`] rides with the scope through its runs ([`Scope::keyed`]); the
//!   save rule ([`Scope::finish`]) queues the answer as a command of the
//!   host, so it is written in the same save transaction as the scope's
//!   effects on that channel, and only if the scope saves.
//! - [`Key::end`] gives the key back when the scope did not save: nothing
//!   was applied, so a repeat runs again.

use std::sync::Arc;

use crate::channels::ChannelError;
use crate::channels::sql::answers::{self, Answers, Begun, MAX_KEY_BYTES};
use crate::host::Host;
pub use answers::{Stored, fingerprint};

/// A claimed key: the answers it is written to, and the claim.
pub struct Key {
    answers: Arc<Answers>,
    claim: answers::Claim,
}

/// How a request with a key goes on.
pub enum Keyed {
    /// It runs, holding the key.
    Run(Arc<Key>),
    /// It is answered with what the first request saved.
    Stored(Stored),
    /// The first request with the key is still running.
    Running,
    /// The key was used for a different request.
    Different,
}

/// Why a key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key, or the host's configuration, does not allow it: the
    /// client's or the operator's to fix.
    #[error("{0}")]
    Invalid(String),
    /// The channel keeping the answers failed.
    #[error("the answers of idempotent requests cannot be read: {0}")]
    Unavailable(ChannelError),
}

/// Claims `key` on `host` for the request whose [`fingerprint`] is
/// `fingerprint` (see the module docs), for `[idempotency] lease-seconds`:
/// a host that dies holding it loses it then.
pub fn begin(host: &Host, key: &str, fingerprint: &str) -> Result<Keyed, KeyError> {
    check(key)?;
    let answers = host.answers().map_err(|why| KeyError::Invalid(why.to_string()))?;
    match answers.begin(key, fingerprint).map_err(KeyError::Unavailable)? {
        Begun::Run(claim) => Ok(Keyed::Run(Arc::new(Key { answers: Arc::clone(answers), claim }))),
        Begun::Stored(stored) => Ok(Keyed::Stored(stored)),
        Begun::Running => Ok(Keyed::Running),
        Begun::Different => Ok(Keyed::Different),
    }
}

/// A key is 1 to [`MAX_KEY_BYTES`] bytes of visible ASCII.
fn check(key: &str) -> Result<(), KeyError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(KeyError::Invalid(format!(
            "an idempotency key is 1 to {MAX_KEY_BYTES} visible ASCII characters (a UUID, say); got {} byte(s)",
            key.len()
        )));
    }
    Ok(())
}

impl Key {
    /// The channel its answer is written to.
    pub fn channel(&self) -> &str {
        self.answers.channel()
    }

    /// The host's command that writes `answer` for this key.
    pub fn record(&self, answer: &Stored) -> crate::command::Operation {
        self.answers.record(&self.claim, answer)
    }

    /// Ends the request: unless it `saved`, its key is given back.
    pub fn end(&self, saved: bool) {
        if saved {
            return;
        }
        if let Err(e) = self.answers.release(&self.claim) {
            // The claim then lapses at the end of its lease.
            tracing::warn!(key = %self.claim.key, "the idempotency key could not be given back: {e}");
        }
    }
}

/// Why a request with a key did not run.
pub enum Unrun {
    /// The first request saved: this is what it was told.
    Stored(Stored),
    /// The first request with the key has not ended.
    Running,
    /// The key was used for a different request.
    Different,
    /// The key could not be used.
    Refused(KeyError),
}

/// Runs `work` on `scope`, once per `key` when there is one: a new key is
/// claimed and the scope holds it (its save writes the answer); a repeat
/// is not run, and says why ([`Unrun`]). `saved` tells from what `work`
/// returned whether the scope saved; if not, the key is given back.
pub fn run<T>(
    host: &Host,
    key: Option<&str>,
    fingerprint: impl FnOnce() -> String,
    mut scope: crate::scope::Scope,
    work: impl FnOnce(crate::scope::Scope) -> T,
    saved: impl FnOnce(&T) -> bool,
) -> Result<T, Unrun> {
    let Some(key) = key else { return Ok(work(scope)) };
    match begin(host, key, &fingerprint()) {
        Ok(Keyed::Run(key)) => {
            scope.keyed(Arc::clone(&key));
            let done = work(scope);
            key.end(saved(&done));
            Ok(done)
        }
        Ok(Keyed::Stored(stored)) => Err(Unrun::Stored(stored)),
        Ok(Keyed::Running) => Err(Unrun::Running),
        Ok(Keyed::Different) => Err(Unrun::Different),
        Err(e) => Err(Unrun::Refused(e)),
    }
}

/// The [`fingerprint`] of a call of `service.function` with `args`, the
/// same from the CLI and from a typed route.
pub fn call_fingerprint(service: &str, function: &str, args: &[wasmtime::component::Val]) -> String {
    let args: Vec<serde_json::Value> = args.iter().map(crate::values::to_json).collect();
    let args = serde_json::Value::Array(args).to_string();
    fingerprint(&[b"call", service.as_bytes(), function.as_bytes(), args.as_bytes()])
}
