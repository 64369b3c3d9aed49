//! The `files` channel: one directory, whose files services read at once and
//! write through commands applied at save. A directory is a key-value store
//! whose keys are relative paths, so the channel takes the `kv` reads
//! (`from.get`, `from.list`) and commands (`to.set`, `to.remove`,
//! `to.compare-and-swap`, `to.increment`), granted by path prefix (`keys`,
//! `read-keys`).
//!
//! - Every path is checked when it is read or queued: relative, `/`
//!   separated, no empty, `.` or `..` component, no NUL or `\`, no
//!   component that is a symbolic link. Every access goes through a
//!   [`cap_std::fs::Dir`] opened on the directory, which refuses to leave it
//!   whatever the path says.
//! - A save stages each write as a file beside its target
//!   (`.sluice-stage-…`), renames the staged files into place at commit, in
//!   queue order, and removes them when the save rolls back.
//! - Staged files a dead host left are removed when the channel opens
//!   (their process no longer runs here, or they are over an hour old).
//! - With `outbox = "NAME"` the renames are written in advance to that
//!   `sql` channel's outbox, in the save's transaction ([`journal`]): a host
//!   killed after the data committed loses none of them.
//! - It commits after the data channels ([`CommitStage::Effects`]): a file
//!   appears only once the rows it goes with are durable. One save at a time
//!   per channel within this host, so what a save checked holds to its
//!   commit; another process writing the directory is not held off.

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use cap_std::fs::Dir;

mod config;
pub mod journal;

pub use config::FilesConfig;

use super::kv::{Held, MAX_LIST, check_key, check_prefix, reading, value_rows};
use super::outbox::Outbox;
use super::turns::{Turn, Turns};
use super::{Caller, Channel, ChannelError, CommitStage, KeyReads, Reading, Recheck, Transaction};
use crate::bindings::{Rows, Value};
use crate::channels::ops::{Kind, Operation, Outcome};
use journal::Step;

/// The prefix of staged files: no path may have a component starting with it.
const STAGE: &str = ".sluice-stage-";

/// How old a staged file of a live process must be before it counts as
/// left over.
const STALE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes the staged files a host left when it died (killed between
/// staging and commit): those of a process that no longer runs on this
/// machine, and any over an hour old. Their saves never committed them; the
/// targets were never touched (a rename is the only write to a target).
/// Applies, in order, the steps of commits a host did not finish (it was
/// killed after the data committed): before this host saves anything. A
/// step that can never succeed (a directory where its file goes) is dead at
/// once, its staged file removed, and the error names its service; at the
/// first step that fails otherwise, the rest is left, in order, to the
/// relay. No step stops the channel from opening, so no service can stop
/// the host from starting.
fn recover(dir: &Dir, outbox: &Outbox) -> Result<(), ChannelError> {
    let lease = std::time::Duration::from_secs(60);
    let owner = format!("recovery-{}", std::process::id());
    loop {
        let rows = outbox.claim(&owner, 1000, lease, std::time::Duration::ZERO, &[])?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut done = Vec::new();
        for row in rows {
            let Ok(step) = serde_json::from_slice::<Step>(&row.body) else { continue };
            match journal::apply(dir, &step) {
                Ok(()) => {
                    tracing::info!("{} {}: a step of a commit a host did not finish", row.target, step.path);
                    done.push(row.id);
                }
                Err(e) if journal::permanent(&e) => {
                    tracing::error!(
                        service = %row.service,
                        "{} {}: a step of a commit a host did not finish can never be applied ({e}); it is dead and the path keeps what it held",
                        row.target,
                        step.path
                    );
                    outbox.failed(&row.id, &format!("{}: {e}", step.path), None)?;
                    if let Some(staged) = &step.staged {
                        let _ = dir.remove_file(staged);
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        service = %row.service,
                        "{} {}: a step of a commit a host did not finish failed ({e}); it and the steps after it are left to the relay",
                        row.target,
                        step.path
                    );
                    outbox.delivered_all(&done)?;
                    outbox.failed(&row.id, &format!("{}: {e}", step.path), Some(std::time::Duration::ZERO))?;
                    return outbox.release(&owner);
                }
            }
        }
        outbox.delivered_all(&done)?;
    }
}

fn sweep(dir: &Dir, at: &str, kept: &std::collections::HashSet<String>) {
    let Ok(entries) = (if at.is_empty() { dir.entries() } else { dir.read_dir(at) }) else { return };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else { continue };
        let path = if at.is_empty() { name.clone() } else { format!("{at}/{name}") };
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            sweep(dir, &path, kept);
            continue;
        }
        if kept.contains(&path) {
            continue;
        }
        let Some(rest) = name.strip_prefix(STAGE) else { continue };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let gone = pid.is_some_and(|pid| {
            pid != std::process::id()
                && std::path::Path::new("/proc/self").exists()
                && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        let old = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.into_std().elapsed().ok())
            .is_some_and(|age| age > STALE);
        if gone || old || pid.is_none() {
            match dir.remove_file(&path) {
                Ok(()) => tracing::info!("removed {path}, staged by a save that never committed"),
                Err(e) => tracing::warn!("cannot remove the left-over {path}: {e}"),
            }
        }
    }
}

