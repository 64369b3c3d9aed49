//! Benchmark service `bench`: loops of `from` and `to` calls with payloads
//! of a chosen size, so the host-call cost can be measured from inside a
//! guest (B2 in `host/benches`).

sluice_guest::generate!("test:bench/bench");

use exports::test::bench::loops::Guest;
use sluice_guest::{
    from, row, to,
    types::{Error, Row, Value},
};

struct Component;

impl Guest for Component {
    fn noop() {}

    fn enqueue(n: u32, bytes: u32) -> Result<u32, Error> {
        let row = Row { columns: vec!["data".into()], values: vec![Value::Blob(vec![7; bytes as usize])] };
        for _ in 0..n {
            to::insert("main", "blobs", &row)?;
        }
        Ok(n)
    }

    fn execute(n: u32, sql: String) -> Result<u32, Error> {
        for _ in 0..n {
            to::execute("main", &sql, &[])?;
        }
        Ok(n)
    }

    fn echo(n: u32, bytes: u32) -> Result<u32, Error> {
        let params = [Value::Blob(vec![7; bytes as usize])];
        for _ in 0..n {
            let rows = from::query("main", "SELECT ?1 AS data", &params)?;
            std::hint::black_box(rows);
        }
        Ok(n)
    }

    fn read_insert() -> Result<i64, Error> {
        let rows = from::query("main", "SELECT coalesce(max(rowid), 0) AS last FROM blobs", &[])?;
        let last = rows.get(0, "last").and_then(Value::as_integer).unwrap_or(0);
        to::insert("main", "blobs", &row(&[("data", Value::Blob(vec![7]))]))?;
        Ok(last)
    }

    fn read_rows(n: i64) -> Result<u32, Error> {
        let rows = from::query("main", "SELECT rowid, data FROM blobs WHERE rowid <= ?1", &[Value::Integer(n)])?;
        to::insert("main", "blobs", &row(&[("data", Value::Blob(vec![7]))]))?;
        Ok(u32::try_from(rows.len()).unwrap_or(u32::MAX))
    }

    fn measure(text: String) -> u32 {
        u32::try_from(text.len()).unwrap_or(u32::MAX)
    }
}

export!(Component);
