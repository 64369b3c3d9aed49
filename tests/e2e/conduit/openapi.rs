//! Conduit's answers against the RealWorld spec's `openapi.yml` (kept,
//! unchanged, in `examples/conduit/spec/`): every answer the flows got (`answers.py`), and the
//! answers to requests a property-based fuzzer (schemathesis) generates
//! from the document. The document lists no 403 or 404 though the spec's
//! error-handling.md requires them (a missing article, another user's
//! article): both checks take those, and a 401 where the document lists
//! none, as documented when their body is the spec's error body.

use std::path::PathBuf;
use std::process::Command;

use super::client::Conduit;
use crate::contract::{fuzz, tool};
use crate::support::repo;

/// The spec's document.
fn spec() -> PathBuf {
    repo().join("examples/conduit/spec/openapi.yml")
}

/// Every exchange of `c` matches the document.
pub fn check_answers(c: &Conduit) {
    let Some(python) = tool("python", "the OpenAPI check of Conduit's answers") else { return };
    let spec = spec();
    let exchanges = c.fixture.dir.path().join("exchanges.json");
    std::fs::write(&exchanges, serde_json::to_vec(&*c.exchanges.borrow()).expect("JSON")).expect("write");
    let out = Command::new(python)
        .arg(repo().join("tests/e2e/conduit/answers.py"))
        .args([&spec, &exchanges])
        .output()
        .expect("run answers.py");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "answers that break openapi.yml:\n{report}");
    eprintln!("measured: {}", report.trim());
    assert!(report.contains(&format!("checked {} answers", c.exchanges.borrow().len())), "{report}");
}

/// The checks schemathesis runs on every answer.
const CHECKS: &str = "response_schema_conformance,status_code_conformance,content_type_conformance,\
                      unsupported_method,not_a_server_error";

/// Requests generated per operation and phase: the document has 19.
const EXAMPLES: &str = "25";

/// Generated requests, signed in as a registered user, against the
/// document with the error statuses error-handling.md adds.
#[test]
fn generated_requests_get_answers_openapi_yml_describes() {
    let (Some(schemathesis), Some(python)) =
        (tool("schemathesis", "the Conduit OpenAPI fuzzing"), tool("python", "the Conduit OpenAPI fuzzing"))
    else {
        return;
    };
    let spec = spec();
    let c = Conduit::start(None);
    let token = c.register("fuzzer", "fuzzerfuzzer");
    let document = c.fixture.dir.path().join("openapi.yml");
    let out = Command::new(python)
        .arg(repo().join("tests/e2e/conduit/answers.py"))
        .arg("--with-spec-errors")
        .args([&spec, &document])
        .output()
        .expect("write the document");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let url = c.served.url("/api");
    let header = format!("Authorization: Token {token}");
    let document = document.to_string_lossy();
    let args = [&*document, "--url", &url, "--header", &header, "--checks", CHECKS, "--max-examples", EXAMPLES];
    fuzz(&schemathesis, &args, c.fixture.dir.path(), "Conduit", "openapi.yml");
}
