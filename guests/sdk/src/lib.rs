//! Rust bindings for the `sluice:service` WIT package, generated once here so
//! every Rust service shares the same `Value`, `Row` and `Error` types, plus
//! the small helpers that make reading rows and building commands short.
//!
//! A service generates its own world with [`generate!`], which points the
//! `sluice:service` interfaces at these modules:
//!
//! ```ignore
//! sluice_guest::generate!("acme:orders/orders", ["../../wit", "../inventory/wit", "wit"]);
//! ```

wit_bindgen::generate!({
    path: "../../wit",
    world: "imports",
    pub_export_macro: true,
});

pub use sluice::service::{from, to, types};

/// Generates a service's bindings for `world`, reading WIT from `paths`
/// (relative to the service crate; the `sluice:service` package first, then
/// packages it depends on, then its own), with the `sluice:service` types
/// and imports shared from this crate so helpers work on them. The service
/// must depend on this crate under its own name, `sluice-guest`.
#[macro_export]
macro_rules! generate {
    ($world:literal, [$($path:literal),+ $(,)?]) => {
        wit_bindgen::generate!({
            path: [$($path),+],
            world: $world,
            with: {
                "sluice:service/types@0.1.0": ::sluice_guest::types,
                "sluice:service/from@0.1.0": ::sluice_guest::from,
                "sluice:service/to@0.1.0": ::sluice_guest::to,
            },
            generate_all,
        });
    };
}
use types::{Row, Rows, Value};

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Builds a [`Row`] from `(column, value)` pairs:
/// `row(&[("name", "widget".into()), ("price_cents", 250.into())])`.
pub fn row(pairs: &[(&str, Value)]) -> Row {
    Row {
        columns: pairs.iter().map(|(c, _)| c.to_string()).collect(),
        values: pairs.iter().map(|(_, v)| v.clone()).collect(),
    }
}

impl Rows {
    /// The value in `column` of row `index`, or `None` when either is missing.
    pub fn get(&self, index: usize, column: &str) -> Option<&Value> {
        let col = self.columns.iter().position(|c| c == column)?;
        self.values.get(index)?.get(col)
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when the query returned no rows.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl Value {
    /// The integer inside, if this is an `integer`.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Value::Integer(v) => Some(*v),
            _ => None,
        }
    }

    /// The text inside, if this is a `text`.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(v) => Some(v),
            _ => None,
        }
    }
}
