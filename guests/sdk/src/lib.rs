//! Rust bindings for the `sluice:service` WIT package, generated once here so
//! every Rust service shares the same `Value`, `Row` and `Error` types, plus
//! the small helpers that make reading rows and building commands short.
//!
//! A service generates its own world with [`generate!`], which points the
//! `sluice:service` interfaces at these modules:
//!
//! ```ignore
//! // wit/orders.wit, with wit/deps/sluice-service/ and wit/deps/acme-inventory/
//! sluice_guest::generate!("acme:orders/orders");
//! ```

wit_bindgen::generate!({
    path: "../../wit",
    world: "imports",
    pub_export_macro: true,
    // `reply` is a parameter of a service's own handler, never of an
    // import: generated all the same, for handlers to name.
    generate_unused_types: true,
});

pub use sluice::service::{from, to, types};

pub mod time;

/// The wit-bindgen this crate was built with, so a service depends on
/// `sluice-guest` alone: [`generate!`] and the code it writes use this.
pub use wit_bindgen;

/// Generates a service's bindings for `world` from the WIT in the service
/// crate's `wit/` directory, laid out the standard way: the service's own
/// package at the top and the packages it uses under `wit/deps/` (the
/// `sluice:service` package, and the packages of services it calls). A
/// second argument names another directory. The `sluice:service` types
/// and imports are shared from this crate, so helpers work on them.
///
/// The service depends on this crate under its own name, `sluice-guest`,
/// and on nothing else: the macro and its runtime are this crate's
/// re-export of wit-bindgen.
#[macro_export]
macro_rules! generate {
    ($world:literal) => {
        $crate::generate!($world, "wit");
    };
    ($world:literal, $path:literal) => {
        $crate::wit_bindgen::generate!({
            path: $path,
            world: $world,
            runtime_path: "::sluice_guest::wit_bindgen::rt",
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

/// Integer conversions: every integer type that fits an `i64` becomes an
/// `integer` (`quantity.into()` for a `u32`).
macro_rules! integer_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::Integer(i64::from(v))
            }
        }
    )*};
}
integer_from!(i8, i16, i32, i64, u8, u16, u32);

impl From<bool> for Value {
    /// `true` is `1`, `false` is `0`, as SQLite stores booleans.
    fn from(v: bool) -> Self {
        Value::Integer(i64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Real(f64::from(v))
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

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Blob(v.to_vec())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// A Rust value read out of a [`Value`]: `None` when the value has another
/// type (or, for integers, does not fit).
pub trait FromValue: Sized {
    /// The value as `Self`, if it is one.
    fn from_value(value: &Value) -> Option<Self>;
}

macro_rules! integer_out {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: &Value) -> Option<Self> {
                match value {
                    Value::Integer(i) => <$t>::try_from(*i).ok(),
                    _ => None,
                }
            }
        }
    )*};
}
integer_out!(i8, i16, i32, i64, u8, u16, u32, u64);

impl FromValue for bool {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Integer(i) => Some(*i != 0),
            _ => None,
        }
    }
}

impl FromValue for f64 {
    /// A `real`, or an `integer` widened.
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Real(r) => Some(*r),
            #[expect(clippy::cast_precision_loss, reason = "SQL numbers may be read as floats")]
            Value::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Text(t) => Some(t.clone()),
            _ => None,
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Blob(b) => Some(b.clone()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    /// `Some(None)` for `null`, `Some(Some(v))` for a value of type `T`.
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            other => T::from_value(other).map(Some),
        }
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

    /// The value in `column` of row `index` as a `T`, or `None` when either
    /// is missing or the value is not a `T`:
    ///
    /// ```
    /// use sluice_guest::types::{Rows, Value};
    /// let rows = Rows { columns: vec!["id".into()], values: vec![vec![Value::Integer(7)]] };
    /// assert_eq!(rows.value::<i64>(0, "id"), Some(7));
    /// assert_eq!(rows.value::<String>(0, "id"), None);
    /// ```
    pub fn value<T: FromValue>(&self, index: usize, column: &str) -> Option<T> {
        self.get(index, column).and_then(T::from_value)
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when the query returned no rows.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Every row in order, with typed access by column name; the names are
    /// looked up once for all rows:
    ///
    /// ```
    /// use sluice_guest::types::{Rows, Value};
    /// let rows = Rows {
    ///     columns: vec!["id".into(), "name".into()],
    ///     values: vec![
    ///         vec![Value::Integer(1), Value::Text("lamp".into())],
    ///         vec![Value::Integer(2), Value::Null],
    ///     ],
    /// };
    /// let names: Vec<(i64, Option<String>)> =
    ///     rows.iter().map(|r| (r.get("id").unwrap_or(0), r.get("name").flatten())).collect();
    /// assert_eq!(names, [(1, Some("lamp".to_string())), (2, None)]);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = RowRef<'_>> {
        let columns: std::collections::HashMap<&str, usize> =
            self.columns.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
        let columns = std::rc::Rc::new(columns);
        self.values.iter().map(move |values| RowRef { columns: std::rc::Rc::clone(&columns), values })
    }
}

/// One row of [`Rows::iter`].
pub struct RowRef<'a> {
    columns: std::rc::Rc<std::collections::HashMap<&'a str, usize>>,
    values: &'a [Value],
}

impl RowRef<'_> {
    /// The value in `column` as a `T`, or `None` when the column is missing
    /// or the value is not a `T`. `Option<T>` reads a `null` as `Some(None)`.
    pub fn get<T: FromValue>(&self, column: &str) -> Option<T> {
        self.raw(column).and_then(T::from_value)
    }

    /// The value in `column` as it is.
    pub fn raw(&self, column: &str) -> Option<&Value> {
        self.columns.get(column).and_then(|&i| self.values.get(i))
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
