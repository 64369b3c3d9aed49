//! Redaction of recorded cases, so that traces of production scopes can be
//! kept: each rule names where secret values are (`column:NAME`, the column
//! of that name in rows read and in commands' rows; `arg:NAME`, the call's
//! parameter of that name, every text and number inside it). Every value
//! found there is then replaced *everywhere* in the case, in any field and
//! inside any text (a statement's parameters, a message's payload), by a
//! token: `redacted-1`, `redacted-2`… The same value always gets the same
//! token, so a case whose redacted values are all text still replays.
//! A recorded request's credentials ([`CREDENTIAL_HEADERS`]) are redacted
//! the same way in every case, with no rule; `header:NAME` adds a header.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::Case;

/// One redaction rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// A column, by name (compared without regard to case).
    Column(String),
    /// A parameter of the call, by name.
    Arg(String),
    /// A header of a recorded request, by name (compared without regard
    /// to case).
    Header(String),
}

/// The headers whose values are credentials: redacted in every recorded
/// request, whatever the rules.
pub const CREDENTIAL_HEADERS: [&str; 4] = ["authorization", "proxy-authorization", "cookie", "set-cookie"];

impl std::str::FromStr for Rule {
    type Err = String;

    fn from_str(text: &str) -> Result<Rule, String> {
        match text.split_once(':') {
            Some(("column", name)) if !name.is_empty() => Ok(Rule::Column(name.to_lowercase())),
            Some(("arg", name)) if !name.is_empty() => Ok(Rule::Arg(name.to_string())),
            Some(("header", name)) if !name.is_empty() => Ok(Rule::Header(name.to_lowercase())),
            _ => Err(format!("redaction rule {text:?} is not column:NAME, arg:NAME or header:NAME")),
        }
    }
}

/// Texts shorter than this are replaced only where they are a whole value,
/// not inside other texts (a one-letter secret would take every `a`).
const MIN_INSIDE: usize = 3;

