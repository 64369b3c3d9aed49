//! The names a component's author gave its types. wasmtime's types are
//! structural (a record is its fields), so the WIT the component carries is
//! decoded once at load with wit-parser, and each exported function's
//! parameters and results get a [`Names`] tree that runs beside wasmtime's
//! [`Type`](wasmtime::component::types::Type): the name of the type at this
//! place, if the author named it, and the names of its parts in the order
//! wasmtime lists them. `sluice list`, error messages, `GET /services` and
//! the OpenAPI document read types through it (`line-item` rather than
//! `record { sku: string, quantity: u32 }`). Doc comments are not kept:
//! wit-bindgen leaves them out of the WIT it embeds in a component.
//!
//! Decoding validates the whole component and is most of a start with a
//! warm compilation cache, so the host keeps what it decoded beside the
//! compiled code (serialized with serde) and reads that instead.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use wit_parser::{Resolve, Type as WitType, TypeDefKind, TypeOwner, WorldItem};

/// A named type: a record, variant, enum, flags or resource as its author
/// wrote it.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    /// The WIT name (`line-item`).
    pub name: String,
    /// Where it is defined: the interface (`acme:orders/orders@0.1.0`) or
    /// world; with the name, this tells two types of one name apart.
    pub owner: String,
}

impl Named {
    /// `owner#name`, unique among the types of every component.
    pub fn qualified(&self) -> String {
        format!("{}#{}", self.owner, self.name)
    }
}

/// The names at one place of a type, and of its parts.
///
/// The parts follow wasmtime's order: a list's or option's one item, a
/// map's key and value, a tuple's items, a record's fields, a variant's case
/// payloads (an empty tree for a case without one), a result's `ok` and `err`.
/// A tree that does not reach as deep as the type (no names were decoded)
/// answers every part with the empty tree, so the type is then written out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Names {
    named: Option<Arc<Named>>,
    parts: Vec<Names>,
}

/// The tree without names.
static NONE: Names = Names { named: None, parts: Vec::new() };

impl Names {
    /// No names at this place or below it.
    pub fn none() -> &'static Names {
        &NONE
    }

    /// The type's own name, if its author gave it one.
    pub fn named(&self) -> Option<&Named> {
        self.named.as_deref()
    }

    /// The names of part `i`.
    pub fn part(&self, i: usize) -> &Names {
        self.parts.get(i).unwrap_or(&NONE)
    }
}

/// The names of one exported function's types.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionNames {
    /// One tree per parameter, in order.
    pub params: Vec<Names>,
    /// One tree per result (zero or one).
    pub results: Vec<Names>,
}

impl FunctionNames {
    /// The names of parameter `i`.
    pub fn param(&self, i: usize) -> &Names {
        self.params.get(i).unwrap_or(&NONE)
    }

    /// The names of result `i`.
    pub fn result(&self, i: usize) -> &Names {
        self.results.get(i).unwrap_or(&NONE)
    }
}

/// One exported function with its names: `interface` is the export's name
/// (`acme:orders/orders@0.1.0`) or `None` for a function the world exports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportNames {
    /// The exported interface, as the component names it.
    pub interface: Option<String>,
    /// The function's WIT name.
    pub function: String,
    /// The names of its types.
    pub names: FunctionNames,
}

/// The names of every function a component exports, decoded from the WIT in
/// its binary. A component whose WIT cannot be decoded has none (it is
/// shown structurally); the error says why.
pub fn exports(bytes: &[u8]) -> Result<Vec<ExportNames>, String> {
    // A decoder bug on hostile bytes costs the names, not the host.
    let decoded = std::panic::catch_unwind(|| wit_parser::decoding::decode(bytes))
        .map_err(|_| "the WIT decoder panicked".to_string())?
        .map_err(|e| format!("{e:#}"))?;
    let wit_parser::decoding::DecodedWasm::Component(resolve, world) = decoded else {
        return Err("a WIT package, not a component".into());
    };
    let mut found = Vec::new();
    let mut cache = Cache::default();
    for (key, item) in &resolve.worlds[world].exports {
        match item {
            WorldItem::Function(f) => {
                found.push(ExportNames {
                    interface: None,
                    function: f.name.clone(),
                    names: function(&resolve, f, &mut cache),
                });
            }
            WorldItem::Interface { id, .. } => {
                let interface = resolve.name_world_key(key);
                for (name, f) in &resolve.interfaces[*id].functions {
                    found.push(ExportNames {
                        interface: Some(interface.clone()),
                        function: name.clone(),
                        names: function(&resolve, f, &mut cache),
                    });
                }
            }
            WorldItem::Type { .. } => {}
        }
    }
    Ok(found)
}