/// A directory used as a `files` channel.
pub struct FilesChannel {
    name: String,
    root: PathBuf,
    dir: Arc<Dir>,
    turns: Arc<Turns>,
    /// Where its commits are written in advance, with `outbox = "NAME"`
    /// ([`journal`]).
    journal: Option<Arc<Outbox>>,
}

impl FilesChannel {
    /// The channel `name` on the directory `root`, created if missing.
    pub fn open(name: &str, root: &str, journal: Option<Arc<Outbox>>) -> Result<Self, ChannelError> {
        let root = PathBuf::from(root);
        std::fs::create_dir_all(&root)
            .map_err(|e| ChannelError::Unavailable(format!("cannot create {}: {e}", root.display())))?;
        let dir = Dir::open_ambient_dir(&root, cap_std::ambient_authority())
            .map_err(|e| ChannelError::Unavailable(format!("cannot open {}: {e}", root.display())))?;
        let mut kept = std::collections::HashSet::new();
        if let Some(outbox) = &journal {
            recover(&dir, outbox)?;
            kept = journal::kept(outbox);
        }
        sweep(&dir, "", &kept);
        Ok(FilesChannel { name: name.to_string(), root, dir: Arc::new(dir), turns: Turns::new(1), journal })
    }

    /// The directory.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// The directory handle, for the relay of its journal.
    pub fn dir(&self) -> Arc<Dir> {
        Arc::clone(&self.dir)
    }
}

/// Checks a path's form, then that no component of it that exists is a
/// symbolic link.
fn check_path(dir: &Dir, path: &str) -> Result<(), ChannelError> {
    let refuse = |why: &str| Err(ChannelError::Invalid(format!("path {path:?} {why}")));
    if path.starts_with('/') {
        return refuse("is absolute; paths are relative to the channel's directory");
    }
    if path.contains('\0') || path.contains('\\') {
        return refuse("holds a NUL or a backslash");
    }
    // Every component's form first, then the walk that stops at the first
    // component that does not exist yet.
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return refuse("has an empty, `.` or `..` component");
        }
        if part.starts_with(STAGE) {
            return refuse("names a file the host stages");
        }
    }
    let mut prefix = String::new();
    for part in path.split('/') {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        match dir.symlink_metadata(&prefix) {
            Ok(meta) if meta.is_symlink() => return refuse(&format!("goes through the symbolic link {prefix}")),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => break,
            Err(e) => return Err(io_error(&prefix, e)),
        }
    }
    Ok(())
}

/// A file's contents, or `None` when it does not exist; at most
/// `max_bytes`, read no further than one byte past them (a file that grows
/// while it is read is still not held whole).
fn read_file(dir: &Dir, path: &str, max_bytes: usize) -> Result<Option<Vec<u8>>, ChannelError> {
    let too_large = |len: u64| ChannelError::TooLarge { bytes: usize::try_from(len).unwrap_or(usize::MAX) };
    match dir.metadata(path) {
        Ok(meta) if meta.is_dir() => return Ok(None),
        Ok(meta) if meta.len() > max_bytes as u64 => return Err(too_large(meta.len())),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, e)),
    }
    let file = match dir.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, e)),
    };
    let mut bytes = Vec::new();
    let limit = u64::try_from(max_bytes).unwrap_or(u64::MAX).saturating_add(1);
    std::io::Read::read_to_end(&mut std::io::Read::take(file, limit), &mut bytes).map_err(|e| io_error(path, e))?;
    if bytes.len() > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(Some(bytes))
}

