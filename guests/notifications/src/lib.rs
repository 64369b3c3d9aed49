//! Example service `notifications`, run by messages: for each
//! `orders.placed` message it queues a webhook (`POST /hooks/orders` through
//! the `webhooks` http-out channel) and writes a receipt file
//! (`order-ID.json` in the `receipts` files channel). Both are commands: the
//! host sends the webhook and renames the file into place only if the scope
//! saves, and saves each message once.

sluice_guest::generate!("acme:notifications/notifications");

use exports::sluice::service::handler::Guest;
use exports::sluice::service::lifecycle;
use sluice_guest::to;
use sluice_guest::types::{Message, Outcome, Refusal, Request};

struct Component;

impl Guest for Component {
    fn handle(message: Message) -> Result<(), Refusal> {
        let order = order_id(&message)?;
        let request = Request {
            method: "POST".into(),
            url: "/hooks/orders".into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("sluice-message-id".into(), message.id.clone()),
            ],
            body: message.payload.clone(),
        };
        to::send("webhooks", &request).map_err(|e| refusal("webhook", &format!("{e:?}")))?;
        to::set("receipts", &format!("order-{order}.json"), &message.payload)
            .map_err(|e| refusal("receipt", &format!("{e:?}")))?;
        Ok(())
    }
}

impl lifecycle::Guest for Component {
    fn init() {}

    fn on_save(_: Vec<(u64, Outcome)>) -> Result<(), Refusal> {
        Ok(())
    }

    fn on_finally() {}

    fn dispose() {}
}

/// The order's id from the message's `order-id` header: digits only, so it
/// makes a safe file name.
fn order_id(message: &Message) -> Result<String, Refusal> {
    let id = message
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("order-id"))
        .map(|(_, value)| value.clone())
        .ok_or_else(|| refusal("no-order-id", "the message has no order-id header"))?;
    if id.is_empty() || id.len() > 19 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refusal("bad-order-id", &format!("order-id {id:?} is not a number")));
    }
    Ok(id)
}

fn refusal(code: &str, message: &str) -> Refusal {
    Refusal { code: code.into(), message: message.into() }
}

export!(Component);

#[cfg(test)]
mod tests {
    use super::*;

    fn message(headers: &[(&str, &str)]) -> Message {
        Message {
            id: "m1".into(),
            subject: "orders.placed".into(),
            payload: b"{}".to_vec(),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            delivery: 1,
        }
    }

    #[test]
    fn the_order_id_must_be_digits() {
        assert_eq!(order_id(&message(&[("Order-Id", "42")])).map_err(|r| r.code), Ok("42".to_string()));
        assert!(order_id(&message(&[("order-id", "../x")])).is_err());
        assert!(order_id(&message(&[])).is_err());
    }
}