/// Applies `rules` to `case`, whose call has parameters named `params`.
pub fn apply(case: &mut Case, params: &[String], rules: &[Rule]) -> Result<(), String> {
    let mut secrets: Vec<Json> = Vec::new();
    for (name, value) in case.http.iter().flat_map(|http| &http.headers) {
        let name = name.to_lowercase();
        if CREDENTIAL_HEADERS.contains(&name.as_str()) || rules.contains(&Rule::Header(name)) {
            leaves(&Json::String(value.clone()), &mut secrets);
        }
    }
    for rule in rules {
        match rule {
            Rule::Header(_) => {}
            Rule::Arg(name) => {
                if let Some(arg) = params.iter().position(|p| p == name).and_then(|i| case.args.get(i)) {
                    leaves(arg, &mut secrets);
                }
            }
            Rule::Column(column) => {
                for read in &case.reads {
                    let columns = read.rows.get("columns").and_then(Json::as_array).cloned().unwrap_or_default();
                    let Some(index) =
                        columns.iter().position(|c| c.as_str().is_some_and(|c| c.eq_ignore_ascii_case(column)))
                    else {
                        continue;
                    };
                    for row in read.rows.get("values").and_then(Json::as_array).into_iter().flatten() {
                        if let Some(value) = row.get(index) {
                            leaves(value, &mut secrets);
                        }
                    }
                }
                for command in &case.expect.commands {
                    for part in ["row", "key", "changes"] {
                        let Some(Json::Object(fields)) = command.get("op").and_then(|op| op.get(part)) else {
                            continue;
                        };
                        for (name, value) in fields {
                            if name.eq_ignore_ascii_case(column) {
                                leaves(value, &mut secrets);
                            }
                        }
                    }
                }
            }
        }
    }
    if secrets.is_empty() {
        return Ok(());
    }
    let mut tokens: BTreeMap<String, String> = BTreeMap::new();
    for secret in &secrets {
        let key = secret.to_string();
        let next = format!("redacted-{}", tokens.len() + 1);
        tokens.entry(key).or_insert(next);
    }
    // Values only: never the case's structure (kinds, rounds, outcomes,
    // chains, channels, column names).
    let mut json = serde_json::to_value(&*case).map_err(|e| e.to_string())?;
    if let Some(args) = json.get_mut("args") {
        scrub(args, &secrets, &tokens);
    }
    if let Some(http) = json.get_mut("http") {
        for field in ["uri", "body"] {
            if let Some(value) = http.get_mut(field) {
                scrub(value, &secrets, &tokens);
            }
        }
        for header in http.get_mut("headers").and_then(Json::as_array_mut).into_iter().flatten() {
            if let Some(value) = header.get_mut(1) {
                scrub(value, &secrets, &tokens);
            }
        }
    }
    for read in json.get_mut("reads").and_then(Json::as_array_mut).into_iter().flatten() {
        for field in ["params", "key", "prefix", "statement"] {
            if let Some(value) = read.get_mut(field) {
                scrub(value, &secrets, &tokens);
            }
        }
        if let Some(values) = read.get_mut("rows").and_then(|r| r.get_mut("values")) {
            scrub(values, &secrets, &tokens);
        }
    }
    if let Some(expect) = json.get_mut("expect") {
        if let Some(result) = expect.get_mut("result") {
            scrub(result, &secrets, &tokens);
        }
        for call in expect.get_mut("calls").and_then(Json::as_array_mut).into_iter().flatten() {
            for field in ["args", "results"] {
                if let Some(value) = call.get_mut(field) {
                    scrub(value, &secrets, &tokens);
                }
            }
        }
        for command in expect.get_mut("commands").and_then(Json::as_array_mut).into_iter().flatten() {
            if let Some(Json::Object(op)) = command.get_mut("op") {
                for (name, value) in op.iter_mut() {
                    if name != "kind" {
                        scrub(value, &secrets, &tokens);
                    }
                }
            }
        }
    }
    *case = serde_json::from_value(json).map_err(|e| e.to_string())?;
    Ok(())
}

/// The texts and numbers inside `value`.
fn leaves(value: &Json, out: &mut Vec<Json>) {
    match value {
        Json::String(s) if !s.is_empty() => out.push(value.clone()),
        Json::Number(_) => out.push(value.clone()),
        Json::Array(items) => items.iter().for_each(|v| leaves(v, out)),
        Json::Object(fields) => fields.values().for_each(|v| leaves(v, out)),
        _ => {}
    }
}

/// Replaces every secret in `json`: a whole value by its token, and a text
/// secret inside a longer text too.
fn scrub(json: &mut Json, secrets: &[Json], tokens: &BTreeMap<String, String>) {
    match json {
        Json::String(text) => {
            if let Some(token) = tokens.get(&Json::String(text.clone()).to_string()) {
                *text = token.clone();
                return;
            }
            for secret in secrets {
                let Json::String(s) = secret else { continue };
                if s.len() >= MIN_INSIDE && text.contains(s.as_str()) {
                    let token = &tokens[&secret.to_string()];
                    *text = text.replace(s.as_str(), token);
                }
            }
            // A number's digits inside a text (a JSON payload) go too.
            for secret in secrets {
                let Json::Number(n) = secret else { continue };
                let digits = n.to_string();
                if digits.len() >= MIN_INSIDE && text.contains(&digits) {
                    *text = text.replace(&digits, &tokens[&secret.to_string()]);
                }
            }
        }
        Json::Number(_) => {
            if let Some(token) = tokens.get(&json.to_string()) {
                *json = Json::String(token.clone());
            }
        }
        Json::Array(items) => items.iter_mut().for_each(|v| scrub(v, secrets, tokens)),
        Json::Object(fields) => fields.values_mut().for_each(|v| scrub(v, secrets, tokens)),
        _ => {}
    }
}
