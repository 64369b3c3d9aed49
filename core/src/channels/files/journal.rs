//! A files channel with an `outbox`: its commits are written in advance,
//! as outbox rows in the save transaction of that `sql` channel, so that a
//! host killed between the data commit and the renames loses none of them.
//!
//! Each row is one step, `{"path", "staged"}` (no `staged`: remove the
//! path). The save writes the rows after its last round, before anything
//! commits; the files commit then renames (or removes) and marks the rows
//! delivered. Rows a commit did not get to (the host died, or a rename
//! failed) are applied by the channel's relay in `sluice serve` once they
//! are a few seconds old. A staged file is only ever renamed once, so a
//! step applied twice finds its staged file gone and is done: a late step
//! never puts back older content. Staged files that pending rows name are
//! kept by the sweep at open.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};

use crate::channels::headers::Headers;
use crate::channels::outbox::relay::{Deliver, Delivery, Failure, JOURNAL_AFTER};
use crate::channels::outbox::{Entry, Outbox};
use crate::channels::{Caller, ChannelError, Transaction};

/// One step of a commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Step {
    /// The path written or removed.
    pub path: String,
    /// The staged file renamed onto it (`None`: the path is removed).
    pub staged: Option<String>,
}

/// Writes `steps`, each with the service that wrote its path, as rows of
/// `outbox` in `tx`; returns their ids.
pub(super) fn record(
    outbox: &Outbox,
    tx: &mut dyn Transaction,
    steps: &[(Step, &str)],
    caller: &Caller,
) -> Result<Vec<String>, ChannelError> {
    let mut ids = Vec::with_capacity(steps.len());
    for (step, service) in steps {
        let body = serde_json::to_vec(step).map_err(|e| ChannelError::Invalid(e.to_string()))?;
        let target = match step.staged {
            Some(_) => format!("write {}", step.path),
            None => format!("remove {}", step.path),
        };
        ids.push(outbox.insert(tx, service, &target, &Headers::default(), &body, caller)?);
    }
    Ok(ids)
}

/// Applies one step: renames its staged file onto its path, or removes the
/// path. A staged file already gone was renamed by an earlier try.
pub(super) fn apply(dir: &Dir, step: &Step) -> std::io::Result<()> {
    let done = match &step.staged {
        Some(staged) => dir.rename(staged, dir, &step.path),
        None => dir.remove_file(&step.path),
    };
    match done {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether a step that failed with `e` can never succeed as the directory
/// stands: a directory where its file goes, or a file where one of its
/// directories goes. Trying again cannot help, so the step is dead at once.
pub(super) fn permanent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::IsADirectory
            | ErrorKind::NotADirectory
            | ErrorKind::DirectoryNotEmpty
            | ErrorKind::InvalidInput
            | ErrorKind::InvalidFilename
    )
}

/// The staged files that rows not yet applied name: the sweep keeps them.
pub(super) fn kept(outbox: &Outbox) -> HashSet<String> {
    let bodies = outbox.pending_bodies().unwrap_or_default();
    bodies.iter().filter_map(|b| serde_json::from_slice::<Step>(b).ok()).filter_map(|s| s.staged).collect()
}

/// The relay's part: the steps a commit did not get to.
pub struct Steps {
    /// The channel's directory.
    pub dir: Arc<Dir>,
}

impl Steps {
    async fn run(&self, entry: &Entry) -> Result<(), Failure> {
        let step: Step = serde_json::from_slice(&entry.body).map_err(|e| Failure {
            reason: format!("a malformed step: {e}"),
            permanent: true,
            answer: None,
        })?;
        apply(&self.dir, &step).map_err(|e| {
            let permanent = permanent(&e);
            if let (true, Some(staged)) = (permanent, &step.staged) {
                let _ = self.dir.remove_file(staged);
            }
            Failure { reason: format!("{}: {e}", step.path), permanent, answer: None }
        })
    }
}

impl Deliver for Steps {
    fn deliver<'a>(&'a self, entry: &'a Entry) -> Delivery<'a> {
        Box::pin(async move { self.run(entry).await.map(|()| None) })
    }

    /// A step is tried until it is done: it is a committed write. One that
    /// can never succeed ([`permanent`]) is dead at once.
    fn tries(&self) -> Option<u32> {
        None
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    fn min_age(&self) -> Duration {
        JOURNAL_AFTER
    }

    /// Steps go in the order they were written: a later write of a path
    /// lands after an earlier one.
    fn ordered(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step whose target is a directory, or whose parent is a file, fails
    /// for good; one whose staged file is gone was done by an earlier try.
    #[test]
    fn steps_that_can_never_succeed_are_told_apart() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = Dir::open_ambient_dir(root.path(), cap_std::ambient_authority()).expect("open");
        dir.create_dir_all("d/x").expect("a directory");
        dir.write("f", b"a file").expect("a file");
        for (path, staged) in [("d", Some("s1")), ("f/y", Some("s2")), ("d", None)] {
            if let Some(staged) = staged {
                dir.write(staged, b"staged").expect("staged");
            }
            let step = Step { path: path.into(), staged: staged.map(String::from) };
            let e = apply(&dir, &step).expect_err(path);
            assert!(permanent(&e), "{path}: {e} ({:?})", e.kind());
        }
        let gone = Step { path: "g".into(), staged: Some("never-staged".into()) };
        apply(&dir, &gone).expect("a staged file already renamed is a step done");
        let busy = std::io::Error::from(ErrorKind::TimedOut);
        assert!(!permanent(&busy));
    }
}
