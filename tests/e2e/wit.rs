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

/// `just wit-package` builds `wit/` with `wkg build` into the binary WIT
/// package a service can use from its `wit/deps/`: it decodes as
/// `sluice:service@0.1.0` with the same interfaces and worlds, keeps the
/// docs, and a service's WIT directory with only that file under `deps/`
/// resolves (its world includes `sluice:service/imports`).
#[test]
fn the_built_package_is_what_wit_holds_and_a_service_can_depend_on_it() {
    let built = crate::support::components().join("../wit/sluice-service.wasm");
    let Ok(bytes) = std::fs::read(&built) else {
        crate::support::skip_without(&format!(
            "skipping: no {} (just wit-package builds it with wkg, which `just test` installs)",
            built.display()
        ));
        return;
    };
    let decoded = wit_parser::decoding::decode(&bytes).expect("the built package decodes");
    let wit_parser::decoding::DecodedWasm::WitPackage(resolve, pkg) = decoded else {
        panic!("{} is a component, not a WIT package", built.display());
    };
    let package = &resolve.packages[pkg];
    assert_eq!(package.name.to_string(), "sluice:service@0.1.0");
    let mut source = Resolve::default();
    let (from_source, _) = source.push_dir(crate::support::repo().join("wit")).expect("wit/ parses");
    let names = |r: &Resolve, p: wit_parser::PackageId| {
        let p = &r.packages[p];
        (p.interfaces.keys().cloned().collect::<Vec<_>>(), p.worlds.keys().cloned().collect::<Vec<_>>())
    };
    assert_eq!(names(&resolve, pkg), names(&source, from_source), "the package holds what wit/ holds");
    let to = package.interfaces.get("to").map(|id| &resolve.interfaces[*id]).expect("to");
    assert!(to.docs.contents.is_some() && to.functions.contains_key("insert"), "docs and functions are kept");

    let service = tempfile::tempdir().expect("temp dir");
    let wit = service.path().join("wit");
    std::fs::create_dir_all(wit.join("deps")).expect("mkdir");
    std::fs::copy(&built, wit.join("deps/sluice-service.wasm")).expect("copy the package");
    std::fs::write(
        wit.join("world.wit"),
        "package local:greeter@0.1.0;\n\
         interface api { use sluice:service/types@0.1.0.{error}; greet: func(who: string) -> result<u64, error>; }\n\
         world greeter { include sluice:service/imports@0.1.0; export api; }\n",
    )
    .expect("write world");
    let mut user = Resolve::default();
    let (local, _) = user.push_dir(&wit).expect("a service's WIT resolves against the built package");
    let world = user.select_world(&[local], Some("greeter")).expect("the world");
    let imports: Vec<String> = user.worlds[world].imports.keys().map(|k| user.name_world_key(k)).collect();
    assert!(imports.iter().any(|i| i == "sluice:service/from@0.1.0"), "{imports:?}");
}