/// The files under `prefix`, at most `limit`, in byte order: walks the
/// directory the prefix ends in, not following symbolic links, checking the
/// deadline as it goes.
fn list_files(dir: &Dir, prefix: &str, limit: u32, caller: &Caller) -> Result<Vec<String>, ChannelError> {
    let base = prefix.rfind('/').map_or("", |i| &prefix[..i]);
    let mut found = Vec::new();
    let mut pending = vec![base.to_string()];
    while let Some(at) = pending.pop() {
        if Instant::now() >= caller.deadline {
            return Err(ChannelError::Timeout);
        }
        let entries = if at.is_empty() { dir.entries() } else { dir.read_dir(&at) };
        let entries = match entries {
            Ok(entries) => entries,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => continue,
            Err(e) => return Err(io_error(&at, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&at, e))?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            if name.starts_with(STAGE) {
                continue;
            }
            let path = if at.is_empty() { name } else { format!("{at}/{name}") };
            let kind = entry.file_type().map_err(|e| io_error(&path, e))?;
            if kind.is_dir() && (path.starts_with(prefix) || prefix.starts_with(&format!("{path}/"))) {
                pending.push(path);
            } else if kind.is_file() && path.starts_with(prefix) {
                found.push(path);
            }
        }
    }
    found.sort();
    found.truncate(limit as usize);
    Ok(found)
}

/// `GET path` as a reading: a `value` column, no row or one.
fn get(dir: &Dir, path: &str, max_bytes: usize) -> Result<Reading, ChannelError> {
    reading(value_rows(read_file(dir, path, max_bytes)?), max_bytes)
}

/// `LIST prefix` as a reading of `key` and `value` columns.
fn list(dir: &Dir, prefix: &str, limit: u32, caller: &Caller, max_bytes: usize) -> Result<Reading, ChannelError> {
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    for path in list_files(dir, prefix, limit, caller)? {
        let Some(value) = read_file(dir, &path, max_bytes.saturating_sub(bytes))? else { continue };
        bytes += path.len() + value.len();
        rows.push(vec![Value::Text(path), Value::Blob(value)]);
    }
    reading(Rows { columns: vec!["key".into(), "value".into()], values: rows }, max_bytes)
}

fn io_error(path: &str, e: std::io::Error) -> ChannelError {
    ChannelError::Unavailable(format!("{path}: {e}"))
}

impl KeyReads for FilesChannel {
    fn get(&self, key: &str, caller: &Caller, max_bytes: usize) -> Result<Reading, ChannelError> {
        check_key(caller, key, false)?;
        check_path(&self.dir, key)?;
        let mut reading = get(&self.dir, key, max_bytes)?;
        reading.recheck = Some(Recheck {
            channel: self.name.clone(),
            statement: "GET".into(),
            params: vec![Value::Text(key.into())],
            host: false,
            asked: format!("get {key}"),
        });
        Ok(reading)
    }

    fn list(&self, prefix: &str, limit: u32, caller: &Caller, max_bytes: usize) -> Result<Reading, ChannelError> {
        check_prefix(caller, prefix)?;
        let limit = limit.min(MAX_LIST);
        let mut reading = list(&self.dir, prefix, limit, caller, max_bytes)?;
        reading.recheck = Some(Recheck {
            channel: self.name.clone(),
            statement: "LIST".into(),
            params: vec![Value::Text(prefix.into()), Value::Integer(limit.into())],
            host: false,
            asked: format!("list {prefix} (at most {limit})"),
        });
        Ok(reading)
    }
}

impl Channel for FilesChannel {
    fn kind(&self) -> Kind {
        crate::channels::kv::KIND
    }

    fn keys(&self) -> Option<&dyn KeyReads> {
        Some(self)
    }

    fn commit_stage(&self) -> CommitStage {
        CommitStage::Effects
    }

    fn check_command(&self, op: &Operation, caller: &Caller) -> Result<(), ChannelError> {
        let key = super::kv::check_command(op, caller)?;
        check_path(&self.dir, key)
    }

