//! A service's read on SQLite: rows streamed under its grant and deadline,
//! counted against its byte limit, and digested as they come, so that the
//! save can run the read again and compare ([`crate::channels::Reading`]).

use std::hash::{Hash as _, Hasher};

use rusqlite::types::ValueRef;

use super::{Pooled, authorized, check_param_count, from_sql, ran};
use crate::bindings::{Rows, Value};
use crate::channels::{Caller, ChannelError, Reading};

/// A service's read: prepared under its grant, rows streamed until they
/// pass `max_bytes`, interrupted at the caller's deadline, and digested as
/// they come. `keep` false digests without keeping the rows (a read run
/// again at save).
pub(super) fn read(
    pooled: &Pooled,
    sql: &str,
    params: &[Value],
    caller: &Caller,
    max_bytes: usize,
    keep: bool,
) -> Result<Reading, ChannelError> {
    let (mut stmt, entered) = authorized(pooled, sql, caller, false)?;
    // No string or blob longer than the read may return is made or loaded
    // while it runs: SQLite refuses it before it holds the bytes.
    let _bounded = ValueLimit::set(pooled, max_bytes);
    if !stmt.readonly() {
        return Err(ChannelError::Invalid(
            "a read must not write; queue writes with `to` so they apply at save".into(),
        ));
    }
    check_param_count(stmt.parameter_count(), params.len())?;
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let width = columns.len();
    let mut digest = crate::channels::digester();
    columns.hash(&mut digest);
    let mut bytes = columns.iter().map(String::len).sum::<usize>();
    let ran = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::TooBig) => ChannelError::Invalid(format!(
            "string or blob too big: a read makes or loads no value longer than it may return \
             ({} bytes, limits.result-bytes)",
            max_bytes.min(super::MAX_VALUE_BYTES as usize)
        )),
        _ => ran(e, &entered),
    };
    let mut rows = stmt.query(rusqlite::params_from_iter(params)).map_err(ran)?;
    let mut values = Vec::new();
    while let Some(row) = rows.next().map_err(ran)? {
        let mut out = Vec::with_capacity(if keep { width } else { 0 });
        // Each row counts at least a word, so that rows of nothing add up.
        bytes += 8;
        digest.write_u8(ROW);
        for i in 0..width {
            let value = row.get_ref(i).map_err(ran)?;
            bytes += digest_value(&mut digest, value);
            if keep {
                out.push(from_sql(value));
            }
        }
        if bytes > max_bytes {
            return Err(ChannelError::TooLarge { bytes });
        }
        if keep {
            values.push(out);
        }
    }
    drop(rows);
    let volatility = entered.volatility();
    let volatile = volatility.random || (volatility.clock && reads_the_clock(sql, params));
    Ok(Reading {
        rows: Rows { columns, values },
        digest: digest.finish(),
        tables: entered.read(),
        volatile,
        recheck: None,
    })
}

use crate::channels::DIGEST_ROW as ROW;

/// The longest string or blob SQLite makes or loads on a connection while
/// a read runs there: what the read may return (within the channel's own
/// cap, [`super::MAX_VALUE_BYTES`]), restored when it is dropped.
struct ValueLimit<'c>(&'c Pooled);

impl<'c> ValueLimit<'c> {
    fn set(pooled: &'c Pooled, max_bytes: usize) -> ValueLimit<'c> {
        let limit = i32::try_from(max_bytes).unwrap_or(i32::MAX).clamp(1, super::MAX_VALUE_BYTES);
        let _ = pooled.conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH, limit);
        ValueLimit(pooled)
    }
}

impl Drop for ValueLimit<'_> {
    fn drop(&mut self) {
        let _ = self.0.conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH, super::MAX_VALUE_BYTES);
    }
}

/// Adds one value to a digest, tagged with its type as
/// [`crate::channels::digest_value`] does (here without making a `Value`
/// of each), and returns its size.
fn digest_value(digest: &mut impl Hasher, value: ValueRef<'_>) -> usize {
    match value {
        ValueRef::Null => {
            digest.write_u8(0);
            1
        }
        ValueRef::Integer(i) => {
            digest.write_u8(1);
            digest.write_i64(i);
            8
        }
        ValueRef::Real(f) => {
            digest.write_u8(2);
            digest.write_u64(f.to_bits());
            8
        }
        ValueRef::Text(t) => {
            digest.write_u8(3);
            digest.write_usize(t.len());
            digest.write(t);
            t.len()
        }
        ValueRef::Blob(b) => {
            digest.write_u8(4);
            digest.write_usize(b.len());
            digest.write(b);
            b.len()
        }
    }
}

/// Whether a statement that calls a date or time function asks for the
/// current time: a `'now'` string literal or parameter (as SQLite reads it,
/// without regard to case or surrounding spaces), or `CURRENT_TIME`,
/// `CURRENT_DATE`, `CURRENT_TIMESTAMP`.
fn reads_the_clock(sql: &str, params: &[Value]) -> bool {
    let now = |text: &str| text.trim().eq_ignore_ascii_case("now");
    // Every other piece between single quotes is a string literal's text.
    sql.split('\'').skip(1).step_by(2).any(now)
        || sql.to_ascii_lowercase().contains("current_")
        || params.iter().any(|p| matches!(p, Value::Text(t) if now(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_read_with_now_or_current() {
        assert!(reads_the_clock("SELECT datetime('now')", &[]));
        assert!(reads_the_clock("SELECT date(' NOW ', '+1 day')", &[]));
        assert!(reads_the_clock("SELECT CURRENT_TIMESTAMP", &[]));
        assert!(reads_the_clock("SELECT date(?1)", &[Value::Text("now".into())]));
        assert!(!reads_the_clock("SELECT strftime('%Y', created_at), known FROM t", &[]));
        assert!(!reads_the_clock("SELECT date(?1)", &[Value::Text("2026-01-01".into())]));
    }
}
