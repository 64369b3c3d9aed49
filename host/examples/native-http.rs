//! The baseline of the HTTP benchmarks (B5, B6): the work of the `bench`
//! service's `noop` and `read-insert`, written as plain axum handlers on
//! rusqlite, with no sandbox, no scope and no queue. `scripts/bench-http`
//! runs it beside `sluice serve` and `wasmtime serve`.
//!
//!   cargo run --release -p sluice-host --example native-http -- DB_FILE [ADDR]
//!
//! It prints `listening on http://ADDR` first, like `sluice serve`.

use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use rusqlite::Connection;
use serde_json::{Value, json};

type Db = Arc<Mutex<Connection>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or_else(|| anyhow::anyhow!("usage: native-http DB_FILE [ADDR]"))?;
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    // The settings of Sluice's SQLite channel: WAL, foreign keys, a busy timeout.
    let conn = Connection::open(&path)?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.pragma_update(None, "foreign_keys", "on")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute("CREATE TABLE IF NOT EXISTS blobs (data BLOB)", [])?;
    let db: Db = Arc::new(Mutex::new(conn));
    let app = Router::new().route("/noop", post(noop)).route("/read-insert", post(read_insert)).with_state(db);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn noop(body: axum::body::Bytes) -> Json<Value> {
    // Parse the (empty) argument object, as sluice serve does.
    let _: Value = serde_json::from_slice(if body.is_empty() { b"{}" } else { &body }).unwrap_or(Value::Null);
    Json(json!({ "result": null }))
}

async fn read_insert(State(db): State<Db>) -> Result<Json<Value>, (StatusCode, String)> {
    let last = tokio::task::spawn_blocking(move || -> rusqlite::Result<i64> {
        let mut conn = db.lock().unwrap_or_else(PoisonError::into_inner);
        let tx = conn.transaction()?;
        let last: i64 = tx.query_row("SELECT coalesce(max(rowid), 0) AS last FROM blobs", [], |r| r.get(0))?;
        tx.execute("INSERT INTO blobs (data) VALUES (?1)", [vec![7u8]])?;
        tx.commit()?;
        Ok(last)
    })
    .await
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(json!({ "result": { "ok": last } })))
}