    fn begin(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        let turn = self.turns.one()?;
        Ok(Box::new(FilesTransaction {
            dir: Arc::clone(&self.dir),
            pending: HashMap::new(),
            order: Vec::new(),
            dirs: HashSet::new(),
            writers: HashMap::new(),
            writer: None,
            journal: self.journal.clone(),
            recorded: Vec::new(),
            turn: Some(turn),
        }))
    }

    fn journal(&self) -> Option<&str> {
        self.journal.as_deref().map(Outbox::base_name)
    }
}

/// One save's writes: each path's staged file (`None`: removed), in the
/// order first written.
struct FilesTransaction {
    dir: Arc<Dir>,
    pending: HashMap<String, Option<String>>,
    order: Vec<String>,
    /// The directories this save's writes need (`a` and `a/b` for `a/b/c`):
    /// none of them may be written as a file in the same save.
    dirs: HashSet<String>,
    /// The service whose command wrote each path last, for its journal row.
    writers: HashMap<String, Arc<str>>,
    /// The service of the command being applied.
    writer: Option<Arc<str>>,
    /// The outbox its steps are written to in advance, if any.
    journal: Option<Arc<Outbox>>,
    /// The ids of the rows written for this save's steps.
    recorded: Vec<String>,
    /// This channel's one turn at saving, given back when dropped (or, with
    /// an outbox, once the renames are done, before the steps are marked).
    turn: Option<Turn>,
}

impl FilesTransaction {
    /// What `path` holds with this save's writes, read only when it is at
    /// most `max_bytes` long (its length is looked at first).
    fn current(&self, path: &str, max_bytes: usize) -> Result<Held, ChannelError> {
        let at = match self.pending.get(path) {
            Some(Some(staged)) => staged.as_str(),
            Some(None) => return Ok(Held::Unset),
            None => path,
        };
        match read_file(&self.dir, at, max_bytes) {
            Ok(value) => Ok(Held::of(value.as_deref(), max_bytes)),
            Err(ChannelError::TooLarge { .. }) => Ok(Held::Longer),
            Err(e) => Err(e),
        }
    }

    /// Refuses, before anything commits, a write whose rename could not
    /// succeed at commit: onto a directory, below a path this save writes
    /// as a file, or onto a path this save writes below (as a directory).
    fn check_write(&self, path: &str) -> Result<(), ChannelError> {
        let refuse = |why: String| Err(ChannelError::Invalid(format!("path {path:?} {why}")));
        if self.dirs.contains(path) {
            return refuse("is a directory of another path this save writes: it cannot also be a file".into());
        }
        for (i, _) in path.match_indices('/') {
            let parent = &path[..i];
            if matches!(self.pending.get(parent), Some(Some(_))) {
                return refuse(format!(
                    "is below {parent:?}, which this save writes as a file: a path cannot be both a file and a directory"
                ));
            }
        }
        match self.dir.symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => refuse("is a directory: only a file can be written".into()),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(path, e)),
        }
    }

    /// Whether `path` holds a file now (not a directory): a removal of
    /// anything else has nothing to do.
    fn is_file(&self, path: &str) -> Result<bool, ChannelError> {
        match self.dir.symlink_metadata(path) {
            Ok(meta) => Ok(!meta.is_dir()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(path, e)),
        }
    }

    /// Stages `value` for `path` (or its removal), replacing what this save
    /// staged for it before. Every check that the commit's rename (or
    /// removal) will succeed is made here, before any channel commits.
    fn stage(&mut self, path: &str, value: Option<&[u8]>) -> Result<(), ChannelError> {
        match value {
            Some(_) => self.check_write(path)?,
            // Not written by this save and no file there: nothing to remove.
            None if !self.pending.contains_key(path) && !self.is_file(path)? => return Ok(()),
            None => {}
        }
        let staged = match value {
            Some(bytes) => {
                let (parent, file) = path.rsplit_once('/').map_or(("", path), |(p, f)| (p, f));
                if !parent.is_empty() {
                    self.dir.create_dir_all(parent).map_err(|e| io_error(parent, e))?;
                }
                // The process id says, after a crash, whose file it was.
                let name = format!("{STAGE}{}-{}-{file}", std::process::id(), uuid::Uuid::new_v4().simple());
                let staged = if parent.is_empty() { name } else { format!("{parent}/{name}") };
                self.dir.write(&staged, bytes).map_err(|e| io_error(path, e))?;
                Some(staged)
            }
            None => None,
        };
        if value.is_some() {
            for (i, _) in path.match_indices('/') {
                self.dirs.insert(path[..i].to_string());
            }
        }
        if let Some(writer) = &self.writer {
            self.writers.insert(path.to_string(), Arc::clone(writer));
        }
        match self.pending.insert(path.to_string(), staged) {
            Some(Some(earlier)) => {
                let _ = self.dir.remove_file(earlier);
            }
            Some(None) => {}
            None => self.order.push(path.to_string()),
        }
        Ok(())
    }
}

