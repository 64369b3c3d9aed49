//! The unit of work: one `Store`, services instantiated lazily on first use,
//! one command queue, and a save that applies the queue all-or-nothing.
//!
//! Lifecycle: [`Scope::new`] once per unit of work → [`Scope::call`] any
//! number of times → [`Scope::save`] once (or drop, which applies nothing).
//! A trap poisons the scope: it can no longer be called or saved.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use wasmtime::component::{Instance, Val};
use wasmtime::{Store, Trap};

use crate::channels::{Channels, Transaction};
use crate::command::{Command, Outcome};
use crate::registry::{LookupError, Registry, Service, chain};
use crate::state::{ScopeId, ScopeState};

/// Why a call or a save failed. Every variant names the service (or the
/// command and the service that queued it) and the cause.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    /// The service or function does not exist.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The arguments do not fit the function's parameters.
    #[error("{service}.{function}: {message}")]
    Arguments {
        /// The service.
        service: String,
        /// The function.
        function: String,
        /// What is wrong, naming the parameter.
        message: String,
    },
    /// Creating the service's instance failed (its start code trapped, or
    /// the host is at its instance limit).
    #[error("{service}: instantiate failed: {reason}")]
    Instantiate {
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
    /// The guest trapped or was interrupted; the scope is discarded.
    #[error("{service}.{function} trapped: {reason}")]
    Trap {
        /// The service.
        service: String,
        /// The function that was called.
        function: String,
        /// The trap, and the guest's last words on stderr when it left any.
        reason: String,
    },
    /// The scope trapped earlier, so nothing more may run in it or be saved.
    #[error("{scope} is discarded after an earlier failure ({reason}); nothing was applied")]
    Discarded {
        /// The scope.
        scope: ScopeId,
        /// The earlier failure.
        reason: String,
    },
    /// A command failed at save; every channel was rolled back.
    #[error(
        "save failed at command {position} of {total} ({command}, queued by {service}): {reason}; \
         nothing was applied"
    )]
    Command {
        /// The command's 1-based position in the queue.
        position: usize,
        /// How many commands were queued.
        total: usize,
        /// The command, described.
        command: String,
        /// The service that queued it.
        service: String,
        /// What the channel said.
        reason: String,
    },
    /// A channel could not begin or commit its transaction.
    #[error("save failed: channel {channel}: {reason}; {applied}")]
    Channel {
        /// The channel.
        channel: String,
        /// What the channel said.
        reason: String,
        /// What was applied anyway: nothing, or the channels that had already
        /// committed when a later channel's commit failed.
        applied: String,
    },
}

/// One command as it was applied at save.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// The command.
    pub command: Command,
    /// What applying it did.
    pub outcome: Outcome,
}

/// The result of a successful save.
#[derive(Debug, Clone, Serialize)]
pub struct SaveReport {
    /// The scope that was saved.
    pub scope: ScopeId,
    /// Every command, in the order applied.
    pub applied: Vec<Applied>,
}

/// One unit of work. See the module docs for its lifecycle.
pub struct Scope {
    store: Store<ScopeState>,
    registry: Arc<Registry>,
    failed: Option<String>,
}

impl Scope {
    /// Starts an empty scope over a registry snapshot. Cheap: nothing is
    /// instantiated until the first call to a service.
    pub fn new(registry: Arc<Registry>, channels: Arc<Channels>) -> Scope {
        let store = Store::new(registry.runtime().engine(), ScopeState::new(channels));
        Scope {
            store,
            registry,
            failed: None,
        }
    }

    /// This scope's id.
    pub fn id(&self) -> ScopeId {
        self.store.data().id
    }

    /// The registry this scope runs against.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The commands queued so far, in the order save would apply them.
    pub fn pending(&self) -> &[Command] {
        self.store.data().queue.commands()
    }

    /// Calls `service.function` with `args`, instantiating the service in
    /// this scope first if this is its first use.
    pub fn call(
        &mut self,
        service: &str,
        function: &str,
        args: &[Val],
    ) -> Result<Vec<Val>, ScopeError> {
        self.check_usable()?;
        let svc = Arc::clone(self.registry.service(service)?);
        let func = svc.function(function)?.clone();
        if args.len() != func.params.len() {
            return Err(ScopeError::Arguments {
                service: svc.name.clone(),
                function: func.name.clone(),
                message: format!(
                    "takes {} argument(s) ({}), got {}",
                    func.params.len(),
                    crate::signature::params(&func),
                    args.len()
                ),
            });
        }
        for (arg, (name, ty)) in args.iter().zip(&func.params) {
            crate::values::check(ty, arg, name).map_err(|e| ScopeError::Arguments {
                service: svc.name.clone(),
                function: func.name.clone(),
                message: format!("argument {e}"),
            })?;
        }
        let deadline = self.registry.runtime().call_deadline_ticks();
        self.store.set_epoch_deadline(deadline);
        let instance = self.instance(&svc)?;
        let Some(callee) = instance.get_func(&mut self.store, func.index) else {
            return Err(LookupError::UnknownFunction {
                service: svc.name.clone(),
                function: func.name.clone(),
                known: "(the instance lacks this export)".into(),
            }
            .into());
        };
        let mut results = vec![Val::Bool(false); func.results.len()];
        self.store.data_mut().stack.push(svc.name.clone());
        let outcome = callee.call(&mut self.store, args, &mut results);
        self.store.data_mut().stack.pop();
        self.log_guest_output(&svc.name);
        match outcome {
            Ok(()) => Ok(results),
            Err(e) => {
                let reason = self.trap_reason(&e);
                tracing::warn!(scope = %self.id(), service = %svc.name, "{}.{} trapped: {}", svc.name, func.name, chain(&e));
                self.failed = Some(format!("{}.{} trapped", svc.name, func.name));
                Err(ScopeError::Trap {
                    service: svc.name.clone(),
                    function: func.name,
                    reason,
                })
            }
        }
    }

