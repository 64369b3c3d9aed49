//! Test service `probe`: does exactly what a test asks through `from` and
//! `to`, so the host's queue, save and rollback can be driven precisely.

wit_bindgen::generate!({
    path: ["../../wit", "wit"],
    world: "test:probe/probe",
    with: {
        "sluice:service/types@0.1.0": sluice_guest::types,
        "sluice:service/from@0.1.0": sluice_guest::from,
        "sluice:service/to@0.1.0": sluice_guest::to,
    },
});

use std::sync::atomic::{AtomicU32, Ordering};

use exports::test::probe::api::{Guest, Sample};
use sluice_guest::{
    from, to,
    types::{Error, Row, Rows, Value},
};

/// Calls of `counter` in this instance; a new instance starts at zero.
static CALLS: AtomicU32 = AtomicU32::new(0);

struct Component;

impl Guest for Component {
    fn execute_all(channel: String, statements: Vec<String>) -> Result<Vec<u64>, Error> {
        statements
            .iter()
            .map(|sql| to::execute(&channel, sql, &[]))
            .collect()
    }

    fn insert(
        channel: String,
        table: String,
        columns: Vec<String>,
        values: Vec<Value>,
    ) -> Result<u64, Error> {
        to::insert(&channel, &table, &Row { columns, values })
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
}

export!(Component);
