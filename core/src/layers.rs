//! The lower layers of the host, checked: each module below may use only
//! the modules listed before it, so channels and commands never reach up
//! into scopes, the registry or the runtime, and no two of them import each
//! other. A `use` (or path) that breaks the order fails this test with the
//! file and the line.

use std::path::{Path, PathBuf};

/// Bottom first: what each may use is what comes before it.
const ORDER: &[&str] =
    &["work", "bindings", "limits", "channels", "command", "manifest", "config", "grants", "reads", "names", "values"];

/// The files of module `name`: `src/NAME.rs`, or every file under `src/NAME/`.
fn files(name: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let file = src.join(format!("{name}.rs"));
    if file.exists() {
        return vec![file];
    }
    let mut found = Vec::new();
    let mut dirs = vec![src.join(name)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found
}

/// The `crate::NAME` paths of a line of code (comments left out).
fn uses(line: &str) -> Vec<&str> {
    let code = line.split("//").next().unwrap_or_default();
    code.match_indices("crate::")
        .map(|(i, _)| {
            let rest = &code[i + "crate::".len()..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

#[test]
fn the_lower_layers_only_point_down() {
    let mut broken = Vec::new();
    for (position, module) in ORDER.iter().enumerate() {
        let allowed = &ORDER[..position];
        for file in files(module) {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for (n, line) in text.lines().enumerate() {
                for used in uses(line) {
                    if used != *module && !allowed.contains(&used) {
                        broken.push(format!("{}:{}: {module} uses crate::{used}", file.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "imports that point up or sideways:\n{}", broken.join("\n"));
}

#[test]
fn the_check_sees_a_use() {
    assert_eq!(uses("use crate::scope::Scope; // crate::no"), ["scope"]);
    assert!(uses("/// [`crate::grants`] says").is_empty());
}
