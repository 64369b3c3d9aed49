//! Test service `intruder`: imports the inventory service's interface but has
//! no manifest granting the call, so discovery must refuse to load it.

sluice_guest::generate!("test:intruder/intruder");

use acme::inventory::stock::{self, StockError};
use exports::test::intruder::peek::Guest;

struct Component;

impl Guest for Component {
    fn level(product_id: i64) -> Result<i64, StockError> {
        stock::level(product_id)
    }
}

export!(Component);