/// One `Named` per type definition, shared by every place that uses it.
#[derive(Default)]
struct Cache(std::collections::HashMap<wit_parser::TypeId, Arc<Named>>);

fn function(resolve: &Resolve, f: &wit_parser::Function, cache: &mut Cache) -> FunctionNames {
    FunctionNames {
        params: f.params.iter().map(|p| names(resolve, &p.ty, cache)).collect(),
        results: f.result.iter().map(|t| names(resolve, t, cache)).collect(),
    }
}

fn names(resolve: &Resolve, ty: &WitType, cache: &mut Cache) -> Names {
    let WitType::Id(id) = ty else { return Names::default() };
    let def = &resolve.types[*id];
    let mut each = |types: &mut dyn Iterator<Item = Option<&WitType>>| -> Vec<Names> {
        types.map(|t| t.map_or_else(Names::default, |t| names(resolve, t, cache))).collect()
    };
    let parts = match &def.kind {
        // An alias (`type id = u64`, or a type brought in by `use`) is the
        // type it stands for.
        TypeDefKind::Type(target) => return names(resolve, target, cache),
        TypeDefKind::Record(r) => each(&mut r.fields.iter().map(|f| Some(&f.ty))),
        TypeDefKind::Variant(v) => each(&mut v.cases.iter().map(|c| c.ty.as_ref())),
        TypeDefKind::Tuple(t) => each(&mut t.types.iter().map(Some)),
        TypeDefKind::Option(t) | TypeDefKind::List(t) | TypeDefKind::FixedLengthList(t, _) => {
            each(&mut std::iter::once(Some(t)))
        }
        TypeDefKind::Map(k, v) => each(&mut [Some(k), Some(v)].into_iter()),
        TypeDefKind::Result(r) => each(&mut [r.ok.as_ref(), r.err.as_ref()].into_iter()),
        TypeDefKind::Handle(wit_parser::Handle::Own(r) | wit_parser::Handle::Borrow(r)) => {
            return Names { named: named(resolve, *r, cache), parts: Vec::new() };
        }
        TypeDefKind::Enum(_)
        | TypeDefKind::Flags(_)
        | TypeDefKind::Resource
        | TypeDefKind::Future(_)
        | TypeDefKind::Stream(_)
        | TypeDefKind::Unknown => Vec::new(),
    };
    let is_named_kind = matches!(
        def.kind,
        TypeDefKind::Record(_) | TypeDefKind::Variant(_) | TypeDefKind::Enum(_) | TypeDefKind::Flags(_)
    );
    Names { named: if is_named_kind { named(resolve, *id, cache) } else { None }, parts }
}

/// The name of a type definition, following aliases to the definition.
fn named(resolve: &Resolve, id: wit_parser::TypeId, cache: &mut Cache) -> Option<Arc<Named>> {
    let def = &resolve.types[id];
    if let TypeDefKind::Type(WitType::Id(target)) = def.kind {
        return named(resolve, target, cache);
    }
    if let Some(hit) = cache.0.get(&id) {
        return Some(hit.clone());
    }
    let owner = match def.owner {
        TypeOwner::Interface(i) => {
            resolve.id_of(i).or_else(|| resolve.interfaces[i].name.clone()).unwrap_or_else(|| "interface".into())
        }
        TypeOwner::World(w) => resolve.worlds[w].name.clone(),
        TypeOwner::None => String::new(),
    };
    let named = Arc::new(Named { name: def.name.clone()?, owner });
    cache.0.insert(id, named.clone());
    Some(named)
}
