//! Example service `payments`: a client of an external payments API.
//!
//! - `charge` reads the API's fee for an amount at call time
//!   (`from.fetch` on the `rates` http channel), records a `pending`
//!   payment in `main`, and queues the charge (`to.send` on the
//!   `payments-api` http-out channel), asking for the answer in `charged`
//!   (`to.reply-to`). Nothing is sent unless the scope saves; the host
//!   sends it after the commit, with an `Idempotency-Key` and the API key,
//!   which this service never holds.
//! - `charged` runs in a scope of its own once the API has answered (or
//!   the request went dead), and records the charge's id or why it was
//!   declined. Its save is exactly once per charge, across hosts.

sluice_guest::generate!("acme:payments/payments");

use exports::acme::payments::api::{Guest, Payment};
use sluice_guest::types::{Refusal, Reply, Request, Row, Value};
use sluice_guest::{from, to};

struct Component;

impl Guest for Component {
    fn charge(order_id: u64, amount_cents: u64) -> Result<Payment, Refusal> {
        if amount_cents == 0 {
            return Err(refusal("bad-amount", "the amount is zero"));
        }
        if Self::find(order_id).is_some() {
            return Err(refusal("already-charged", &format!("order {order_id} has a payment already")));
        }
        let fee_cents = fee(amount_cents)?;
        let payment =
            Payment { order_id, amount_cents, fee_cents, state: "pending".into(), charge_id: None, failure: None };
        let row = Row {
            columns: vec!["order_id".into(), "amount_cents".into(), "fee_cents".into(), "state".into()],
            values: vec![
                integer(order_id)?,
                integer(amount_cents)?,
                integer(fee_cents)?,
                Value::Text("pending".into()),
            ],
        };
        to::insert("main", "payments", &row).map_err(|e| refusal("store", &format!("{e:?}")))?;
        let body = serde_json::json!({ "order": order_id, "amount_cents": amount_cents + fee_cents });
        let request = Request {
            method: "POST".into(),
            url: "/charges".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        };
        let ticket = to::send("payments-api", &request).map_err(|e| refusal("send", &format!("{e:?}")))?;
        // The tag brings the order back with the answer.
        to::reply_to(ticket, "charged", &order_id.to_string()).map_err(|e| refusal("reply", &format!("{e:?}")))?;
        Ok(payment)
    }

    fn charged(reply: Reply) -> Result<(), Refusal> {
        let order_id: u64 = reply.tag.parse().map_err(|_| refusal("bad-tag", &format!("tag {:?}", reply.tag)))?;
        let (state, charge_id, failure) = outcome(&reply);
        let mut columns = vec!["state".to_string()];
        let mut values = vec![Value::Text(state.into())];
        if let Some(id) = charge_id {
            columns.push("charge_id".into());
            values.push(Value::Text(id));
        }
        if let Some(why) = failure {
            columns.push("failure".into());
            values.push(Value::Text(why));
        }
        let key = Row {
            columns: vec!["order_id".into(), "state".into()],
            values: vec![integer(order_id)?, Value::Text("pending".into())],
        };
        let ticket = to::update("main", "payments", &key, &Row { columns, values })
            .map_err(|e| refusal("store", &format!("{e:?}")))?;
        // Exactly the pending payment: a reply for an order that is not
        // pending any more changes nothing, and the save says so.
        to::expect(ticket, 1).map_err(|e| refusal("store", &format!("{e:?}")))
    }

    fn find(order_id: u64) -> Option<Payment> {
        let sql = "SELECT amount_cents, fee_cents, state, charge_id, failure FROM payments WHERE order_id = ?1";
        let rows = from::query("main", sql, &[integer(order_id).ok()?]).ok()?;
        let row = rows.values.first()?;
        let number = |v: &Value| match v {
            Value::Integer(i) => u64::try_from(*i).ok(),
            _ => None,
        };
        let text = |v: &Value| match v {
            Value::Text(t) => Some(t.clone()),
            _ => None,
        };
        Some(Payment {
            order_id,
            amount_cents: number(&row[0])?,
            fee_cents: number(&row[1])?,
            state: text(&row[2])?,
            charge_id: text(&row[3]),
            failure: text(&row[4]),
        })
    }
}

/// The API's fee on `amount_cents`: `GET /fees?amount=…` answers
/// `{"fee_cents": N}`.
fn fee(amount_cents: u64) -> Result<u64, Refusal> {
    let request = Request {
        method: "GET".into(),
        url: format!("/fees?amount={amount_cents}"),
        headers: Vec::new(),
        body: Vec::new(),
    };
    let answer = from::fetch("rates", &request).map_err(|e| refusal("rates", &format!("{e:?}")))?;
    if answer.status != 200 {
        return Err(refusal("rates", &format!("the fee quote answered {}", answer.status)));
    }
    let quote: serde_json::Value = serde_json::from_slice(&answer.body)
        .map_err(|e| refusal("rates", &format!("the fee quote is not JSON: {e}")))?;
    quote["fee_cents"].as_u64().ok_or_else(|| refusal("rates", "the fee quote has no fee_cents"))
}

/// What a reply means for the payment: `charged` with the API's id of the
/// charge, or `declined` with why.
fn outcome(reply: &Reply) -> (&'static str, Option<String>, Option<String>) {
    match (&reply.response, &reply.failure) {
        (Some(answer), None) if (200..300).contains(&answer.status) => {
            let id = serde_json::from_slice::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|body| body["id"].as_str().map(str::to_string));
            match id {
                Some(id) => ("charged", Some(id), None),
                None => ("declined", None, Some("the API's answer has no charge id".into())),
            }
        }
        (Some(answer), _) => {
            let said = String::from_utf8_lossy(&answer.body).chars().take(200).collect::<String>();
            ("declined", None, Some(format!("the API answered {}: {said}", answer.status)))
        }
        (None, failure) => ("declined", None, Some(failure.clone().unwrap_or_else(|| "no answer".into()))),
    }
}

fn integer(n: u64) -> Result<Value, Refusal> {
    i64::try_from(n).map(Value::Integer).map_err(|_| refusal("too-large", &format!("{n} is too large")))
}

fn refusal(code: &str, message: &str) -> Refusal {
    Refusal { code: code.into(), message: message.into() }
}

export!(Component);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::types::Response;

    fn reply(status: Option<u16>, body: &str, failure: Option<&str>) -> Reply {
        Reply {
            tag: "7".into(),
            id: "r1".into(),
            response: status.map(|status| Response { status, headers: Vec::new(), body: body.as_bytes().to_vec() }),
            failure: failure.map(str::to_string),
        }
    }

    #[test]
    fn replies_become_charged_or_declined() {
        assert_eq!(outcome(&reply(Some(200), r#"{"id":"ch_1"}"#, None)), ("charged", Some("ch_1".into()), None));
        let (state, id, why) =
            outcome(&reply(Some(402), r#"{"error":"card_declined"}"#, Some("the receiver answered 402")));
        assert_eq!((state, id), ("declined", None));
        assert!(why.is_some_and(|w| w.contains("402") && w.contains("card_declined")));
        let (state, _, why) = outcome(&reply(None, "", Some("connection refused")));
        assert_eq!((state, why.as_deref()), ("declined", Some("connection refused")));
        assert_eq!(outcome(&reply(Some(200), "{}", None)).0, "declined");
    }
}
