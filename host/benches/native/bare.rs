//! B3's bare host: the example components `orders` and `inventory` run in
//! one store by wasmtime, with Sluice's imports implemented by the least a
//! host can do for them, which is what the native port does
//! (`native/orders.rs`): each read goes straight to the channel as trusted
//! host code, each command is pushed into the host's own [`Queue`] with its
//! call chain, and `orders`' import of `acme:inventory/stock` calls
//! `inventory`'s export in the same store.
//!
//! What it leaves out is all of Sluice's own work between the guest and the
//! channel: no grant (so no SQLite authorizer), no budget, no limits, no
//! kept reads, no call stack beyond the chain, no log or trace. What it
//! keeps is what a component costs by being one: the instances, their
//! hooks, every value lifted out of guest memory into owned Rust values and
//! lowered back, and the guests' own code. B3 at 20 commands against the
//! native port is the part of the gap no host can remove while the
//! services' interfaces stay as they are; the component against this is
//! Sluice's part.

use std::sync::Arc;

use sluice_host::bindings::sluice::service::{from, to, types};
use sluice_host::bindings::{Error, Imports, Row, Rows, Value};
use sluice_host::channels::Channel;
use sluice_host::command::SqlOp;
use sluice_host::command::{Operation, Queue};
use sluice_host::registry::Registry;
use sluice_host::state::ScopeId;
use wasmtime::component::{Component, ComponentExportIndex, Func, HasSelf, InstancePre, Linker, ResourceTable, Val};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

const LIFECYCLE: &str = "sluice:service/lifecycle@0.1.0";
const STOCK: &str = "acme:inventory/stock@0.1.0";
const API: &str = "acme:orders/api@0.1.0";

/// One scope's store: WASI, the queue, and where the call stands.
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    channel: Arc<dyn Channel>,
    scope: ScopeId,
    queue: Queue,
    /// `service.function` of each call in progress, outermost first.
    stack: Vec<&'static str>,
    /// The chains of the stacks seen, each built once and shared by every
    /// command queued under it, as the host's call stack keeps them: no
    /// allocation per command.
    chains: Vec<(Vec<&'static str>, Arc<[String]>)>,
    /// `inventory`'s `reserve`, once it is instantiated.
    reserve: Option<Func>,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl State {
    fn push(&mut self, channel: &str, op: Operation) -> wasmtime::Result<Result<u64, Error>> {
        let service = self.stack.last().and_then(|f| f.split('.').next()).unwrap_or_default();
        let chain = match self.chains.iter().find(|(stack, _)| *stack == self.stack) {
            Some((_, chain)) => Arc::clone(chain),
            None => {
                let chain: Arc<[String]> = self.stack.iter().map(ToString::to_string).collect();
                self.chains.push((self.stack.clone(), Arc::clone(&chain)));
                chain
            }
        };
        Ok(self.queue.push(self.scope, service, chain, channel, op).map_err(Error::Invalid))
    }
}

/// The one channel these services use; any other name is unknown.
fn known(channel: &str) -> Result<(), Error> {
    if channel == "main" { Ok(()) } else { Err(Error::UnknownChannel(channel.to_string())) }
}

fn not_here<T>() -> wasmtime::Result<Result<T, Error>> {
    Ok(Err(Error::Invalid("not in the bare host".into())))
}

impl types::Host for State {}

impl from::Host for State {
    fn query(&mut self, channel: String, sql: String, params: Vec<Value>) -> wasmtime::Result<Result<Rows, Error>> {
        if let Err(e) = known(&channel) {
            return Ok(Err(e));
        }
        let caller = super::native_orders::host_caller();
        Ok(sluice_host::channels::sql_of(self.channel.as_ref(), "query")
            .and_then(|c| c.query(&sql, &params, &caller, usize::MAX))
            .map(|r| r.rows)
            .map_err(|e| Error::Unavailable(e.to_string())))
    }

    fn get(&mut self, _: String, _: String) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        not_here()
    }

    fn list(&mut self, _: String, _: String, _: u32) -> wasmtime::Result<Result<Vec<types::Entry>, Error>> {
        not_here()
    }

    fn fetch(&mut self, _: String, _: types::Request) -> wasmtime::Result<Result<types::Response, Error>> {
        not_here()
    }
}

impl to::Host for State {
    fn insert(&mut self, channel: String, table: String, row: Row) -> wasmtime::Result<Result<u64, Error>> {
        if let Err(e) = known(&channel) {
            return Ok(Err(e));
        }
        self.push(&channel, Operation::Sql(SqlOp::Insert { table, row }))
    }

    fn update(
        &mut self,
        channel: String,
        table: String,
        key: Row,
        changes: Row,
    ) -> wasmtime::Result<Result<u64, Error>> {
        if let Err(e) = known(&channel) {
            return Ok(Err(e));
        }
        self.push(&channel, Operation::Sql(SqlOp::Update { table, key, changes }))
    }

    fn delete(&mut self, channel: String, table: String, key: Row) -> wasmtime::Result<Result<u64, Error>> {
        if let Err(e) = known(&channel) {
            return Ok(Err(e));
        }
        self.push(&channel, Operation::Sql(SqlOp::Delete { table, key }))
    }

    fn execute(&mut self, channel: String, sql: String, params: Vec<Value>) -> wasmtime::Result<Result<u64, Error>> {
        if let Err(e) = known(&channel) {
            return Ok(Err(e));
        }
        self.push(&channel, Operation::Sql(SqlOp::Execute { sql, params }))
    }

