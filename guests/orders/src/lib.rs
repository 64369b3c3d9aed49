//! Example service `orders`: places orders and clears them (the Tecture
//! "do clearing" example). Reads go through `from`, writes are queued through
//! `to` and applied only when the host saves the scope. Placing an order
//! calls the `inventory` service in the same scope, and `on-save` turns the
//! new order's id into its `placed` event in a second save round: a row of
//! `order_events` and, when the host has a `bus` channel `events`, a
//! message on `orders.placed` that is published only if the save commits.

sluice_guest::generate!("acme:orders/orders");

use std::cell::RefCell;

use acme::inventory::stock::{self, StockError};
use exports::acme::orders::api::{Guest, OrderError, Placed};
use exports::sluice::service::lifecycle;
use sluice_guest::{
    from, row, to,
    types::{Outcome, Refusal, Value},
};

/// The channel the examples keep their tables in.
const CHANNEL: &str = "main";
/// The bus the `placed` events go out on, when the host has it.
const EVENTS: &str = "events";
/// The largest quantity one order may ask for.
const MAX_QUANTITY: u32 = 1000;

thread_local! {
    /// Order inserts queued in this scope, waiting for their ids: the
    /// ticket and the order.
    static PLACED: RefCell<Vec<(u64, Order)>> = const { RefCell::new(Vec::new()) };
}

/// An order being placed, for its event.
struct Order {
    customer: String,
    product_id: i64,
    quantity: u32,
    total_cents: i64,
}

struct Component;

impl Guest for Component {
    fn place(customer: String, product_id: i64, quantity: u32) -> Result<Placed, OrderError> {
        check_order(&customer, quantity)?;
        let price = product_price(product_id)?;
        let total_cents = price * i64::from(quantity);
        stock::reserve(product_id, quantity).map_err(|e| match e {
            StockError::Insufficient(on_hand) => OrderError::OutOfStock(on_hand),
            StockError::InvalidQuantity(q) => OrderError::InvalidQuantity(q),
            StockError::Store(e) => OrderError::Store(e),
        })?;
        let ticket = to::insert(
            CHANNEL,
            "orders",
            &row(&[
                ("customer", customer.clone().into()),
                ("product_id", product_id.into()),
                ("quantity", quantity.into()),
                ("total_cents", total_cents.into()),
                ("status", "placed".into()),
            ]),
        )
        .map_err(OrderError::Store)?;
        let order = Order { customer, product_id, quantity, total_cents };
        PLACED.with(|p| p.borrow_mut().push((ticket, order)));
        Ok(Placed { total_cents })
    }

    fn do_clearing(order_id: i64) -> Result<(), OrderError> {
        let found = from::query(CHANNEL, "SELECT status, total_cents FROM orders WHERE id = ?1", &[order_id.into()])
            .map_err(OrderError::Store)?;
        if found.is_empty() {
            return Err(OrderError::UnknownOrder(order_id));
        }
        let status: String = found.value(0, "status").unwrap_or_default();
        if status != "placed" {
            return Err(OrderError::NotPlaced(status));
        }
        let amount = found.get(0, "total_cents").cloned().unwrap_or(Value::Null);
        // The status guard in the WHERE clause, and the expectation that it
        // takes exactly this one order, keep a concurrent clearing from
        // clearing the same order twice: the second save is a conflict.
        let cleared = to::execute(
            CHANNEL,
            "UPDATE orders SET status = 'cleared' WHERE id = ?1 AND status = 'placed'",
            &[order_id.into()],
        )
        .map_err(OrderError::Store)?;
        to::expect(cleared, 1).map_err(OrderError::Store)?;
        to::insert(CHANNEL, "clearings", &row(&[("order_id", order_id.into()), ("amount_cents", amount)]))
            .map_err(OrderError::Store)?;
        queue_event(order_id, "cleared").map_err(OrderError::Store)?;
        Ok(())
    }
}

impl lifecycle::Guest for Component {
    fn init() {}

    /// The order's id exists only once its insert is applied: record the
    /// `placed` event now, in the next round of the same save.
    fn on_save(outcomes: Vec<(u64, Outcome)>) -> Result<(), Refusal> {
        let placed = PLACED.with(|p| std::mem::take(&mut *p.borrow_mut()));
        for (ticket, outcome) in outcomes {
            let Outcome::Inserted(order_id) = outcome else { continue };
            let Some((_, order)) = placed.iter().find(|(t, _)| *t == ticket) else { continue };
            // A refusal here can only be a host misconfiguration (no
            // channel); trapping makes the whole save fail visibly.
            if let Err(e) = queue_event(order_id, "placed") {
                panic!("cannot queue the placed event of order {order_id}: {e:?}");
            }
            match publish_placed(order_id, order) {
                // A host without an `events` bus just has no messages.
                Ok(_) | Err(sluice_guest::types::Error::UnknownChannel(_)) => {}
                Err(e) => panic!("cannot publish the placed event of order {order_id}: {e:?}"),
            }
        }
        Ok(())
    }

    fn on_finally() {}

    fn dispose() {}
}

fn queue_event(order_id: i64, event: &str) -> Result<u64, sluice_guest::types::Error> {
    to::insert(CHANNEL, "order_events", &row(&[("order_id", order_id.into()), ("event", event.into())]))
}

/// Queues the `orders.placed` message: the order as JSON, its id also in
/// the `order-id` header.
fn publish_placed(order_id: i64, order: &Order) -> Result<u64, sluice_guest::types::Error> {
    let payload = format!(
        "{{\"order_id\":{order_id},\"customer\":{},\"product_id\":{},\"quantity\":{},\"total_cents\":{}}}",
        json_string(&order.customer),
        order.product_id,
        order.quantity,
        order.total_cents
    );
    let headers = [("order-id".to_string(), order_id.to_string()), ("content-type".into(), "application/json".into())];
    to::publish(EVENTS, "orders.placed", payload.as_bytes(), &headers)
}

/// `text` as a JSON string.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The checks that need no database.
fn check_order(customer: &str, quantity: u32) -> Result<(), OrderError> {
    if customer.trim().is_empty() {
        return Err(OrderError::EmptyCustomer);
    }
    if quantity == 0 || quantity > MAX_QUANTITY {
        return Err(OrderError::InvalidQuantity(quantity));
    }
    Ok(())
}

fn product_price(product_id: i64) -> Result<i64, OrderError> {
    let found = from::query(CHANNEL, "SELECT price_cents FROM products WHERE id = ?1", &[product_id.into()])
        .map_err(OrderError::Store)?;
    found.value(0, "price_cents").ok_or(OrderError::UnknownProduct(product_id))
}

export!(Component);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customers_are_json_strings() {
        assert_eq!(json_string("ann"), "\"ann\"");
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn rejects_empty_customer_and_bad_quantities() {
        assert!(matches!(check_order(" ", 1), Err(OrderError::EmptyCustomer)));
        assert!(matches!(check_order("ann", 0), Err(OrderError::InvalidQuantity(0))));
        assert!(matches!(check_order("ann", 1001), Err(OrderError::InvalidQuantity(1001))));
        assert!(check_order("ann", 1000).is_ok());
    }
}
