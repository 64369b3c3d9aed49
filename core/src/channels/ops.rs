//! The commands channels apply, as plain data: one family per kind that
//! takes commands, each defined, checked, sized and described by its kind
//! ([`Family`]), registered here in one list. A command is built and checked
//! once, when the guest queues it ([`Operation::check`]), and applied once,
//! at save, by the channel it names.

use serde::Serialize;

use crate::bindings::Value;

/// A kind of channel, by its name in `sluice.toml`: each kind declares its
/// own (`sql::KIND`). A command or read of one kind is refused by a channel
/// of another ([`super::wrong_kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kind(&'static str);

impl Kind {
    /// The kind named `name`.
    pub const fn named(name: &'static str) -> Kind {
        Kind(name)
    }

    /// The kind's name in `sluice.toml`.
    pub fn name(self) -> &'static str {
        self.0
    }
}

/// What a kind's commands must say of themselves.
pub trait Family {
    /// The kind of channel that applies them.
    fn kind(&self) -> Kind;

    /// Checks what can be checked without a channel. The error text becomes
    /// the guest's `error::invalid`.
    fn check(&self) -> Result<(), String>;

    /// A one-line summary for people: `insert into orders (customer, total)`.
    fn describe(&self) -> String;

    /// About how many bytes the command holds: names, SQL and values.
    fn size(&self) -> usize;
}

/// Defines [`Operation`] with one variant per registered family (the
/// registration is in [`super::kinds`]).
macro_rules! families {
    ($($variant:ident($family:ty)),* $(,)?) => {
        /// What a command does to its channel: a command of one kind's
        /// family. Serialized as the family's own form (`{"kind":
        /// "insert", …}`).
        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        #[serde(untagged)]
        pub enum Operation {
            $(
                #[doc = concat!("A command of the `", stringify!($variant), "` family.")]
                $variant($family),
            )*
        }

        impl Operation {
            pub(crate) fn family(&self) -> &dyn $crate::channels::ops::Family {
                match self {
                    $(Operation::$variant(op) => op,)*
                }
            }
        }

        $(
            impl From<$family> for Operation {
                fn from(op: $family) -> Operation {
                    Operation::$variant(op)
                }
            }
        )*
    };
}
pub(crate) use families;

pub use super::kinds::Operation;

impl Operation {
    /// Checks what can be checked without a channel ([`Family::check`]).
    pub fn check(&self) -> Result<(), String> {
        self.family().check()
    }

    /// The kind of channel that applies it.
    pub fn kind(&self) -> Kind {
        self.family().kind()
    }

    /// A one-line summary for people.
    pub fn describe(&self) -> String {
        self.family().describe()
    }

    /// About how many bytes the command holds.
    pub fn size(&self) -> usize {
        self.family().size()
    }
}

/// The result of applying one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The number of rows the command changed.
    Affected(u64),
    /// The row id of the row an insert created.
    Inserted(i64),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Affected(n) => write!(f, "{n} row(s) affected"),
            Outcome::Inserted(id) => write!(f, "inserted row {id}"),
        }
    }
}

/// About how many bytes one value holds.
pub fn value_size(value: &Value) -> usize {
    match value {
        Value::Null => 1,
        Value::Integer(_) | Value::Real(_) => 8,
        Value::Text(t) => t.len(),
        Value::Blob(b) => b.len(),
    }
}

/// A SQL value as plain JSON: `null`, a number, a string, or a blob as an
/// array of bytes.
pub fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Integer(n) => (*n).into(),
        Value::Real(r) => (*r).into(),
        Value::Text(t) => t.as_str().into(),
        Value::Blob(b) => b.as_slice().into(),
    }
}

/// Bytes as JSON: their text when it is UTF-8, else the bytes.
pub fn bytes_json<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) => s.serialize_str(text),
        Err(_) => s.collect_seq(bytes),
    }
}

/// At most `chars` characters of `text`, with `…` when cut: how long
/// descriptions quote what a service wrote.
pub fn clip(text: &mut String, chars: usize) {
    if let Some((cut, _)) = text.char_indices().nth(chars) {
        text.truncate(cut);
        text.push('…');
    }
}
