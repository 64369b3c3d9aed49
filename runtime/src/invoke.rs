//! The one way into a guest, shared by a scope's own calls, calls one
//! service makes to another (forwarded by the linker), and lifecycle hooks:
//! find or create the instance, refuse re-entry, keep the call stack.

use std::sync::Arc;

use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentExportIndex, Instance, Val};

use crate::limits::{Breach, size};
use crate::registry::Service;
use crate::state::ScopeState;

/// A call that would re-enter a service already on the stack. The component
/// model forbids re-entering an instance, so the host refuses it by name.
#[derive(Debug, thiserror::Error)]
#[error("call cycle: {chain} would re-enter {service}, which is already running")]
pub struct CallCycle {
    /// The stack, with the refused call last.
    pub chain: String,
    /// The service that would be re-entered.
    pub service: String,
}

/// One call on the scope's stack: `orders.place`. It holds the service
/// itself (from the scope's registry), so what runs inside the call (host
/// calls, limits) needs no lookup by name.
#[derive(Clone)]
pub struct Frame {
    /// The service being called.
    pub service: Arc<Service>,
    /// The function (or hook) being called.
    pub function: String,
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.service.name, self.function)
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({self})")
    }
}

/// The names of the calls on the stack (`["orders.place",
/// "inventory.reserve"]`), shared by every command and read made under the
/// same calls, and built again only for a stack not among the last few.
#[derive(Default)]
pub(crate) struct Chain {
    /// The stacks seen most recently and their names, newest last: a scope
    /// goes back and forth between a few (`orders.place`, then
    /// `orders.place → inventory.reserve`, and again for the next order).
    known: Vec<(Vec<Frame>, Arc<[String]>)>,
}

/// How many stacks a [`Chain`] keeps.
const CHAINS_KEPT: usize = 8;

impl Chain {
    /// The names of `frames`.
    pub(crate) fn of(&mut self, frames: &[Frame]) -> Arc<[String]> {
        let same = |a: &Frame, b: &Frame| Arc::ptr_eq(&a.service, &b.service) && a.function == b.function;
        let seen = |known: &[Frame]| known.len() == frames.len() && known.iter().zip(frames).all(|(a, b)| same(a, b));
        if let Some((_, names)) = self.known.iter().rev().find(|(known, _)| seen(known)) {
            return Arc::clone(names);
        }
        let names: Arc<[String]> = frames.iter().map(ToString::to_string).collect();
        if self.known.len() == CHAINS_KEPT {
            self.known.remove(0);
        }
        self.known.push((frames.to_vec(), Arc::clone(&names)));
        names
    }
}

/// Frames as people read them: `orders.place → inventory.reserve`.
pub fn chain(frames: &[Frame]) -> String {
    frames.iter().map(Frame::to_string).collect::<Vec<_>>().join(" → ")
}

/// The export a guest call goes to.
pub struct Target<'a> {
    /// The service.
    pub service: &'a Arc<Service>,
    /// The function or hook, by name, for errors and spans.
    pub function: &'a str,
    /// The export.
    pub index: ComponentExportIndex,
}

/// Calls `target` with `args` inside this store, instantiating its service
/// first if this scope has not used it yet.
pub fn call(
    store: &mut StoreContextMut<'_, ScopeState>,
    target: Target<'_>,
    args: &[Val],
    results: &mut [Val],
) -> wasmtime::Result<()> {
    let _span = tracing::debug_span!(
        "call",
        scope = %store.data().id,
        service = %target.service.name,
        function = target.function
    )
    .entered();
    let frame = Frame { service: Arc::clone(target.service), function: target.function.to_string() };
    if store.data().calls.frames.iter().any(|f| f.service.name == frame.service.name) {
        let mut frames = store.data().calls.frames.clone();
        frames.push(frame);
        return Err(wasmtime::Error::new(CallCycle { chain: chain(&frames), service: target.service.name.clone() }));
    }
    // Output so far belongs to the caller; what the call prints, to the callee.
    store.data_mut().flush_output(None);
    crate::budget::enter(store, target.service);
    let outcome = enter_and_call(store, &target, frame, args, results);
    store.data_mut().flush_output(Some(&target.service.name));
    let outcome = outcome.map_err(|e| crate::budget::explain(store, &target.service.name, e));
    crate::budget::leave(store);
    outcome
}

/// The call itself, inside the service's budget: instance, export, call,
/// and the size of what it returned.
fn enter_and_call(
    store: &mut StoreContextMut<'_, ScopeState>,
    target: &Target<'_>,
    frame: Frame,
    args: &[Val],
    results: &mut [Val],
) -> wasmtime::Result<()> {
    let instance = instance(store, target.service)?;
    let func = instance.get_func(&mut *store, target.index).ok_or_else(|| {
        wasmtime::Error::msg(format!("{}: the instance has no export {}", frame.service.name, frame.function))
    })?;
    store.data_mut().calls.frames.push(frame);
    let outcome = func.call(&mut *store, args, results);
    store.data_mut().calls.frames.pop();
    outcome?;
    let bytes: usize = results.iter().map(crate::values::size).sum();
    let limit = target.service.limits.result_bytes;
    if bytes > limit {
        return Err(wasmtime::Error::new(Breach::new(
            &target.service.name,
            "result-bytes",
            format!(
                "{}.{} returned {}, over its limit of {} (limits.result-bytes)",
                target.service.name,
                target.function,
                size(bytes),
                size(limit)
            ),
        )));
    }
    Ok(())
}

/// The service's instance in this scope. On first use it is instantiated
/// and, when it exports `lifecycle.init`, initialized.
pub(crate) fn instance(
    store: &mut StoreContextMut<'_, ScopeState>,
    service: &Arc<Service>,
) -> wasmtime::Result<Instance> {
    if let Some(instance) = store.data().calls.instances.get(&service.name) {
        return Ok(*instance);
    }
    store.data_mut().calls.frames.push(Frame { service: Arc::clone(service), function: "instantiate".into() });
    let created = service.code().and_then(|c| c.pre.instantiate(&mut *store));
    store.data_mut().calls.frames.pop();
    let instance = created?;
    let state = store.data_mut();
    state.calls.instances.insert(service.name.clone(), instance);
    state.calls.order.push(service.name.clone());
    tracing::debug!(scope = %state.id, service = %service.name, "instantiated");
    if let Some(index) = service.code().ok().and_then(|c| c.hooks.init) {
        call(store, Target { service, function: "init", index }, &[], &mut [])?;
    }
    Ok(instance)
}
