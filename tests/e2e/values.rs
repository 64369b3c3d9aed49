//! JSON arguments and results, converted by the function's WIT types, through
//! a guest that echoes a record of most WIT types.

use serde_json::{Value as Json, json};

use crate::support::{Fixture, text};

fn sample() -> Json {
    json!({
        "flag": true, "small": 255, "big": -9_007_199_254_740_993_i64, "ratio": 0.5,
        "letter": "λ", "label": "text", "tags": ["a", "b"], "pair": [7, "seven"],
        "maybe": null, "colour": "green", "access": ["read", "write"],
        "shape": {"rectangle": [2.0, 3.0]}, "outcome": {"err": "nope"}
    })
}

/// Every kind of value survives JSON → component → JSON unchanged.
#[test]
fn echo_round_trips_every_kind() {
    let f = Fixture::new(&["probe"]);
    for input in [sample(), {
        let mut v = sample();
        v["maybe"] = json!(3);
        v["shape"] = json!({"point": null});
        v["outcome"] = json!({"ok": 1});
        v["access"] = json!([]);
        v
    }] {
        let out = f.sluice(&["call", "--json", "probe.echo", &input.to_string()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let json: Json = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(json["result"], input);
    }
}

/// A bad value names its JSON path and what was expected there.
#[test]
fn bad_values_name_their_path() {
    let f = Fixture::new(&["probe"]);
    let with = |path: &str, value: Json| {
        let mut v = sample();
        match path {
            "pair" => v["pair"][0] = value,
            "remove-label" => {
                v.as_object_mut().map(|o| o.remove("label"));
            }
            field => v[field] = value,
        }
        let out = f.sluice(&["call", "probe.echo", &v.to_string()]);
        assert_eq!(out.status.code(), Some(1));
        text(&out.stderr)
    };
    let prefix = "error: probe.echo: argument 1 (input: sample): ";
    for (path, value, expected) in [
        ("pair", json!("x"), "): input.pair[0]: expected u32, got the string \"x\""),
        ("small", json!(256), "): input.small: 256 is out of range for u8"),
        (
            "colour",
            json!("purple"),
            "): input.colour: unknown case \"purple\"; expected one of colour, enum { red, green, blue }",
        ),
        ("shape", json!({"circle": null}), "): input.shape.circle: expected f64, got null"),
        ("letter", json!("ab"), "): input.letter: expected exactly one character, got \"ab\""),
        (
            "access",
            json!(["exec"]),
            "): input.access[0]: expected a flag of access, flags { read, write }, got the string \"exec\"",
        ),
        ("remove-label", Json::Null, "): input.label: missing field of type string"),
        ("extra", json!(1), "): input.extra: unknown field;"),
    ] {
        let stderr = with(path, value);
        assert!(stderr.starts_with(prefix), "{stderr}");
        assert!(stderr.contains(expected), "{path}:\n got: {stderr}\nwant: {expected}");
    }
}
