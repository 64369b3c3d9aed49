//! Values between Sluice and PostgreSQL: a [`Value`] bound to whatever type
//! PostgreSQL inferred for its parameter, a column of a read turned back
//! into a [`Value`], and the digest of a read's rows.

use std::error::Error as StdError;

use bytes::BytesMut;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use crate::bindings::Value;

type BoxError = Box<dyn StdError + Sync + Send>;

/// A value bound to a parameter of the type PostgreSQL inferred for it.
/// An integer fits `int2`, `int4`, `int8`, `float8`, `numeric`, `bool` (0
/// or 1) or text; a real fits `float4` or `float8`; text fits any text
/// type and JSON; a blob fits `bytea`. Anything else is refused with both
/// types named.
#[derive(Debug)]
pub(super) struct Param<'a>(pub &'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match (self.0, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Integer(i), &Type::INT8) => i.to_sql(ty, out),
            (Value::Integer(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (Value::Integer(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (Value::Integer(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (Value::Integer(i @ (0 | 1)), &Type::BOOL) => (*i == 1).to_sql(ty, out),
            (Value::Integer(i), &Type::NUMERIC) => {
                encode_numeric(*i, out);
                Ok(IsNull::No)
            }
            (Value::Real(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT4) => (*f as f32).to_sql(ty, out),
            (Value::Integer(i), t) if is_text(t) => i.to_string().as_str().to_sql(&Type::TEXT, out),
            (Value::Real(f), t) if is_text(t) => f.to_string().as_str().to_sql(&Type::TEXT, out),
            (Value::Text(s), t) if is_text(t) => s.as_str().to_sql(&Type::TEXT, out),
            (Value::Text(s), &Type::JSONB) => {
                out.extend_from_slice(&[1]);
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            (Value::Text(s), &Type::JSON) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            (Value::Blob(b), &Type::BYTEA) => b.as_slice().to_sql(ty, out),
            (value, ty) => Err(format!("a {} cannot be bound to a parameter of type {ty}", kind(value)).into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Whether values of `ty` are text on the wire.
fn is_text(ty: &Type) -> bool {
    matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Integer(_) => "integer",
        Value::Real(_) => "real",
        Value::Text(_) => "text",
        Value::Blob(_) => "blob",
    }
}

/// An integer in PostgreSQL's binary `numeric` form: base-10000 digits,
/// most significant first.
fn encode_numeric(i: i64, out: &mut BytesMut) {
    let mut digits = Vec::new();
    let mut rest = i.unsigned_abs();
    while rest > 0 {
        digits.push((rest % 10_000) as i16);
        rest /= 10_000;
    }
    digits.reverse();
    let weight = digits.len() as i16 - 1;
    let sign: u16 = if i < 0 { 0x4000 } else { 0 };
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.max(0).to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
}

/// One column of a row read back: integers (and `bool`, as 0 or 1) as
/// integers, floats and non-integral `numeric`s as reals, text and JSON as
/// text, `bytea` as blobs. Other types are refused, naming the cast that
/// would read them.
pub(super) struct Cell(pub Value);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Cell(match *ty {
            Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Integer(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Integer(i16::from_sql(ty, raw)?.into()),
            Type::OID => Value::Integer(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Integer(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::NUMERIC => decode_numeric(raw)?,
            Type::BYTEA => Value::Blob(raw.to_vec()),
            Type::JSONB => Value::Text(String::from_utf8(raw.get(1..).unwrap_or_default().to_vec())?),
            ref t if is_text(t) || *t == Type::JSON => Value::Text(<&str>::from_sql(&Type::TEXT, raw)?.to_string()),
            ref t => {
                return Err(format!(
                    "a column of type {t} cannot be read as a value; cast it (::text, ::bigint or ::float8)"
                )
                .into());
            }
        }))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Cell(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A `numeric` as an integer when it is whole and fits, else a real.
fn decode_numeric(raw: &[u8]) -> Result<Value, BoxError> {
    let word = |i: usize| -> Result<i16, BoxError> {
        raw.get(i * 2..i * 2 + 2).map(|b| i16::from_be_bytes([b[0], b[1]])).ok_or_else(|| "a short numeric".into())
    };
    let (count, weight, sign, scale) = (word(0)?, word(1)?, word(2)? as u16, word(3)?);
    if sign == 0xC000 {
        return Ok(Value::Real(f64::NAN));
    }
    let negative = sign == 0x4000;
    let mut whole: Option<i128> = Some(0);
    let mut real = 0f64;
    for i in 0..count.max(0) as usize {
        let digit = word(4 + i)?;
        let power = i32::from(weight) - i as i32;
        real += f64::from(digit) * 10_000f64.powi(power);
        whole = match (whole, u32::try_from(power)) {
            (Some(w), Ok(p)) => 10_000i128.checked_pow(p).and_then(|m| w.checked_add(i128::from(digit) * m)),
            (Some(w), Err(_)) if digit == 0 => Some(w),
            _ => None,
        };
    }
    let whole = whole.map(|w| if negative { -w } else { w }).and_then(|w| i64::try_from(w).ok());
    Ok(match whole {
        Some(w) if scale == 0 || real.fract() == 0.0 => Value::Integer(w),
        _ => Value::Real(if negative { -real } else { real }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_round_trip_as_integers() -> Result<(), BoxError> {
        for i in [0i64, 7, 10_000, 123_456_789, -42, i64::MAX, i64::MIN + 1] {
            let mut out = BytesMut::new();
            encode_numeric(i, &mut out);
            assert_eq!(decode_numeric(&out)?, Value::Integer(i), "{i}");
        }
        Ok(())
    }
}
