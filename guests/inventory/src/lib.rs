//! Example service `inventory`: stock levels. `orders` imports its `stock`
//! interface and calls `reserve` inside the same scope, so the reservation
//! and the order are saved together or not at all.

sluice_guest::generate!("acme:inventory/inventory");

use exports::acme::inventory::stock::{Guest, StockError};
use sluice_guest::{from, to};

const CHANNEL: &str = "main";

struct Component;

impl Guest for Component {
    fn reserve(product_id: i64, quantity: u32) -> Result<(), StockError> {
        check_quantity(quantity)?;
        let on_hand = on_hand(product_id)?;
        if on_hand < i64::from(quantity) {
            return Err(StockError::Insufficient(on_hand));
        }
        // The host checks at save that the read above still holds; the
        // guard and the expectation that the update takes exactly the one
        // row say the same in the command itself.
        let taken = to::execute(
            CHANNEL,
            "UPDATE stock SET on_hand = on_hand - ?2 WHERE product_id = ?1 AND on_hand >= ?2",
            &[product_id.into(), quantity.into()],
        )
        .map_err(StockError::Store)?;
        to::expect(taken, 1).map_err(StockError::Store)?;
        Ok(())
    }

    fn restock(product_id: i64, quantity: u32) -> Result<(), StockError> {
        check_quantity(quantity)?;
        to::execute(
            CHANNEL,
            "INSERT INTO stock (product_id, on_hand) VALUES (?1, ?2)
             ON CONFLICT (product_id) DO UPDATE SET on_hand = stock.on_hand + excluded.on_hand",
            &[product_id.into(), quantity.into()],
        )
        .map_err(StockError::Store)?;
        Ok(())
    }

    fn level(product_id: i64) -> Result<i64, StockError> {
        on_hand(product_id)
    }
}

fn check_quantity(quantity: u32) -> Result<(), StockError> {
    if quantity == 0 {
        return Err(StockError::InvalidQuantity(quantity));
    }
    Ok(())
}

fn on_hand(product_id: i64) -> Result<i64, StockError> {
    let rows = from::query(CHANNEL, "SELECT on_hand FROM stock WHERE product_id = ?1", &[product_id.into()])
        .map_err(StockError::Store)?;
    Ok(rows.value(0, "on_hand").unwrap_or(0))
}

export!(Component);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_quantity_is_refused() {
        assert!(matches!(check_quantity(0), Err(StockError::InvalidQuantity(0))));
        assert!(check_quantity(1).is_ok());
    }
}
