//! The HTTP contract: a property-based fuzzer (schemathesis, pinned in
//! `scripts/requirements-tools.txt`) sends generated requests to a served
//! host with the examples, from the OpenAPI document the host publishes,
//! and checks every answer against it: the response matches its schema,
//! its status is one the document lists, its content type is the one the
//! document says, and a method the document does not list for a path is
//! answered 405. Business refusals of schema-valid input (a 422 for an
//! empty customer) are documented answers, not violations.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use crate::support::{Fixture, skip_without};

/// A tool from the venv `just tools` makes, or `None` with a message
/// (naming `what` it is for) when it is missing; an error when
/// SLUICE_REQUIRE_TOOLS=1.
pub(crate) fn tool(name: &str, what: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("SLUICE_VENV").map(PathBuf::from);
    let found = venv.map(|v| v.join("bin").join(name)).filter(|p| p.exists());
    if found.is_none() {
        skip_without(&format!("{name} not found: run `just tools` (pip from PyPI) or `just test`; skipping {what}"));
    }
    found
}

/// The checks run on every answer (schemathesis's names).
const CHECKS: &str = "response_schema_conformance,status_code_conformance,content_type_conformance,unsupported_method";

/// Generated requests per operation, and per phase: about 800 requests
/// over the examples' 14 operations, in about 15 s here.
const EXAMPLES: &str = "50";

/// The example services (the shop, the cart, the `wasi:http` mount) served
/// on their schema, fuzzed from their own OpenAPI document: no answer may
/// break it.
#[test]
fn every_answer_matches_the_published_openapi_document() {
    let Some(schemathesis) = tool("schemathesis", "the HTTP contract test") else { return };
    let f = Fixture::new(&["orders", "products", "inventory", "api", "cart", "notifications"]);
    f.migrate();
    let served = f.serve(&[]);
    let url = served.url("/openapi.json");
    let args = [url.as_str(), "--checks", CHECKS, "--max-examples", EXAMPLES];
    fuzz(&schemathesis, &args, f.dir.path(), "the examples", "the published document");
}

/// Runs `schemathesis run ARGS` in `dir` (its cache of examples goes there,
/// not in the checkout), over `what`, and fails unless every answer held
/// to `document` and it sent a fair number of requests ("777 generated,
/// 777 passed").
pub(crate) fn fuzz(schemathesis: &std::path::Path, args: &[&str], dir: &std::path::Path, what: &str, document: &str) {
    let started = Instant::now();
    let out = Command::new(schemathesis)
        .arg("run")
        .args(args)
        .arg("--no-color")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .current_dir(dir)
        .output()
        .expect("run schemathesis");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("measured: schemathesis over {what} took {:?}", started.elapsed());
    assert!(out.status.success(), "answers that break {document}:\n{report}");
    let tested = report.lines().find(|l| l.contains(" generated, ")).unwrap_or_default().trim().to_string();
    let generated: u32 = tested.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(generated >= 200, "schemathesis sent only {generated} requests: {report}");
    eprintln!("measured: schemathesis: {tested}");
}
