//! `sluice test`: replay case files and say, command by command, where the
//! scope now differs from the case.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value as Json;

use super::{Case, Expected};
use crate::registry::Registry;

/// How one case went.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The case file.
    pub path: PathBuf,
    /// What differs, for people; empty when it passed.
    pub differences: Vec<String>,
}

impl Verdict {
    /// Whether the case passed.
    pub fn passed(&self) -> bool {
        self.differences.is_empty()
    }
}

/// The case files under `paths`: each file, and each `*.json` under each
/// directory, in name order.
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut dirs = vec![path.clone()];
            while let Some(dir) = dirs.pop() {
                let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                for entry in entries.flatten() {
                    let p = entry.path();
                    if p.is_dir() {
                        dirs.push(p);
                    } else if p.extension().is_some_and(|e| e == "json") {
                        found.push(p);
                    }
                }
            }
        } else if path.exists() {
            found.push(path.clone());
        } else {
            return Err(format!("{}: no such file or directory", path.display()));
        }
    }
    found.sort();
    Ok(found)
}

/// Replays the case in `path`; with `update`, a case that differs is
/// rewritten with what the scope did now (its reads kept).
pub fn check(registry: &Arc<Registry>, path: &Path, update: bool) -> Verdict {
    let verdict = |differences| Verdict { path: path.to_path_buf(), differences };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return verdict(vec![format!("cannot read it: {e}")]),
    };
    let mut case: Case = match serde_json::from_str(&text) {
        Ok(case) => case,
        Err(e) => return verdict(vec![format!("not a case: {e}")]),
    };
    let replayed = match super::replay(registry, &case) {
        Ok(replayed) => replayed,
        Err(e) => return verdict(vec![e]),
    };
    let mut differences: Vec<String> =
        replayed.unrecorded.iter().map(|r| format!("a read the case does not hold: {r}")).collect();
    differences.extend(compare(&case.expect, &replayed.actual));
    if update && !differences.is_empty() && replayed.unrecorded.is_empty() {
        case.expect = replayed.actual;
        return match write(path, &case) {
            Ok(()) => verdict(Vec::new()),
            Err(e) => verdict(vec![e]),
        };
    }
    verdict(differences)
}

/// The differences between what a case expects and what the scope did.
pub fn compare(expected: &Expected, actual: &Expected) -> Vec<String> {
    let mut out = Vec::new();
    if expected.ending != actual.ending {
        out.push(format!("the scope was {}, where the case expects it {}", actual.ending, expected.ending));
    }
    if expected.result != actual.result {
        out.push(format!("the result is {}, where the case expects {}", actual.result, expected.result));
    }
    for (what, want, got) in [
        (
            "commands",
            expected.commands.iter().map(line).collect::<Vec<_>>(),
            actual.commands.iter().map(line).collect::<Vec<_>>(),
        ),
        (
            "calls between services",
            expected.calls.iter().map(call_line).collect(),
            actual.calls.iter().map(call_line).collect::<Vec<_>>(),
        ),
    ] {
        if want != got {
            let mut lines = vec![format!("the {what} differ (- expected, + now):")];
            lines.extend(lines_diff(&want, &got));
            out.push(lines.join("\n"));
        }
    }
    out
}

/// One call between services on one line: `orders.place →
/// inventory.reserve(1, 3) -> [{"ok":null}]`.
fn call_line(call: &Json) -> String {
    let strings = |key: &str| -> Vec<String> {
        call.get(key)
            .and_then(Json::as_array)
            .map(|items| items.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect())
            .unwrap_or_default()
    };
    let args: Vec<String> =
        call.get("args").and_then(Json::as_array).map(|a| a.iter().map(Json::to_string).collect()).unwrap_or_default();
    let results = call.get("results").map(Json::to_string).unwrap_or_default();
    let callee = call.get("call").and_then(Json::as_str).unwrap_or_default();
    format!("{} → {callee}({}) -> {results}", strings("by").join(" → "), args.join(", "))
}

/// One command on one line: `round 1: orders.place → inventory.reserve on
/// main: {op} -> {outcome}`.
fn line(command: &Json) -> String {
    let text = |key: &str| command.get(key).map(|v| v.to_string()).unwrap_or_default();
    let chain: Vec<&str> = command
        .get("chain")
        .and_then(Json::as_array)
        .map(|c| c.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    let round = command.get("round").map(|r| format!("round {r}: ")).unwrap_or_default();
    let outcome = command.get("outcome").map(|o| format!(" -> {o}")).unwrap_or_default();
    let expect = command.get("expect").map(|e| format!(" (expects {e} row(s))")).unwrap_or_default();
    let channel = command.get("channel").and_then(Json::as_str).unwrap_or_default();
    format!("{round}{} on {channel}: {}{expect}{outcome}", chain.join(" → "), text("op"))
}

/// A line diff of `want` and `got`: the lines of both in order, common ones
/// with two spaces, removed with `- `, added with `+ ` (longest common
/// subsequence).
fn lines_diff(want: &[String], got: &[String]) -> Vec<String> {
    let (n, m) = (want.len(), got.len());
    let mut common = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            common[i][j] =
                if want[i] == got[j] { common[i + 1][j + 1] + 1 } else { common[i + 1][j].max(common[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && want[i] == got[j] {
            out.push(format!("    {}", want[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || common[i][j + 1] >= common[i + 1][j]) {
            out.push(format!("  + {}", got[j]));
            j += 1;
        } else {
            out.push(format!("  - {}", want[i]));
            i += 1;
        }
    }
    out
}

/// Replays every case under `paths` and returns the verdicts.
pub fn run(registry: &Arc<Registry>, paths: &[PathBuf], update: bool) -> Result<Vec<Verdict>, String> {
    Ok(files(paths)?.iter().map(|path| check(registry, path, update)).collect())
}

/// Writes `case` to `path` as pretty JSON.
pub fn write(path: &Path, case: &Case) -> Result<(), String> {
    let text = serde_json::to_string_pretty(case).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::super::replay;
    use super::*;

    #[test]
    fn a_diff_shows_what_went_and_what_came() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(lines_diff(&s(&["a", "b", "c"]), &s(&["a", "x", "c"])), s(&["    a", "  + x", "  - b", "    c"]));
        assert_eq!(lines_diff(&s(&[]), &s(&["n"])), s(&["  + n"]));
    }

    #[test]
    fn replay_reads_unknown_kinds_are_refused() {
        let state = replay::State::new(&Case {
            about: String::new(),
            call: "a.b".into(),
            args: Vec::new(),
            http: None,
            channels: Default::default(),
            reads: Vec::new(),
            expect: Expected { result: Json::Null, ending: "saved".into(), commands: Vec::new(), calls: Vec::new() },
        });
        assert!(replay::ReplayChannel::new("main", "postgres", &state).is_err());
        assert!(replay::ReplayChannel::new("main", "sql", &state).is_ok());
    }
}
