//! Example service `products`: adds products to the catalogue and lists them.

sluice_guest::generate!("acme:products/products");

use exports::acme::products::api::{Guest, Product, ProductError};
use sluice_guest::{from, row, to};

const CHANNEL: &str = "main";
const MAX_NAME: usize = 100;

struct Component;

impl Guest for Component {
    fn add(name: String, price_cents: i64) -> Result<(), ProductError> {
        let name = check_product(&name, price_cents)?;
        let taken = from::query(CHANNEL, "SELECT 1 FROM products WHERE name = ?1", &[name.into()])
            .map_err(ProductError::Store)?;
        if !taken.is_empty() {
            return Err(ProductError::DuplicateName(name.to_string()));
        }
        to::insert(CHANNEL, "products", &row(&[("name", name.into()), ("price_cents", price_cents.into())]))
            .map_err(ProductError::Store)?;
        Ok(())
    }

    fn list() -> Result<Vec<Product>, ProductError> {
        let rows = from::query(CHANNEL, "SELECT id, name, price_cents FROM products ORDER BY id", &[])
            .map_err(ProductError::Store)?;
        Ok(rows
            .iter()
            .map(|r| Product {
                id: r.get("id").unwrap_or_default(),
                name: r.get("name").unwrap_or_default(),
                price_cents: r.get("price_cents").unwrap_or_default(),
            })
            .collect())
    }
}

/// The checks that need no database; returns the trimmed name.
fn check_product(name: &str, price_cents: i64) -> Result<&str, ProductError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(ProductError::InvalidName(name.to_string()));
    }
    if price_cents <= 0 {
        return Err(ProductError::InvalidPrice(price_cents));
    }
    Ok(name)
}

export!(Component);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_name_and_price() {
        assert!(matches!(check_product("", 1), Err(ProductError::InvalidName(_))));
        assert!(matches!(check_product(&"x".repeat(101), 1), Err(ProductError::InvalidName(_))));
        assert!(matches!(check_product("widget", 0), Err(ProductError::InvalidPrice(0))));
        assert_eq!(check_product("  widget ", 250).ok(), Some("widget"));
    }
}