    /// Applies the queue: each channel's commands in queue order inside one
    /// transaction per channel, then commits. If any command fails, every
    /// channel is rolled back and the error names the command.
    pub fn save(mut self) -> Result<SaveReport, ScopeError> {
        self.check_usable()?;
        let scope = self.id();
        let commands = self.store.data_mut().queue.take();
        let channels = Arc::clone(&self.store.data().channels);
        let total = commands.len();
        let mut open: BTreeMap<String, Box<dyn Transaction>> = BTreeMap::new();
        let mut applied = Vec::with_capacity(total);
        for (i, command) in commands.into_iter().enumerate() {
            let fail = |reason: String| ScopeError::Command {
                position: i + 1,
                total,
                command: command.describe(),
                service: command.service.clone(),
                reason,
            };
            let Some(channel) = channels.get(&command.channel) else {
                return Err(fail(format!("no channel {:?}", command.channel)));
            };
            if !open.contains_key(&command.channel) {
                let tx = channel.begin().map_err(|e| ScopeError::Channel {
                    channel: command.channel.clone(),
                    reason: e.to_string(),
                    applied: "nothing was applied".into(),
                })?;
                open.insert(command.channel.clone(), tx);
            }
            let Some(tx) = open.get_mut(&command.channel) else {
                continue;
            };
            // Dropping `open` on this early return rolls every channel back.
            let outcome = tx.apply(&command.op).map_err(|e| fail(e.to_string()))?;
            applied.push(Applied { command, outcome });
        }
        let mut committed: Vec<String> = Vec::new();
        for (name, tx) in open {
            tx.commit().map_err(|e| ScopeError::Channel {
                channel: name.clone(),
                reason: e.to_string(),
                applied: if committed.is_empty() {
                    "nothing was applied".into()
                } else {
                    format!("channels {} had already committed", committed.join(", "))
                },
            })?;
            committed.push(name);
        }
        for a in &applied {
            tracing::info!(scope = %scope, service = %a.command.service, "applied {} -> {}", a.command.describe(), a.outcome);
        }
        Ok(SaveReport { scope, applied })
    }

    fn check_usable(&self) -> Result<(), ScopeError> {
        match &self.failed {
            Some(reason) => Err(ScopeError::Discarded {
                scope: self.id(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The service's instance in this scope, created on first use.
    fn instance(&mut self, svc: &Service) -> Result<Instance, ScopeError> {
        if let Some(instance) = self.store.data().instances.get(&svc.name) {
            return Ok(*instance);
        }
        self.store.data_mut().stack.push(svc.name.clone());
        let created = svc.pre.instantiate(&mut self.store);
        self.store.data_mut().stack.pop();
        let instance = created.map_err(|e| {
            self.failed = Some(format!("{} failed to instantiate", svc.name));
            ScopeError::Instantiate {
                service: svc.name.clone(),
                reason: self.trap_reason(&e),
            }
        })?;
        tracing::debug!(scope = %self.id(), service = %svc.name, "instantiated");
        self.store
            .data_mut()
            .instances
            .insert(svc.name.clone(), instance);
        Ok(instance)
    }

    /// A short reason for a failed call: the trap, plus the last line the
    /// guest wrote to stderr (where a Rust panic message goes).
    fn trap_reason(&self, e: &wasmtime::Error) -> String {
        let mut reason = match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => format!(
                "interrupted after the call deadline of {:?}",
                self.registry.runtime().options().call_timeout
            ),
            Some(trap) => trap.to_string(),
            None => e.root_cause().to_string(),
        };
        let stderr = self.store.data().stderr.contents();
        let said = last_words(&String::from_utf8_lossy(&stderr));
        if !said.is_empty() {
            reason.push_str(&format!(" (guest stderr: {said})"));
        }
        reason
    }

    /// Sends what the guest printed since the last call to the host log,
    /// tagged with the scope and the service.
    fn log_guest_output(&mut self, service: &str) {
        let scope = self.id();
        let state = self.store.data_mut();
        for (stream, pipe, seen) in [
            ("stdout", &state.stdout, &mut state.stdout_seen),
            ("stderr", &state.stderr, &mut state.stderr_seen),
        ] {
            let bytes = pipe.contents();
            if bytes.len() > *seen {
                for line in String::from_utf8_lossy(&bytes[*seen..]).lines() {
                    tracing::info!(target: "guest", scope = %scope, service, stream, "{line}");
                }
                *seen = bytes.len();
            }
        }
    }
}

/// The last few meaningful lines a guest wrote to stderr, on one line. The
/// hint Rust adds to every panic about `RUST_BACKTRACE` is left out: guests
/// have no environment to set it in.
fn last_words(stderr: &str) -> String {
    const LINES: usize = 3;
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    lines[lines.len().saturating_sub(LINES)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::last_words;

    #[test]
    fn last_words_keep_the_panic_and_drop_the_backtrace_hint() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:9:9:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            last_words(stderr),
            "thread '<unnamed>' panicked at src/lib.rs:9:9: | boom"
        );
        assert_eq!(last_words(""), "");
    }
}
