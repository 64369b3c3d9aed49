//! Example service `cart`: a shopping cart per customer in the `kv`
//! channel, one key per line (`cart/CUSTOMER/PRODUCT-ID`) holding the
//! quantity as decimal text.

sluice_guest::generate!("acme:cart/cart");

use exports::acme::cart::api::{CartError, Guest, Line};
use sluice_guest::{from, to};

const CHANNEL: &str = "kv";
const MAX_CUSTOMER: usize = 100;
const MAX_QUANTITY: u32 = 1000;
/// The most lines a cart shows or clears.
const MAX_LINES: u32 = 1000;

struct Component;

impl Guest for Component {
    fn add(customer: String, product_id: i64, quantity: u32) -> Result<(), CartError> {
        let prefix = cart_prefix(&customer)?;
        if quantity == 0 || quantity > MAX_QUANTITY {
            return Err(CartError::InvalidQuantity(quantity));
        }
        to::increment(CHANNEL, &format!("{prefix}{product_id}"), quantity.into()).map_err(CartError::Store)?;
        Ok(())
    }

    fn show(customer: String) -> Result<Vec<Line>, CartError> {
        let prefix = cart_prefix(&customer)?;
        let entries = from::list(CHANNEL, &prefix, MAX_LINES).map_err(CartError::Store)?;
        Ok(entries.iter().filter_map(|e| line(&e.key[prefix.len()..], &e.value)).collect())
    }

    fn clear(customer: String) -> Result<u32, CartError> {
        let prefix = cart_prefix(&customer)?;
        let entries = from::list(CHANNEL, &prefix, MAX_LINES).map_err(CartError::Store)?;
        for entry in &entries {
            to::remove(CHANNEL, &entry.key).map_err(CartError::Store)?;
        }
        Ok(entries.len() as u32)
    }
}

/// `cart/CUSTOMER/` for a valid customer.
fn cart_prefix(customer: &str) -> Result<String, CartError> {
    let customer = customer.trim();
    if customer.is_empty() || customer.chars().count() > MAX_CUSTOMER || customer.contains('/') {
        return Err(CartError::InvalidCustomer(customer.to_string()));
    }
    Ok(format!("cart/{customer}/"))
}

/// A line from the rest of its key (the product id) and its value (the
/// quantity as decimal text); `None` for anything else under the prefix.
fn line(product: &str, value: &[u8]) -> Option<Line> {
    let product_id = product.parse().ok()?;
    let quantity = std::str::from_utf8(value).ok()?.parse().ok()?;
    Some(Line { product_id, quantity })
}

export!(Component);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customers_and_lines_are_checked() {
        assert!(matches!(cart_prefix("a/b"), Err(CartError::InvalidCustomer(_))));
        assert!(matches!(cart_prefix(" "), Err(CartError::InvalidCustomer(_))));
        assert_eq!(cart_prefix(" ann ").ok().as_deref(), Some("cart/ann/"));
        assert_eq!(line("7", b"3").map(|l| (l.product_id, l.quantity)), Some((7, 3)));
        assert!(line("x", b"3").is_none());
        assert!(line("7", b"three").is_none());
    }
}
