//! B3's native port of the example `orders.place` (guests/orders) and the
//! `inventory.reserve` it calls (guests/inventory): the same checks, the same
//! reads through the same channel, and the same commands queued into the
//! host's own [`Queue`] with the same call chains, then applied by the same
//! channel transaction in the same two save rounds (the `placed` event is
//! queued once the order's id is known, as `orders`' `on-save` does).
//!
//! What the port does not do is what the sandbox adds: no store, no
//! instance, no grant or limit checks, no copies across the component
//! boundary. The ratio between the two is the price of that.

use sluice_host::bindings::{Row, Value};
use sluice_host::channels::{Caller, Channel};
use sluice_host::command::Queue;
use sluice_host::command::SqlOp;
use sluice_host::command::{Command, Operation, Outcome};
use sluice_host::state::ScopeId;

/// The channel the examples keep their tables in.
const CHANNEL: &str = "main";
/// The largest quantity one order may ask for.
const MAX_QUANTITY: u32 = 1000;

/// Why an order was refused: `orders`' `order-error`, flattened.
#[derive(Debug)]
#[expect(dead_code, reason = "the payloads are read through Debug when a bench step fails")]
pub enum OrderError {
    EmptyCustomer,
    InvalidQuantity(u32),
    UnknownProduct(i64),
    OutOfStock(i64),
    Store(String),
}

/// One unit of work of the native port: its queue and the tickets of the
/// order inserts waiting for their ids.
pub struct Orders<'a> {
    channel: &'a dyn Channel,
    scope: ScopeId,
    queue: Queue,
    placed: Vec<u64>,
}

impl<'a> Orders<'a> {
    pub fn new(channel: &'a dyn Channel) -> Self {
        Orders { channel, scope: ScopeId::new(), queue: Queue::default(), placed: Vec::new() }
    }

    /// `orders.place`: checks, reads the price, reserves stock, queues the
    /// order. Returns the total in cents.
    pub fn place(&mut self, customer: &str, product_id: i64, quantity: u32) -> Result<i64, OrderError> {
        if customer.trim().is_empty() {
            return Err(OrderError::EmptyCustomer);
        }
        if quantity == 0 || quantity > MAX_QUANTITY {
            return Err(OrderError::InvalidQuantity(quantity));
        }
        let price = self
            .read_integer("SELECT price_cents FROM products WHERE id = ?1", product_id, "price_cents")?
            .ok_or(OrderError::UnknownProduct(product_id))?;
        let total_cents = price * i64::from(quantity);
        self.reserve(product_id, quantity)?;
        let row = row(&[
            ("customer", text(customer)),
            ("product_id", Value::Integer(product_id)),
            ("quantity", Value::Integer(i64::from(quantity))),
            ("total_cents", Value::Integer(total_cents)),
            ("status", text("placed")),
        ]);
        let frames = [frame("orders", "place")];
        let ticket = self.push(&frames, Operation::Sql(SqlOp::Insert { table: "orders".into(), row }))?;
        self.placed.push(ticket);
        Ok(total_cents)
    }

    /// `inventory.reserve`, called from `orders.place`.
    fn reserve(&mut self, product_id: i64, quantity: u32) -> Result<(), OrderError> {
        if quantity == 0 {
            return Err(OrderError::InvalidQuantity(quantity));
        }
        let on_hand =
            self.read_integer("SELECT on_hand FROM stock WHERE product_id = ?1", product_id, "on_hand")?.unwrap_or(0);
        if on_hand < i64::from(quantity) {
            return Err(OrderError::OutOfStock(on_hand));
        }
        let frames = [frame("orders", "place"), frame("inventory", "reserve")];
        let op = Operation::Sql(SqlOp::Execute {
            sql: "UPDATE stock SET on_hand = on_hand - ?2 WHERE product_id = ?1 AND on_hand >= ?2".into(),
            params: vec![Value::Integer(product_id), Value::Integer(i64::from(quantity))],
        });
        self.push(&frames, op)?;
        Ok(())
    }

    /// The commands queued so far.
    pub fn pending(&self) -> &[Command] {
        self.queue.commands()
    }

    /// Applies the queue in one transaction: round 1, then the `placed`
    /// events of the inserted orders as round 2, then commit. Returns how
    /// many commands were applied.
    pub fn save(&mut self) -> Result<usize, OrderError> {
        let store = |e: sluice_host::channels::ChannelError| OrderError::Store(e.to_string());
        let mut tx = self.channel.begin().map_err(store)?;
        let caller = host_caller();
        let mut applied = 0;
        let mut events = Vec::new();
        for command in self.queue.take() {
            let outcome = tx.apply(&command.op, &caller).map_err(store)?;
            applied += 1;
            if let (true, Outcome::Inserted(order_id)) = (self.placed.contains(&command.ticket), outcome) {
                events.push(order_id);
            }
        }
        let frames = [frame("orders", "on-save")];
        for order_id in events {
            let row = row(&[("order_id", Value::Integer(order_id)), ("event", text("placed"))]);
            self.push(&frames, Operation::Sql(SqlOp::Insert { table: "order_events".into(), row }))?;
        }
        for command in self.queue.take() {
            tx.apply(&command.op, &caller).map_err(store)?;
            applied += 1;
        }
        tx.commit().map_err(store)?;
        Ok(applied)
    }

    /// Queues as the host does: the innermost frame's service, and the
    /// chain of calls as text.
    fn push(&mut self, frames: &[Frame], op: Operation) -> Result<u64, OrderError> {
        let service = frames.last().map(|f| f.service).unwrap_or_default();
        let chain = frames.iter().map(ToString::to_string).collect();
        self.queue.push(self.scope, service, chain, CHANNEL, op).map_err(OrderError::Store)
    }

    fn read_integer(&self, sql: &str, id: i64, column: &str) -> Result<Option<i64>, OrderError> {
        let rows = sluice_host::channels::sql_of(self.channel, "query")
            .and_then(|c| c.query(sql, &[Value::Integer(id)], &host_caller(), usize::MAX))
            .map_err(|e| OrderError::Store(e.to_string()))?
            .rows;
        let Some(index) = rows.columns.iter().position(|c| c == column) else { return Ok(None) };
        Ok(rows.values.first().and_then(|r| match r.get(index) {
            Some(Value::Integer(v)) => Some(*v),
            _ => None,
        }))
    }
}

/// The port is trusted host code: no grant applies, only a deadline far
/// enough away never to be met.
pub fn host_caller() -> Caller {
    Caller::host(std::time::Instant::now() + std::time::Duration::from_secs(3600))
}

/// A call on the native port's stack, as the host keeps one: the chain of
/// calls is written from these for each command.
struct Frame {
    service: &'static str,
    function: &'static str,
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.service, self.function)
    }
}

fn frame(service: &'static str, function: &'static str) -> Frame {
    Frame { service, function }
}

fn row(pairs: &[(&str, Value)]) -> Row {
    Row {
        columns: pairs.iter().map(|(c, _)| (*c).to_string()).collect(),
        values: pairs.iter().map(|(_, v)| v.clone()).collect(),
    }
}

fn text(v: &str) -> Value {
    Value::Text(v.to_string())
}