impl Transaction for FilesTransaction {
    fn apply(&mut self, op: &Operation, caller: &Caller) -> Result<Outcome, ChannelError> {
        if let Operation::Kv(op) = op {
            check_path(&self.dir, op.written())?;
        }
        self.writer = caller.service.clone();
        super::kv::apply(self, op)
    }

    fn digest(
        &mut self,
        statement: &str,
        params: &[Value],
        caller: &Caller,
        max_bytes: usize,
    ) -> Result<u64, ChannelError> {
        match (statement, params) {
            ("GET", [Value::Text(path)]) => Ok(get(&self.dir, path, max_bytes)?.digest),
            ("LIST", [Value::Text(prefix), Value::Integer(limit)]) => {
                let limit = u32::try_from(*limit).unwrap_or(MAX_LIST);
                Ok(list(&self.dir, prefix, limit, caller, max_bytes)?.digest)
            }
            _ => Err(ChannelError::Invalid(format!("a files channel cannot run {statement:?} again"))),
        }
    }

    /// Writes this save's steps to the outbox in `into` (its save
    /// transaction), when the channel has one.
    fn journal(&mut self, into: &mut dyn Transaction, caller: &Caller) -> Result<(), ChannelError> {
        let Some(outbox) = self.journal.clone() else { return Ok(()) };
        let steps: Vec<(Step, &str)> = self
            .order
            .iter()
            .filter_map(|path| {
                let step = Step { path: path.clone(), staged: self.pending.get(path)?.clone() };
                Some((step, self.writers.get(path).map_or("host", |w| &**w)))
            })
            .collect();
        self.recorded = journal::record(&outbox, into, &steps, caller)?;
        Ok(())
    }

    /// Renames each staged file into place (and removes each removed path)
    /// in the order first written. A failure part way leaves the earlier
    /// paths written: the error says which path failed. With an outbox, the
    /// steps were committed with the data: the ones not done here are done
    /// by the relay, and the staged files stay for it.
    fn commit(mut self: Box<Self>) -> Result<(), ChannelError> {
        let journaled = self.journal.is_some() && !self.recorded.is_empty();
        for path in std::mem::take(&mut self.order) {
            let Some(staged) = self.pending.get(&path).cloned() else { continue };
            let step = Step { path: path.clone(), staged };
            if let Err(e) = journal::apply(&self.dir, &step) {
                if journaled {
                    self.pending.clear();
                }
                return Err(io_error(&path, e));
            }
            self.pending.remove(&path);
        }
        // The turn goes back before the steps are marked: marking waits
        // for the outbox channel's own turn, which a save that holds it may
        // be waiting to trade for this one.
        self.turn = None;
        if let (Some(outbox), true) = (&self.journal, journaled)
            && let Err(e) = outbox.delivered_all(&self.recorded)
        {
            // The relay finds the steps done (their staged files gone).
            tracing::warn!("the steps of a files commit could not be marked done: {e}");
        }
        Ok(())
    }
}

impl super::kv::Keys for FilesTransaction {
    fn current(&mut self, key: &str, max_bytes: usize) -> Result<Held, ChannelError> {
        FilesTransaction::current(self, key, max_bytes)
    }

    fn write(&mut self, key: &str, value: Option<Vec<u8>>) -> Result<(), ChannelError> {
        self.stage(key, value.as_deref())
    }
}

impl Drop for FilesTransaction {
    /// A save that did not commit leaves no staged file behind.
    fn drop(&mut self) {
        for staged in self.pending.values().flatten() {
            let _ = self.dir.remove_file(staged);
        }
    }
}
