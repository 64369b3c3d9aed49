//! Example service `orders`: places orders and clears them (the Tecture
//! "do clearing" example). Reads go through `from`, writes are queued through
//! `to` and applied only when the host saves the scope.

wit_bindgen::generate!({
    path: ["../../wit", "wit"],
    world: "acme:orders/orders",
    with: {
        "sluice:service/types@0.1.0": sluice_guest::types,
        "sluice:service/from@0.1.0": sluice_guest::from,
        "sluice:service/to@0.1.0": sluice_guest::to,
    },
});

use exports::acme::orders::api::{Guest, OrderError, Placed};
use sluice_guest::{from, row, to, types::Value};

/// The channel the examples keep their tables in.
const CHANNEL: &str = "main";
/// The largest quantity one order may ask for.
const MAX_QUANTITY: u32 = 1000;

struct Component;

impl Guest for Component {
    fn place(customer: String, product_id: i64, quantity: u32) -> Result<Placed, OrderError> {
        check_order(&customer, quantity)?;
        let price = product_price(product_id)?;
        let total_cents = price * i64::from(quantity);
        to::insert(
            CHANNEL,
            "orders",
            &row(&[
                ("customer", customer.into()),
                ("product_id", product_id.into()),
                ("quantity", i64::from(quantity).into()),
                ("total_cents", total_cents.into()),
                ("status", "placed".into()),
            ]),
        )
        .map_err(OrderError::Store)?;
        Ok(Placed { total_cents })
    }

    fn do_clearing(order_id: i64) -> Result<(), OrderError> {
        let found = from::query(
            CHANNEL,
            "SELECT status, total_cents FROM orders WHERE id = ?1",
            &[order_id.into()],
        )
        .map_err(OrderError::Store)?;
        if found.is_empty() {
            return Err(OrderError::UnknownOrder(order_id));
        }
        let status = found
            .get(0, "status")
            .and_then(Value::as_text)
            .unwrap_or("");
        if status != "placed" {
            return Err(OrderError::NotPlaced(status.to_string()));
        }
        let amount = found.get(0, "total_cents").cloned().unwrap_or(Value::Null);
        // The status guard in the WHERE clause keeps a concurrent clearing from
        // clearing the same order twice.
        to::execute(
            CHANNEL,
            "UPDATE orders SET status = 'cleared' WHERE id = ?1 AND status = 'placed'",
            &[order_id.into()],
        )
        .map_err(OrderError::Store)?;
        to::insert(
            CHANNEL,
            "clearings",
            &row(&[("order_id", order_id.into()), ("amount_cents", amount)]),
        )
        .map_err(OrderError::Store)?;
        Ok(())
    }
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
    let found = from::query(
        CHANNEL,
        "SELECT price_cents FROM products WHERE id = ?1",
        &[product_id.into()],
    )
    .map_err(OrderError::Store)?;
    found
        .get(0, "price_cents")
        .and_then(Value::as_integer)
        .ok_or(OrderError::UnknownProduct(product_id))
}

export!(Component);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_customer_and_bad_quantities() {
        assert!(matches!(
            check_order(" ", 1),
            Err(OrderError::EmptyCustomer)
        ));
        assert!(matches!(
            check_order("ann", 0),
            Err(OrderError::InvalidQuantity(0))
        ));
        assert!(matches!(
            check_order("ann", 1001),
            Err(OrderError::InvalidQuantity(1001))
        ));
        assert!(check_order("ann", 1000).is_ok());
    }
}
