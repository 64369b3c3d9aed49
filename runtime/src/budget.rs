//! Limits enforced while guest code runs: the wall-clock deadline (checked
//! on the engine's epoch ticks), fuel, and memory and table growth.
//!
//! Each call into a service pushes a budget: its deadline is the earlier of
//! the caller's and the call's start plus the service's `deadline-ms`, and
//! the whole scope is bounded by the host's scope timeout. Fuel works the
//! same way: a call gets the smaller of what its caller has left and the
//! service's `fuel`; what it does not get is held back and returned when
//! it ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, StoreContextMut, Trap, UpdateDeadline};

use crate::limits::{Breach, size};
use crate::registry::Service;
use crate::state::ScopeState;

/// Core instances, tables and memories one scope may create; a few per
/// service is normal, so only a runaway reaches these.
const STORE_INSTANCES: usize = 1_000;
const STORE_TABLES: usize = 1_000;
const STORE_MEMORIES: usize = 1_000;
/// Entries one table may grow to.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;
/// The fuel a scope starts with when fuel is metered: more than any call
/// may be given, so each call's own budget is what binds.
pub const SCOPE_FUEL: u64 = u64::MAX / 2;

/// Whose limit set a budget: the service's own, or the scope's.
#[derive(Clone)]
enum Owner {
    Service(Arc<Service>),
    Scope,
}

/// The limits in force for one call into a service.
#[derive(Clone)]
pub(crate) struct Budget {
    deadline: Instant,
    deadline_owner: Owner,
    /// Fuel held back from the caller while this call runs.
    fuel_reserve: u64,
    fuel_owner: Owner,
    fuel_limit: u64,
}

/// Starts a call into `service`: pushes its budget and sets its fuel.
pub(crate) fn enter(store: &mut StoreContextMut<'_, ScopeState>, service: &Arc<Service>) {
    let now = Instant::now();
    let state = store.data();
    let (outer_deadline, outer_owner) = match state.calls.budgets.last() {
        Some(b) => (b.deadline, b.deadline_owner.clone()),
        None => (state.scope_deadline, Owner::Scope),
    };
    let own = now + service.limits.deadline;
    let (deadline, deadline_owner) =
        if own < outer_deadline { (own, Owner::Service(Arc::clone(service))) } else { (outer_deadline, outer_owner) };
    let mut budget =
        Budget { deadline, deadline_owner, fuel_reserve: 0, fuel_owner: Owner::Scope, fuel_limit: SCOPE_FUEL };
    // Fuel is asked for only when the service has a fuel limit: without
    // metering, `get_fuel` builds an error every call.
    if let Some(limit) = service.limits.fuel
        && let Ok(left) = store.get_fuel()
    {
        if limit < left {
            budget.fuel_reserve = left - limit;
            budget.fuel_owner = Owner::Service(Arc::clone(service));
            budget.fuel_limit = limit;
            let _ = store.set_fuel(limit);
        } else if let Some(outer) = store.data().calls.budgets.last() {
            budget.fuel_owner = outer.fuel_owner.clone();
            budget.fuel_limit = outer.fuel_limit;
        }
    }
    store.data_mut().calls.budgets.push(budget);
}

/// Ends the innermost call: gives back the fuel held from its caller.
pub(crate) fn leave(store: &mut StoreContextMut<'_, ScopeState>) {
    let Some(budget) = store.data_mut().calls.budgets.pop() else { return };
    if budget.fuel_reserve > 0
        && let Ok(left) = store.get_fuel()
    {
        let _ = store.set_fuel(left.saturating_add(budget.fuel_reserve));
    }
}

/// Turns a fuel trap into a breach naming the service whose budget ran out.
/// Called by the innermost call that sees the trap, before [`leave`].
pub(crate) fn explain(store: &StoreContextMut<'_, ScopeState>, service: &str, e: wasmtime::Error) -> wasmtime::Error {
    if e.downcast_ref::<Trap>() != Some(&Trap::OutOfFuel) {
        return e;
    }
    let breach = match store.data().calls.budgets.last() {
        Some(Budget { fuel_owner: Owner::Service(owner), fuel_limit, .. }) => Breach::new(
            &owner.name,
            "fuel",
            format!("{service} ran out of fuel: {}'s calls may use {fuel_limit} units (limits.fuel)", owner.name),
        ),
        _ => Breach::new(service, "fuel", "ran out of the scope's fuel".into()),
    };
    wasmtime::Error::new(breach)
}