    fn expect(&mut self, ticket: u64, rows: u64) -> wasmtime::Result<Result<(), Error>> {
        let service = self.stack.last().and_then(|f| f.split('.').next()).unwrap_or_default();
        Ok(self.queue.expect(service, ticket, rows).map_err(Error::Invalid))
    }

    fn reply_to(&mut self, _: u64, _: String, _: String) -> wasmtime::Result<Result<(), Error>> {
        not_here()
    }

    fn set(&mut self, _: String, _: String, _: Vec<u8>) -> wasmtime::Result<Result<u64, Error>> {
        not_here()
    }

    fn remove(&mut self, _: String, _: String) -> wasmtime::Result<Result<u64, Error>> {
        not_here()
    }

    fn compare_and_swap(
        &mut self,
        _: String,
        _: String,
        _: Option<Vec<u8>>,
        _: Option<Vec<u8>>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        not_here()
    }

    fn increment(&mut self, _: String, _: String, _: i64) -> wasmtime::Result<Result<u64, Error>> {
        not_here()
    }

    fn publish(
        &mut self,
        _: String,
        _: String,
        _: Vec<u8>,
        _: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        not_here()
    }

    fn send(&mut self, _: String, _: types::Request) -> wasmtime::Result<Result<u64, Error>> {
        not_here()
    }
}

/// A component's lifecycle hook, when it exports it.
fn hook(component: &Component, name: &str) -> Option<ComponentExportIndex> {
    let lifecycle = component.get_export_index(None, LIFECYCLE)?;
    component.get_export_index(Some(&lifecycle), name)
}

/// A pre-instantiated service and its hooks.
struct Prepared {
    pre: InstancePre<State>,
    init: Option<ComponentExportIndex>,
    dispose: Option<ComponentExportIndex>,
}

impl Prepared {
    fn new(linker: &Linker<State>, engine: &Engine, service: &str) -> Prepared {
        let path = super::support::components().join(format!("{service}.wasm"));
        let component = Component::from_file(engine, &path).expect("the component compiles");
        let pre = linker.instantiate_pre(&component).expect("pre-instantiates");
        Prepared { init: hook(&component, "init"), dispose: hook(&component, "dispose"), pre }
    }
}

/// `orders` and `inventory` on the bare host.
pub struct BareHost {
    engine: Engine,
    channel: Arc<dyn Channel>,
    inventory: Prepared,
    orders: Prepared,
    reserve: ComponentExportIndex,
    place: ComponentExportIndex,
}

impl BareHost {
    /// With the host's own engine (pooling allocator, epochs) and channel.
    pub fn new(registry: &Registry, channel: Arc<dyn Channel>) -> BareHost {
        let engine = registry.runtime().engine().clone();
        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("WASI links");
        Imports::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s).expect("Sluice's imports link");
        linker
            .instance(STOCK)
            .expect("the stock interface")
            .func_new("reserve", |mut store, _, args, results| {
                let reserve = store.data().reserve.expect("inventory is instantiated first");
                store.data_mut().stack.push("inventory.reserve");
                let called = reserve.call(&mut store, args, results);
                store.data_mut().stack.pop();
                called
            })
            .expect("reserve links");
        let inventory = Prepared::new(&linker, &engine, "inventory");
        let orders = Prepared::new(&linker, &engine, "orders");
        let export = |component: &InstancePre<State>, interface: &str, name: &str| {
            let component = component.component();
            let interface = component.get_export_index(None, interface).expect("the interface is exported");
            component.get_export_index(Some(&interface), name).expect("the function is exported")
        };
        let reserve = export(&inventory.pre, STOCK, "reserve");
        let place = export(&orders.pre, API, "place");
        BareHost { engine, channel, inventory, orders, reserve, place }
    }

    /// One scope: a store, both instances with their `init`, `orders.place`
    /// called `places` times with `args`, the `dispose` hooks, and the
    /// store dropped unsaved. Returns how many commands were queued.
    pub fn scope(&self, places: u32, args: &[Val]) -> usize {
        let wasi =
            WasiCtx::builder().stdout(MemoryOutputPipe::new(1 << 16)).stderr(MemoryOutputPipe::new(1 << 16)).build();
        let state = State {
            wasi,
            table: ResourceTable::new(),
            channel: Arc::clone(&self.channel),
            scope: ScopeId::new(),
            queue: Queue::default(),
            stack: Vec::new(),
            chains: Vec::new(),
            reserve: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.set_epoch_deadline(1 << 20);
        let call = |store: &mut Store<State>, func: Func, args: &[Val], results: usize| {
            let mut out = vec![Val::Bool(false); results];
            func.call(&mut *store, args, &mut out).expect("the call returns");
            out
        };
        let mut hooks = Vec::new();
        for (service, prepared) in [("inventory", &self.inventory), ("orders", &self.orders)] {
            let instance = prepared.pre.instantiate(&mut store).expect("instantiates");
            if let Some(init) = prepared.init.and_then(|i| instance.get_func(&mut store, i)) {
                call(&mut store, init, &[], 0);
            }
            hooks.push(prepared.dispose.and_then(|i| instance.get_func(&mut store, i)));
            if service == "inventory" {
                store.data_mut().reserve = instance.get_func(&mut store, self.reserve);
            } else {
                let place = instance.get_func(&mut store, self.place).expect("orders.place");
                for _ in 0..places {
                    store.data_mut().stack.push("orders.place");
                    let out = call(&mut store, place, args, 1);
                    store.data_mut().stack.pop();
                    assert!(matches!(&out[0], Val::Result(Ok(_))), "the order is placed: {out:?}");
                }
            }
        }
        for dispose in hooks.into_iter().flatten() {
            call(&mut store, dispose, &[], 0);
        }
        store.data().queue.commands().len()
    }
}
