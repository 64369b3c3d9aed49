//! Test service `probe`: does exactly what a test asks through `from` and
//! `to`, so the host's queue, save and rollback can be driven precisely.

sluice_guest::generate!("test:probe/probe");

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};

use exports::sluice::service::lifecycle;
use exports::test::probe::api::{Guest, Sample};
use sluice_guest::{
    from, to,
    types::{Entry, Error, Outcome, Refusal, Row, Rows, Value},
};

thread_local! {
    /// What the hooks do; see `set-mode` in the WIT.
    static MODE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Save rounds this instance has seen in `on-save`.
static ROUNDS: AtomicU32 = AtomicU32::new(0);

/// Calls of `counter` in this instance; a new instance starts at zero.
static CALLS: AtomicU32 = AtomicU32::new(0);

struct Component;

impl Guest for Component {
    fn execute_all(channel: String, statements: Vec<String>) -> Result<Vec<u64>, Error> {
        statements.iter().map(|sql| to::execute(&channel, sql, &[])).collect()
    }

    fn insert(channel: String, table: String, columns: Vec<String>, values: Vec<Value>) -> Result<u64, Error> {
        to::insert(&channel, &table, &Row { columns, values })
    }

    fn delete(channel: String, table: String, columns: Vec<String>, values: Vec<Value>) -> Result<u64, Error> {
        to::delete(&channel, &table, &Row { columns, values })
    }

    fn tick(at: u64) -> Result<u64, Error> {
        let at = Value::Integer(i64::try_from(at).unwrap_or(i64::MAX));
        to::insert("main", "ticks", &Row { columns: vec!["at_ms".into()], values: vec![at] })
    }

    fn query(channel: String, sql: String, params: Vec<Value>) -> Result<Rows, Error> {
        from::query(&channel, &sql, &params)
    }

    fn echo(input: Sample) -> Sample {
        input
    }

    fn add(a: i32, b: i32) -> i32 {
        a.wrapping_add(b)
    }

    fn counter() -> u32 {
        CALLS.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn fail(message: String) {
        panic!("{message}");
    }

    fn sleep(ms: u32) -> u32 {
        std::thread::sleep(std::time::Duration::from_millis(u64::from(ms)));
        ms
    }

    fn note(text: String) {
        println!("call note {text}");
    }

    fn set_mode(mode: String) {
        MODE.with(|m| *m.borrow_mut() = mode);
    }

    fn expect(ticket: u64, rows: u64) -> Result<(), Error> {
        to::expect(ticket, rows)
    }

    fn kv_get(channel: String, key: String) -> Result<Option<Vec<u8>>, Error> {
        from::get(&channel, &key)
    }

    fn kv_list(channel: String, prefix: String, limit: u32) -> Result<Vec<Entry>, Error> {
        from::list(&channel, &prefix, limit)
    }

    fn kv_set(channel: String, key: String, value: Vec<u8>) -> Result<u64, Error> {
        to::set(&channel, &key, &value)
    }

    fn publish(channel: String, subject: String, payload: Vec<u8>) -> Result<u64, Error> {
        to::publish(&channel, &subject, &payload, &[])
    }

    fn send(channel: String, method: String, url: String, body: Vec<u8>) -> Result<u64, Error> {
        to::send(&channel, &sluice_guest::types::Request { method, url, headers: Vec::new(), body })
    }

    fn send_replied(channel: String, url: String, body: Vec<u8>, tag: String) -> Result<u64, Error> {
        let request = sluice_guest::types::Request { method: "POST".into(), url, headers: Vec::new(), body };
        let ticket = to::send(&channel, &request)?;
        to::reply_to(ticket, "replied", &tag)?;
        Ok(ticket)
    }

    fn replied(reply: sluice_guest::types::Reply) -> Result<(), Refusal> {
        if reply.tag == "refuse" {
            return Err(Refusal { code: "refused".into(), message: "this reply is refused".into() });
        }
        let (status, body) = match &reply.response {
            Some(r) => (Value::Integer(r.status.into()), Value::Text(String::from_utf8_lossy(&r.body).into_owned())),
            None => (Value::Null, Value::Null),
        };
        let failure = reply.failure.clone().map_or(Value::Null, Value::Text);
        let row = Row {
            columns: vec!["tag".into(), "request".into(), "status".into(), "body".into(), "failure".into()],
            values: vec![Value::Text(reply.tag), Value::Text(reply.id), status, body, failure],
        };
        to::insert("main", "replies", &row)
            .map(drop)
            .map_err(|e| Refusal { code: "insert".into(), message: format!("{e:?}") })
    }

    fn fetch(
        channel: String,
        method: String,
        path: String,
        headers: Vec<(String, String)>,
    ) -> Result<sluice_guest::types::Response, Error> {
        from::fetch(&channel, &sluice_guest::types::Request { method, url: path, headers, body: Vec::new() })
    }

    fn kv_remove(channel: String, key: String) -> Result<u64, Error> {
        to::remove(&channel, &key)
    }

    fn kv_swap(channel: String, key: String, expected: Option<Vec<u8>>, value: Option<Vec<u8>>) -> Result<u64, Error> {
        to::compare_and_swap(&channel, &key, expected.as_deref(), value.as_deref())
    }

    fn kv_increment(channel: String, key: String, by: i64) -> Result<u64, Error> {
        to::increment(&channel, &key, by)
    }

    fn refuse_save(name: String) -> Result<u64, Error> {
        Self::set_mode("refuse-on-save".into());
        to::insert(
            "main",
            "products",
            &Row { columns: vec!["name".into(), "price_cents".into()], values: vec![name.into(), 1i64.into()] },
        )
    }
}

impl lifecycle::Guest for Component {
    fn init() {
        println!("hook init");
    }

    fn on_save(outcomes: Vec<(u64, Outcome)>) -> Result<(), Refusal> {
        let round = ROUNDS.fetch_add(1, Ordering::Relaxed) + 1;
        let seen: Vec<String> = outcomes.iter().map(|(t, o)| format!("{t}:{o:?}")).collect();
        println!("hook on-save {}", seen.join(" "));
        let insert = |name: &str, price: i64| {
            to::execute(
                "main",
                "INSERT INTO products (name, price_cents) VALUES (?1, ?2)",
                &[name.into(), price.into()],
            )
        };
        match mode().as_str() {
            "requeue" => {
                insert(&format!("round-{round}"), 1).expect("requeue");
            }
            "fail-round-3" if round == 1 => {
                insert("from-round-1", 1).expect("queue");
            }
            "fail-round-3" if round == 2 => {
                insert("bad-from-round-2", -1).expect("queue");
            }
            "trap-on-save" => panic!("on-save refuses"),
            // Tries to queue more in on-save and carries on whatever the
            // host answers: a denial here must still stop the save.
            "ignore-denial-on-save" if round == 1 => {
                let _ = insert("sneaked-in-on-save", 1);
            }
            // A business rule broken by what the save did: the save is
            // refused with a value, not a trap.
            "refuse-on-save" => {
                return Err(Refusal { code: "probe-refused".into(), message: format!("round {round} is refused") });
            }
            _ => {}
        }
        Ok(())
    }

    fn on_finally() {
        println!("hook on-finally");
        try_late("on-finally");
    }

    fn dispose() {
        println!("hook dispose");
        try_late("dispose");
    }
}

fn mode() -> String {
    MODE.with(|m| m.borrow().clone())
}

/// In `queue-late` mode, tries to queue after the save and prints the answer.
fn try_late(hook: &str) {
    if mode() == "queue-late" {
        match to::execute("main", "DELETE FROM products", &[]) {
            Ok(ticket) => println!("{hook} queued ticket {ticket}"),
            Err(e) => println!("{hook} refused: {e:?}"),
        }
    }
}

impl exports::test::probe::own_error::Guest for Component {
    fn refuse(reason: String) -> Result<(), exports::test::probe::own_error::Error> {
        Err(exports::test::probe::own_error::Error::Refused(reason))
    }
}

export!(Component);
