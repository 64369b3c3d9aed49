//! The `sql` kind's commands: `insert`, `update` and `delete`, whose
//! statements the host builds from a table and rows, and `execute`, a
//! statement the service wrote.

use serde::Serialize;

use crate::bindings::{Row, Value};
use crate::channels::ops::{Family, Kind, clip, value_json, value_size};

/// A command of a `sql` channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SqlOp {
    /// Insert one row.
    Insert {
        /// The table.
        table: String,
        /// The row's columns and values.
        #[serde(serialize_with = "row_json")]
        row: Row,
    },
    /// Set `changes` on the rows that match `key`.
    Update {
        /// The table.
        table: String,
        /// Columns that must all equal their values.
        #[serde(serialize_with = "row_json")]
        key: Row,
        /// Columns to set.
        #[serde(serialize_with = "row_json")]
        changes: Row,
    },
    /// Delete the rows that match `key`.
    Delete {
        /// The table.
        table: String,
        /// Columns that must all equal their values.
        #[serde(serialize_with = "row_json")]
        key: Row,
    },
    /// Run one SQL statement as written.
    Execute {
        /// The statement.
        sql: String,
        /// Values bound to its parameters, in order.
        #[serde(serialize_with = "values_json")]
        params: Vec<Value>,
    },
}

/// How much of a statement's text a description shows.
const DESCRIBED_SQL: usize = 200;

impl Family for SqlOp {
    fn kind(&self) -> Kind {
        super::KIND
    }

    fn check(&self) -> Result<(), String> {
        match self {
            SqlOp::Insert { table, row } => {
                check_table(table)?;
                check_row("row", row)
            }
            SqlOp::Update { table, key, changes } => {
                check_table(table)?;
                check_row("key", key)?;
                check_row("changes", changes)
            }
            SqlOp::Delete { table, key } => {
                check_table(table)?;
                check_row("key", key)
            }
            SqlOp::Execute { sql, .. } => {
                if sql.trim().is_empty() {
                    return Err("sql is empty".into());
                }
                Ok(())
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            SqlOp::Insert { table, row } => format!("insert into {table} ({})", row.columns.join(", ")),
            SqlOp::Update { table, key, changes } => {
                format!("update {table} set {} where {}", changes.columns.join(", "), key.columns.join(", "))
            }
            SqlOp::Delete { table, key } => format!("delete from {table} where {}", key.columns.join(", ")),
            SqlOp::Execute { sql, params } => {
                let mut sql: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
                clip(&mut sql, DESCRIBED_SQL);
                format!("execute `{sql}` with {} param(s)", params.len())
            }
        }
    }

    fn size(&self) -> usize {
        let row =
            |r: &Row| r.columns.iter().map(String::len).sum::<usize>() + r.values.iter().map(value_size).sum::<usize>();
        match self {
            SqlOp::Insert { table, row: r } => table.len() + row(r),
            SqlOp::Update { table, key, changes } => table.len() + row(key) + row(changes),
            SqlOp::Delete { table, key } => table.len() + row(key),
            SqlOp::Execute { sql, params } => sql.len() + params.iter().map(value_size).sum::<usize>(),
        }
    }
}

/// A row as a JSON object from column to value, in column order.
fn row_json<S: serde::Serializer>(row: &Row, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap as _;
    let mut map = s.serialize_map(Some(row.columns.len()))?;
    for (column, value) in row.columns.iter().zip(&row.values) {
        map.serialize_entry(column, &value_json(value))?;
    }
    map.end()
}

fn values_json<S: serde::Serializer>(values: &[Value], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(values.iter().map(value_json))
}

fn check_table(table: &str) -> Result<(), String> {
    if table.trim().is_empty() {
        return Err("table name is empty".into());
    }
    Ok(())
}

fn check_row(what: &str, row: &Row) -> Result<(), String> {
    if row.columns.len() != row.values.len() {
        return Err(format!("{what} has {} column(s) but {} value(s)", row.columns.len(), row.values.len()));
    }
    if row.columns.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if let Some(c) = row.columns.iter().find(|c| c.trim().is_empty()) {
        return Err(format!("{what} has an empty column name {c:?}"));
    }
    // Rows are short: comparing each column with those before it costs
    // less than hashing them, up to a few dozen columns.
    let dup = if row.columns.len() <= 32 {
        row.columns.iter().enumerate().find(|(i, c)| row.columns[..*i].contains(c)).map(|(_, c)| c)
    } else {
        let mut seen = std::collections::HashSet::new();
        row.columns.iter().find(|c| !seen.insert(c.as_str()))
    };
    if let Some(dup) = dup {
        return Err(format!("{what} names column {dup:?} twice"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cols: &[&str], n: usize) -> Row {
        Row { columns: cols.iter().map(|c| c.to_string()).collect(), values: vec![Value::Null; n] }
    }

    #[test]
    fn check_refuses_malformed_rows() {
        let insert = |r| SqlOp::Insert { table: "t".into(), row: r };
        assert!(insert(row(&["a", "b"], 2)).check().is_ok());
        assert_eq!(insert(row(&["a"], 2)).check(), Err("row has 1 column(s) but 2 value(s)".into()));
        assert_eq!(insert(row(&[], 0)).check(), Err("row is empty".into()));
        assert_eq!(insert(row(&["a", "a"], 2)).check(), Err("row names column \"a\" twice".into()));
        let no_table = SqlOp::Delete { table: " ".into(), key: row(&["id"], 1) };
        assert_eq!(no_table.check(), Err("table name is empty".into()));
        let no_key = SqlOp::Update { table: "t".into(), key: row(&[], 0), changes: row(&["a"], 1) };
        assert_eq!(no_key.check(), Err("key is empty".into()));
        let no_sql = SqlOp::Execute { sql: "  ".into(), params: vec![] };
        assert_eq!(no_sql.check(), Err("sql is empty".into()));
    }
}
