//! JSON to component values and back, directed by the function's WIT types.
//!
//! The mapping (also in `docs/values.md`): records are objects keyed by WIT
//! field names; lists and tuples are arrays; enums are strings; variants are
//! `{"case": payload}` (`{"case": null}` or `"case"` without a payload);
//! options are `null` or the value; results are `{"ok": v}` or `{"err": e}`;
//! flags are arrays of names; `char` is a one-character string.

use serde_json::{Map, Value as Json};
use wasmtime::component::Val;
use wasmtime::component::types::Type;

use crate::names::{FunctionNames, Named, Names};

/// A JSON value that does not fit the WIT type it is meant for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValueError {
    /// Where in the JSON the problem is, e.g. `$.lines[2].quantity`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Converts `json` into a value of type `ty`, whose names (for messages)
/// are `names`. `path` names `json` in errors.
pub fn from_json(ty: &Type, names: &Names, json: &Json, path: &str) -> Result<Val, ValueError> {
    let fail = |message: String| ValueError { path: path.to_string(), message };
    let expected = || fail(format!("expected {}, got {}", type_name(ty, names), describe(json)));
    Ok(match ty {
        Type::Bool => Val::Bool(json.as_bool().ok_or_else(expected)?),
        Type::S8 => Val::S8(int(json, path, ty)?),
        Type::U8 => Val::U8(int(json, path, ty)?),
        Type::S16 => Val::S16(int(json, path, ty)?),
        Type::U16 => Val::U16(int(json, path, ty)?),
        Type::S32 => Val::S32(int(json, path, ty)?),
        Type::U32 => Val::U32(int(json, path, ty)?),
        Type::S64 => Val::S64(int(json, path, ty)?),
        Type::U64 => Val::U64(int(json, path, ty)?),
        #[expect(clippy::cast_possible_truncation, reason = "f32 arguments are rounded, as in WAVE")]
        Type::Float32 => Val::Float32(json.as_f64().ok_or_else(expected)? as f32),
        Type::Float64 => Val::Float64(json.as_f64().ok_or_else(expected)?),
        Type::Char => {
            let s = json.as_str().ok_or_else(expected)?;
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(fail(format!("expected exactly one character, got {s:?}"))),
            }
        }
        Type::String => Val::String(json.as_str().ok_or_else(expected)?.to_string()),
        Type::List(list) => {
            let items = json.as_array().ok_or_else(expected)?;
            let inner = list.ty();
            Val::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| from_json(&inner, names.part(0), v, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Tuple(tuple) => {
            let items = json.as_array().ok_or_else(expected)?;
            let types: Vec<Type> = tuple.types().collect();
            if items.len() != types.len() {
                return Err(fail(format!("expected {} items, got {}", types.len(), items.len())));
            }
            Val::Tuple(
                types
                    .iter()
                    .zip(items)
                    .enumerate()
                    .map(|(i, (t, v))| from_json(t, names.part(i), v, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        }
        Type::Record(record) => {
            let object = json.as_object().ok_or_else(expected)?;
            let fields: Vec<(&str, Type, &Names)> =
                record.fields().enumerate().map(|(i, f)| (f.name, f.ty, names.part(i))).collect();
            let values =
                named(object, &fields, path, "field", || format!("{} has no such field", type_name(ty, names)))?;
            Val::Record(fields.iter().zip(values).map(|((n, ..), v)| (n.to_string(), v)).collect())
        }
        Type::Variant(variant) => {
            let (case, payload) = single_key(json).ok_or_else(expected)?;
            let Some((index, found)) = variant.cases().enumerate().find(|(_, c)| c.name == case) else {
                return Err(fail(format!("unknown case {case:?}; expected one of {}", spelled_out(ty, names))));
            };
            let at = format!("{path}.{case}");
            let payload = match (&found.ty, payload) {
                (Some(t), Some(v)) => Some(Box::new(from_json(t, names.part(index), v, &at)?)),
                (Some(t), None) => {
                    return Err(ValueError {
                        path: at,
                        message: format!("case {case} needs a payload of type {}", type_name(t, names.part(index))),
                    });
                }
                (None, None | Some(Json::Null)) => None,
                (None, Some(v)) => {
                    return Err(ValueError {
                        path: at,
                        message: format!("case {case} has no payload, got {}", describe(v)),
                    });
                }
            };
            Val::Variant(case.to_string(), payload)
        }
        Type::Enum(e) => {
            let name = json.as_str().ok_or_else(expected)?;
            if !e.names().any(|n| n == name) {
                return Err(fail(format!("unknown case {name:?}; expected one of {}", spelled_out(ty, names))));
            }
            Val::Enum(name.to_string())
        }
        Type::Option(option) => match json {
            Json::Null => Val::Option(None),
            v => Val::Option(Some(Box::new(from_json(&option.ty(), names.part(0), v, path)?))),
        },
        Type::Result(result) => {
            let (case, payload) = single_key(json).ok_or_else(expected)?;
            let at = format!("{path}.{case}");
            let convert = |t: Option<Type>, side: &Names| -> Result<Option<Box<Val>>, ValueError> {
                match (t, payload) {
                    (Some(t), Some(v)) => Ok(Some(Box::new(from_json(&t, side, v, &at)?))),
                    (Some(t), None) => Err(ValueError {
                        path: at.clone(),
                        message: format!("needs a value of type {}", type_name(&t, side)),
                    }),
                    (None, None | Some(Json::Null)) => Ok(None),
                    (None, Some(v)) => {
                        Err(ValueError { path: at.clone(), message: format!("takes no value, got {}", describe(v)) })
                    }
                }
            };
            match case {
                "ok" => Val::Result(Ok(convert(result.ok(), names.part(0))?)),
                "err" => Val::Result(Err(convert(result.err(), names.part(1))?)),
                _ => return Err(expected()),
            }
        }
        Type::Flags(flags) => {
            let items = json.as_array().ok_or_else(expected)?;
            let mut set = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let name = item.as_str().filter(|n| flags.names().any(|f| f == *n)).ok_or_else(|| ValueError {
                    path: format!("{path}[{i}]"),
                    message: format!("expected a flag of {}, got {}", spelled_out(ty, names), describe(item)),
                })?;
                set.push(name.to_string());
            }
            Val::Flags(set)
        }
        other => {
            return Err(fail(format!("values of type {} cannot be given as JSON", type_name(other, names))));
        }
    })
}

/// Converts a component value to JSON. Floats that JSON cannot hold (NaN,
/// infinities) become `null`.
pub fn to_json(val: &Val) -> Json {
    let boxed = |v: &Option<Box<Val>>| v.as_deref().map_or(Json::Null, to_json);
    match val {
        Val::Bool(b) => Json::Bool(*b),
        Val::S8(n) => Json::from(*n),
        Val::U8(n) => Json::from(*n),
        Val::S16(n) => Json::from(*n),
        Val::U16(n) => Json::from(*n),
        Val::S32(n) => Json::from(*n),
        Val::U32(n) => Json::from(*n),
        Val::S64(n) => Json::from(*n),
        Val::U64(n) => Json::from(*n),
        Val::Float32(f) => Json::from(f64::from(*f)),
        Val::Float64(f) => Json::from(*f),
        Val::Char(c) => Json::String(c.to_string()),
        Val::String(s) => Json::String(s.clone()),
        Val::List(items) | Val::Tuple(items) | Val::FixedLengthList(items) => {
            Json::Array(items.iter().map(to_json).collect())
        }
        Val::Record(fields) => Json::Object(fields.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        Val::Variant(case, payload) => Json::Object(Map::from_iter([(case.clone(), boxed(payload))])),
        Val::Enum(case) => Json::String(case.clone()),
        Val::Option(v) => boxed(v),
        Val::Result(Ok(v)) => Json::Object(Map::from_iter([("ok".to_string(), boxed(v))])),
        Val::Result(Err(v)) => Json::Object(Map::from_iter([("err".to_string(), boxed(v))])),
        Val::Flags(names) => Json::Array(names.iter().cloned().map(Json::String).collect()),
        Val::Map(pairs) => Json::Array(pairs.iter().map(|(k, v)| Json::Array(vec![to_json(k), to_json(v)])).collect()),
        Val::Resource(_) | Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) => {
            Json::String("<handle>".to_string())
        }
    }
}

/// Converts a JSON object of named arguments (`{"customer": "ann", …}`)
/// into values for `params`, in order. An absent `option` parameter is
/// `none`; any other absent or unknown name is an error at its path.
pub fn from_named(params: &[(String, Type)], names: &FunctionNames, json: &Json) -> Result<Vec<Val>, ValueError> {
    let list = || {
        params
            .iter()
            .enumerate()
            .map(|(i, (n, t))| format!("{n}: {}", type_name(t, names.param(i))))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(object) = json.as_object() else {
        return Err(ValueError {
            path: "$".into(),
            message: format!("expected an object of named arguments ({}), got {}", list(), describe(json)),
        });
    };
    let params: Vec<(&str, Type, &Names)> =
        params.iter().enumerate().map(|(i, (n, t))| (n.as_str(), t.clone(), names.param(i))).collect();
    named(object, &params, "$", "argument", || format!("the parameters are: {}", list()))
}

/// The values of the named members of `object` (record fields, or a
/// function's arguments), in the order of `members`. An absent `option`
/// member is `none`, as in most JSON APIs; any other absent member, and any
/// key that is not a member, is an error at its path. `what` names a
/// member in messages and `members_are` lists the members.
fn named(
    object: &Map<String, Json>,
    members: &[(&str, Type, &Names)],
    path: &str,
    what: &str,
    members_are: impl Fn() -> String,
) -> Result<Vec<Val>, ValueError> {
    let values = members
        .iter()
        .map(|(name, ty, names)| {
            let at = format!("{path}.{name}");
            match (object.get(*name), ty) {
                (Some(v), t) => from_json(t, names, v, &at),
                (None, Type::Option(_)) => Ok(Val::Option(None)),
                (None, t) => {
                    Err(ValueError { path: at, message: format!("missing {what} of type {}", type_name(t, names)) })
                }
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(extra) = object.keys().find(|k| !members.iter().any(|(n, ..)| n == k)) {
        return Err(ValueError {
            path: format!("{path}.{extra}"),
            message: format!("unknown {what}; {}", members_are()),
        });
    }
    Ok(values)
}

/// Reads one command-line argument as a value of `ty`: JSON, except that a
/// string, char or enum parameter also takes its text unquoted (`ann` as
/// well as `"ann"`).
pub fn from_arg(ty: &Type, names: &Names, text: &str, path: &str) -> Result<Val, ValueError> {
    let parsed = serde_json::from_str::<Json>(text);
    if matches!(ty, Type::String | Type::Char | Type::Enum(_)) {
        let json = match parsed {
            Ok(quoted @ Json::String(_)) => quoted,
            _ => Json::String(text.to_string()),
        };
        return from_json(ty, names, &json, path);
    }
    match parsed {
        Ok(json) => from_json(ty, names, &json, path),
        Err(e) => Err(ValueError {
            path: path.to_string(),
            message: format!("expected {} as JSON, but {text:?} is not JSON ({e})", type_name(ty, names)),
        }),
    }
}

/// Checks that `val` has type `ty`, so a wrongly typed argument is reported
/// as such (naming the path) instead of failing inside the call.
pub fn check(ty: &Type, names: &Names, val: &Val, path: &str) -> Result<(), ValueError> {
    let wrong = || ValueError {
        path: path.to_string(),
        message: format!("expected {}, got {}", type_name(ty, names), val_kind(val)),
    };
    let all = |items: &[Val], types: &mut dyn Iterator<Item = Type>| -> Result<(), ValueError> {
        for (i, item) in items.iter().enumerate() {
            let t = types.next().ok_or_else(wrong)?;
            check(&t, names.part(i), item, &format!("{path}[{i}]"))?;
        }
        if types.next().is_some() { Err(wrong()) } else { Ok(()) }
    };
    let payload = |t: Option<Type>, side: &Names, v: &Option<Box<Val>>, at: String| match (t, v) {
        (Some(t), Some(v)) => check(&t, side, v, &at),
        (None, None) => Ok(()),
        _ => Err(wrong()),
    };
    match (ty, val) {
        (Type::Bool, Val::Bool(_))
        | (Type::S8, Val::S8(_))
        | (Type::U8, Val::U8(_))
        | (Type::S16, Val::S16(_))
        | (Type::U16, Val::U16(_))
        | (Type::S32, Val::S32(_))
        | (Type::U32, Val::U32(_))
        | (Type::S64, Val::S64(_))
        | (Type::U64, Val::U64(_))
        | (Type::Float32, Val::Float32(_))
        | (Type::Float64, Val::Float64(_))
        | (Type::Char, Val::Char(_))
        | (Type::String, Val::String(_)) => Ok(()),
        (Type::List(l), Val::List(items)) => {
            let inner = l.ty();
            items.iter().enumerate().try_for_each(|(i, v)| check(&inner, names.part(0), v, &format!("{path}[{i}]")))
        }
        (Type::Tuple(t), Val::Tuple(items)) => all(items, &mut t.types()),
        (Type::Record(r), Val::Record(fields)) => {
            if fields.len() != r.fields().len() {
                return Err(wrong());
            }
            for (i, (field, (name, v))) in r.fields().zip(fields).enumerate() {
                if field.name != name {
                    return Err(ValueError {
                        path: format!("{path}.{name}"),
                        message: format!("expected field {}", field.name),
                    });
                }
                check(&field.ty, names.part(i), v, &format!("{path}.{name}"))?;
            }
            Ok(())
        }
        (Type::Variant(v), Val::Variant(case, value)) => {
            let (i, found) = v.cases().enumerate().find(|(_, c)| c.name == case).ok_or_else(wrong)?;
            payload(found.ty, names.part(i), value, format!("{path}.{case}"))
        }
        (Type::Enum(e), Val::Enum(case)) if e.names().any(|n| n == case) => Ok(()),
        (Type::Option(_), Val::Option(None)) => Ok(()),
        (Type::Option(o), Val::Option(Some(v))) => check(&o.ty(), names.part(0), v, path),
        (Type::Result(r), Val::Result(Ok(v))) => payload(r.ok(), names.part(0), v, format!("{path}.ok")),
        (Type::Result(r), Val::Result(Err(v))) => payload(r.err(), names.part(1), v, format!("{path}.err")),
        (Type::Flags(f), Val::Flags(names)) if names.iter().all(|n| f.names().any(|f| f == n)) => Ok(()),
        _ => Err(wrong()),
    }
}

fn val_kind(val: &Val) -> &'static str {
    match val {
        Val::Bool(_) => "a bool",
        Val::S8(_) | Val::U8(_) | Val::S16(_) | Val::U16(_) | Val::S32(_) | Val::U32(_) | Val::S64(_) | Val::U64(_) => {
            "an integer of another width"
        }
        Val::Float32(_) | Val::Float64(_) => "a float",
        Val::Char(_) => "a char",
        Val::String(_) => "a string",
        Val::List(_) | Val::FixedLengthList(_) => "a list",
        Val::Map(_) => "a map",
        Val::Record(_) => "a record",
        Val::Tuple(_) => "a tuple",
        Val::Variant(..) => "a variant",
        Val::Enum(_) => "an enum",
        Val::Option(_) => "an option",
        Val::Result(_) => "a result",
        Val::Flags(_) => "flags",
        Val::Resource(_) | Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) => "a handle",
    }
}

/// The WIT spelling of a type: its name where its author gave it one
/// (`line-item`), otherwise written out (`list<line-item>`,
/// `record { sku: string }`), with the names of its parts from `names`.
pub fn type_name(ty: &Type, names: &Names) -> String {
    match names.named() {
        Some(named) => named.name.clone(),
        None => written_out(ty, names),
    }
}

/// A named type with what it is (`status, enum { pending, shipped }`), for a
/// message that lists its cases; an unnamed type as [`type_name`] writes it.
pub fn spelled_out(ty: &Type, names: &Names) -> String {
    match names.named() {
        Some(named) => format!("{}, {}", named.name, written_out(ty, names)),
        None => written_out(ty, names),
    }
}

/// The type written out one level, its parts by [`type_name`]
/// (`record { sku: string, lines: list<line-item> }`).
pub fn written_out(ty: &Type, names: &Names) -> String {
    let part = |t: &Type, i: usize| type_name(t, names.part(i));
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(l) => format!("list<{}>", part(&l.ty(), 0)),
        Type::FixedLengthList(l) => format!("list<{}, {}>", part(&l.ty(), 0), l.len()),
        Type::Map(m) => format!("map<{}, {}>", part(&m.key(), 0), part(&m.value(), 1)),
        Type::Tuple(t) => {
            format!("tuple<{}>", t.types().enumerate().map(|(i, t)| part(&t, i)).collect::<Vec<_>>().join(", "))
        }
        Type::Record(r) => format!(
            "record {{ {} }}",
            r.fields()
                .enumerate()
                .map(|(i, f)| format!("{}: {}", f.name, part(&f.ty, i)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::Variant(v) => format!(
            "variant {{ {} }}",
            v.cases()
                .enumerate()
                .map(|(i, c)| match &c.ty {
                    Some(t) => format!("{}({})", c.name, part(t, i)),
                    None => c.name.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::Enum(e) => format!("enum {{ {} }}", e.names().collect::<Vec<_>>().join(", ")),
        Type::Flags(f) => format!("flags {{ {} }}", f.names().collect::<Vec<_>>().join(", ")),
        Type::Option(o) => format!("option<{}>", part(&o.ty(), 0)),
        Type::Result(r) => match (r.ok(), r.err()) {
            (None, None) => "result".into(),
            (Some(ok), None) => format!("result<{}>", part(&ok, 0)),
            (None, Some(err)) => format!("result<_, {}>", part(&err, 1)),
            (Some(ok), Some(err)) => format!("result<{}, {}>", part(&ok, 0), part(&err, 1)),
        },
        Type::Own(_) => names.named().map_or_else(|| "own<resource>".into(), |n| format!("own<{}>", n.name)),
        Type::Borrow(_) => names.named().map_or_else(|| "borrow<resource>".into(), |n| format!("borrow<{}>", n.name)),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        Type::ErrorContext => "error-context".into(),
    }
}

/// Calls `found` for every named type in `ty`, outermost first, with its
/// type and names (a type used twice is visited twice).
pub fn each_named(ty: &Type, names: &Names, found: &mut dyn FnMut(&Type, &Names, &Named)) {
    if let Some(named) = names.named() {
        found(ty, names, named);
    }
    let mut part = |i: usize, t: &Type| each_named(t, names.part(i), found);
    match ty {
        Type::List(l) => part(0, &l.ty()),
        Type::FixedLengthList(l) => part(0, &l.ty()),
        Type::Option(o) => part(0, &o.ty()),
        Type::Map(m) => {
            part(0, &m.key());
            part(1, &m.value());
        }
        Type::Tuple(t) => t.types().enumerate().for_each(|(i, t)| part(i, &t)),
        Type::Record(r) => r.fields().enumerate().for_each(|(i, f)| part(i, &f.ty)),
        Type::Variant(v) => v.cases().enumerate().for_each(|(i, c)| {
            if let Some(t) = &c.ty {
                part(i, t);
            }
        }),
        Type::Result(r) => {
            if let Some(ok) = r.ok() {
                part(0, &ok);
            }
            if let Some(err) = r.err() {
                part(1, &err);
            }
        }
        _ => {}
    }
}

fn int<T: TryFrom<i64> + TryFrom<u64>>(json: &Json, path: &str, ty: &Type) -> Result<T, ValueError> {
    let fail = |message: String| ValueError { path: path.to_string(), message };
    let converted = match json {
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => T::try_from(i).ok(),
            (None, Some(u)) => T::try_from(u).ok(),
            _ => {
                return Err(fail(format!("expected {}, got the non-integer {n}", type_name(ty, Names::none()))));
            }
        },
        other => {
            return Err(fail(format!("expected {}, got {}", type_name(ty, Names::none()), describe(other))));
        }
    };
    converted.ok_or_else(|| fail(format!("{json} is out of range for {}", type_name(ty, Names::none()))))
}

/// `{"key": value}` with exactly one key, or a bare `"key"` (no payload).
fn single_key(json: &Json) -> Option<(&str, Option<&Json>)> {
    match json {
        Json::String(s) => Some((s, None)),
        Json::Object(o) if o.len() == 1 => o.iter().next().map(|(k, v)| (k.as_str(), Some(v))),
        _ => None,
    }
}

fn describe(json: &Json) -> String {
    match json {
        Json::Null => "null".into(),
        Json::Bool(b) => format!("the boolean {b}"),
        Json::Number(n) => format!("the number {n}"),
        Json::String(s) => format!("the string {s:?}"),
        Json::Array(a) => format!("an array of {}", a.len()),
        Json::Object(_) => "an object".into(),
    }
}

/// About how many bytes a read's rows hold.
pub fn rows_size(rows: &crate::bindings::Rows) -> usize {
    rows.columns.iter().map(String::len).sum::<usize>()
        + rows.values.iter().flatten().map(crate::command::value_size).sum::<usize>()
}

/// About how many bytes a component value holds: the payload of strings
/// and lists, eight bytes for each scalar.
pub fn size(value: &Val) -> usize {
    match value {
        Val::String(s) => s.len(),
        Val::List(items) | Val::Tuple(items) => items.iter().map(size).sum::<usize>(),
        Val::Record(fields) => fields.iter().map(|(name, v)| name.len() + size(v)).sum(),
        Val::Variant(case, payload) => case.len() + payload.as_deref().map_or(0, size),
        Val::Enum(case) => case.len(),
        Val::Option(v) => v.as_deref().map_or(1, size),
        Val::Result(r) => match r {
            Ok(v) | Err(v) => v.as_deref().map_or(1, size),
        },
        Val::Flags(flags) => flags.iter().map(String::len).sum(),
        _ => 8,
    }
}
