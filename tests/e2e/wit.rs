//! The WIT package: it parses, and every item is documented.

use wit_parser::Resolve;

/// `wit/` parses as `sluice:service@0.1.0` with the world `imports`, and
/// every interface, function, type, field and case has a `///` doc.
#[test]
fn package_parses_and_everything_is_documented() {
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve.push_dir(crate::support::repo().join("wit")).expect("wit/ parses");
    let package = &resolve.packages[pkg];
    assert_eq!(package.name.to_string(), "sluice:service@0.1.0");
    assert!(package.worlds.contains_key("imports"));

    let mut missing = Vec::new();
    for (name, id) in &package.worlds {
        if resolve.worlds[*id].docs.contents.is_none() {
            missing.push(format!("world {name}"));
        }
    }
    for (iname, id) in &package.interfaces {
        let iface = &resolve.interfaces[*id];
        if iface.docs.contents.is_none() {
            missing.push(format!("interface {iname}"));
        }
        for (fname, f) in &iface.functions {
            if f.docs.contents.is_none() {
                missing.push(format!("{iname}.{fname}"));
            }
        }
        for (tname, t) in &iface.types {
            let ty = &resolve.types[*t];
            // `use types.{value}` brings in an alias documented where it is defined.
            if let wit_parser::TypeDefKind::Type(wit_parser::Type::Id(other)) = ty.kind
                && resolve.types[other].owner != ty.owner
            {
                continue;
            }
            if ty.docs.contents.is_none() {
                missing.push(format!("{iname}.{tname}"));
            }
            match &ty.kind {
                wit_parser::TypeDefKind::Record(r) => missing.extend(
                    r.fields
                        .iter()
                        .filter(|x| x.docs.contents.is_none())
                        .map(|x| format!("{iname}.{tname}.{}", x.name)),
                ),
                wit_parser::TypeDefKind::Variant(v) => missing.extend(
                    v.cases.iter().filter(|x| x.docs.contents.is_none()).map(|x| format!("{iname}.{tname}.{}", x.name)),
                ),
                _ => {}
            }
        }
    }
    assert!(missing.is_empty(), "undocumented WIT items: {missing:?}");
}