/// The scope ended because whoever was waiting for it went away (an HTTP
/// client hung up); nothing it queued is applied.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{service} was cancelled: the client went away before its scope ended")]
pub struct Cancelled {
    /// The service running when the scope noticed.
    pub service: String,
}

pub use crate::work::Canceller;

/// The deadline in force for the innermost call, and whose limit set it.
#[derive(Clone)]
pub(crate) struct Deadline {
    /// When the call must have ended.
    pub at: Instant,
    owner: Owner,
    scope_timeout: Duration,
    /// The scope's cancel flag: a cancelled scope is past every deadline.
    pub cancel: Canceller,
}

impl Deadline {
    /// The innermost call's deadline (the scope's, outside any call).
    pub(crate) fn current(state: &ScopeState) -> Deadline {
        let (at, owner) = match state.calls.budgets.last() {
            Some(b) => (b.deadline, b.deadline_owner.clone()),
            None => (state.scope_deadline, Owner::Scope),
        };
        Deadline { at, owner, scope_timeout: state.scope_timeout, cancel: state.cancel.clone() }
    }

    /// Why the call must stop now that its deadline passed (or its scope
    /// was cancelled), as the error that ends it.
    pub(crate) fn passed(&self, running: &str) -> wasmtime::Error {
        if self.cancel.is_cancelled() {
            return wasmtime::Error::new(Cancelled { service: running.to_string() });
        }
        wasmtime::Error::new(self.breach(running))
    }

    /// The breach of this deadline while `running` ran (in wasm or in a
    /// host call it made).
    pub(crate) fn breach(&self, running: &str) -> Breach {
        match &self.owner {
            Owner::Service(service) => {
                let limit = service.limits.deadline;
                let detail = if service.name == running {
                    format!("still running after {} (limits.deadline-ms)", millis(limit))
                } else {
                    format!("still running after {} (limits.deadline-ms), in {running}", millis(limit))
                };
                Breach::new(&service.name, "deadline-ms", detail)
            }
            Owner::Scope => Breach::new(
                running,
                "scope-timeout",
                format!("the scope ran past the host's scope timeout of {}", millis(self.scope_timeout)),
            ),
        }
    }
}

/// The epoch callback: runs on every tick while guest code runs, and stops
/// it once the innermost call's deadline has passed.
pub fn on_epoch(store: StoreContextMut<'_, ScopeState>) -> wasmtime::Result<UpdateDeadline> {
    let state = store.data();
    let deadline = Deadline::current(state);
    if Instant::now() < deadline.at && !deadline.cancel.is_cancelled() {
        return Ok(UpdateDeadline::Continue(1));
    }
    let running = state.calls.frames.last().map(|f| f.service.name.as_str()).unwrap_or_default();
    Err(deadline.passed(running))
}

fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

impl ScopeState {
    /// The service whose code is running, for limits checked from inside a
    /// guest call.
    fn running(&self) -> Option<&std::sync::Arc<Service>> {
        self.calls.frames.last().map(|frame| &frame.service)
    }
}

impl ResourceLimiter for ScopeState {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let Some(service) = self.running() else { return Ok(true) };
        let limit = service.limits.memory_bytes;
        if desired <= limit {
            return Ok(true);
        }
        Err(wasmtime::Error::new(Breach::new(
            &service.name,
            "memory-mb",
            format!(
                "tried to grow its memory from {} to {}, over its limit of {} (limits.memory-mb)",
                size(current),
                size(desired),
                size(limit)
            ),
        )))
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired <= MAX_TABLE_ELEMENTS {
            return Ok(true);
        }
        let service = self.running().map(|s| s.name.clone()).unwrap_or_default();
        Err(wasmtime::Error::new(Breach::new(
            &service,
            "table-elements",
            format!("tried to grow a table from {current} to {desired} entries; the host allows {MAX_TABLE_ELEMENTS}"),
        )))
    }

    fn instances(&self) -> usize {
        STORE_INSTANCES
    }

    fn tables(&self) -> usize {
        STORE_TABLES
    }

    fn memories(&self) -> usize {
        STORE_MEMORIES
    }
}
