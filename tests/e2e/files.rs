//! The `files` channel on a real directory: the kv semantics with paths as
//! keys, paths that would leave the directory refused when read or queued,
//! and staged writes that appear only when the save commits.

use sluice_host::call::{self, Mode};
use sluice_host::{Host, ScopeError};
use wasmtime::component::Val;

use crate::support::Fixture;
use crate::support::{bytes, s};

/// A host over `services` with `main` (SQLite, the example schema) and a
/// `files` channel on `FIXTURE/files`.
fn files_host(services: &[&str]) -> (Fixture, Host, std::path::PathBuf) {
    let (f, options) = files_config(services, "");
    let host = Host::open(&options).expect("host with a files channel");
    let root = f.dir.path().join("files");
    (f, host, root)
}

/// The fixture and host options of [`files_host`], with `extra` lines in
/// the files channel's table.
fn files_config(services: &[&str], extra: &str) -> (Fixture, sluice_host::HostOptions) {
    let f = Fixture::new(services);
    f.migrate();
    let config = f.dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[channels.main]\nkind = \"sql\"\nurl = \"sqlite://{}\"\n\n[channels.files]\nkind = \"files\"\npath = \"files\"\n{extra}",
            f.db_path().display()
        ),
    )
    .expect("config");
    let mut options = f.options();
    options.config = Some(config);
    (f, options)
}

/// What the probe is told for `function(args)`, as JSON.
fn told(host: &Host, function: &str, args: &[Val]) -> String {
    let report = call::run(host, "probe", function, args, Mode::Save).expect("call");
    sluice_host::values::to_json(&report.results[0]).to_string()
}

/// The kv semantics (set, get, list in byte order, remove, increment,
/// compare-and-swap, a kept read that changed) hold with files.
#[test]
fn kv_semantics_on_files() {
    let (_f, host, root) = files_host(&["probe"]);
    crate::kv::semantics(&host, "files", "t/");
    assert_eq!(std::fs::read_to_string(root.join("t/n")).expect("t/n"), "42");
    let leftovers: Vec<_> = std::fs::read_dir(root.join("t"))
        .expect("t")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".sluice-stage-"))
        .collect();
    assert!(leftovers.is_empty(), "staged files left behind: {leftovers:?}");
}

/// Absolute paths, `..`, empty components and paths through a symbolic
/// link are refused when read or queued, naming the path; nothing is
/// written outside the directory.
#[test]
fn paths_cannot_leave_the_directory() {
    let (f, host, root) = files_host(&["probe"]);
    let outside = f.dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    std::os::unix::fs::symlink(&outside, root.join("link")).expect("symlink");
    for (path, why) in [
        ("../outside/x", "has an empty, `.` or `..` component"),
        ("a/../../outside/x", "has an empty, `.` or `..` component"),
        ("/etc/passwd", "is absolute"),
        ("a//b", "has an empty, `.` or `..` component"),
        ("link/x", "goes through the symbolic link link"),
        ("a/.sluice-stage-x", "names a file the host stages"),
    ] {
        let set = told(&host, "kv-set", &[s("files"), s(path), bytes(b"escaped")]);
        assert!(set.contains(why), "set {path}: {set}");
        let get = told(&host, "kv-get", &[s("files"), s(path)]);
        assert!(get.contains(why), "get {path}: {get}");
    }
    assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 0, "a file was written outside");
}

/// A file queued in a scope whose save fails on the data channel is not
/// written, and no staged file is left behind; with the data saved it is.
#[test]
fn files_appear_only_when_the_save_commits() {
    let (_f, host, root) = files_host(&["probe", "products"]);
    let mut scope = host.scope();
    scope.call("probe", "kv-set", &[s("files"), s("reports/a.txt"), bytes(b"hello")]).expect("queue the file");
    for _ in 0..2 {
        scope.call("products", "add", &[s("widget"), Val::S64(250)]).expect("add product");
    }
    let error = scope.save().expect_err("the second insert breaks the unique name");
    assert!(matches!(error, ScopeError::Command { .. }), "{error}");
    drop(scope);
    assert!(!root.join("reports/a.txt").exists(), "the file was written though the save failed");
    let staged: Vec<_> = std::fs::read_dir(root.join("reports")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(staged.is_empty(), "staged files left behind: {staged:?}");
    let mut scope = host.scope();
    scope.call("probe", "kv-set", &[s("files"), s("reports/a.txt"), bytes(b"hello")]).expect("queue the file");
    scope.call("products", "add", &[s("widget"), Val::S64(250)]).expect("add product");
    scope.save().expect("save");
    assert_eq!(std::fs::read_to_string(root.join("reports/a.txt")).expect("written"), "hello");
}

/// Writes the pending outbox row `r1` of a files step that renames
/// `staged` onto `path` for `service`, as a host killed after main
/// committed leaves it.
fn pending_step(f: &Fixture, service: &str, path: &str, staged: &str) {
    f.db()
        .execute(
            "INSERT INTO sluice_outbox (id, channel, service, target, headers, body, created_ms, next_ms) \
             VALUES ('r1', 'files', ?1, ?2, '[]', ?3, 0, 0)",
            rusqlite::params![
                service,
                format!("write {path}"),
                serde_json::json!({"path": path, "staged": staged}).to_string().into_bytes()
            ],
        )
        .expect("row");
}

/// With `outbox = "main"` a files commit is written in advance in main's
/// save transaction: a commit cut short after the data committed (its row
/// pending, its staged file there) is finished when the channel opens, and
/// a staged file no row names, of a process gone, is removed.
#[test]
fn a_commit_cut_short_is_finished_when_the_channel_opens() {
    let (f, options) = files_config(&["probe"], "outbox = \"main\"\n");
    let host = Host::open(&options).expect("host");
    // A save through the journal: its row is delivered by its own commit.
    let report =
        call::run(&host, "probe", "kv-set", &[s("files"), s("a.txt"), bytes(b"first")], Mode::Save).expect("set");
    assert_eq!(sluice_host::values::to_json(&report.results[0]).to_string(), r#"{"ok":1}"#);
    drop(host);
    let root = f.dir.path().join("files");
    assert_eq!(std::fs::read(root.join("a.txt")).expect("a.txt"), b"first");
    let state: String =
        f.db().query_row("SELECT state FROM sluice_outbox WHERE channel = 'files'", [], |r| r.get(0)).expect("row");
    assert_eq!(state, "delivered");

    // As a host killed after main committed leaves it.
    let dead = ".sluice-stage-999999999-0-a.txt";
    std::fs::write(root.join(dead), b"second").expect("staged");
    std::fs::write(root.join(".sluice-stage-999999999-1-b.txt"), b"orphan").expect("orphan");
    pending_step(&f, "host", "a.txt", dead);
    let host = Host::open(&options).expect("host opens again");
    assert_eq!(std::fs::read(root.join("a.txt")).expect("a.txt"), b"second");
    let left: Vec<String> = std::fs::read_dir(&root)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".sluice-stage-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let state: String =
        f.db().query_row("SELECT state FROM sluice_outbox WHERE id = 'r1'", [], |r| r.get(0)).expect("r1");
    assert_eq!(state, "delivered");
    drop(host);
}

/// The rows of `table` in `f`'s database.
fn count(f: &Fixture, table: &str) -> i64 {
    f.db().query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).expect("count")
}

/// A save whose renames could not all succeed at commit is refused before
/// any channel commits, so nothing of it is applied: a key and a key below
/// it (`d` and `d/x`, in either order), a write onto a directory. A removal
/// of a path that holds no file has nothing to do and does not fail the
/// save. Before, each of the first three failed after `main` had committed.
#[test]
fn a_save_whose_renames_could_not_succeed_is_refused_before_anything_commits() {
    let (f, host, root) = files_host(&["probe", "products"]);
    std::fs::create_dir_all(root.join("existing/dir")).expect("a directory");
    let cases: [&[&str]; 3] = [&["d", "d/x"], &["e/x", "e"], &["existing/dir"]];
    for keys in cases {
        let mut scope = host.scope();
        scope.call("products", "add", &[s("widget"), Val::S64(250)]).expect("add product");
        for key in keys {
            scope.call("probe", "kv-set", &[s("files"), s(key), bytes(b"v")]).expect("queue the file");
        }
        let error = scope.save().expect_err("the save cannot rename all its files");
        let said = error.to_string();
        assert!(matches!(error, ScopeError::Command { .. }), "{keys:?}: {said}");
        assert!(said.contains("probe") && said.contains("directory"), "{keys:?}: {said}");
        drop(scope);
        assert_eq!(count(&f, "products"), 0, "{keys:?}: main committed though the files could not");
        assert!(!root.join(keys[0]).is_file() && !root.join(keys[keys.len() - 1]).is_file(), "{keys:?}");
    }
    let mut scope = host.scope();
    scope.call("products", "add", &[s("widget"), Val::S64(250)]).expect("add product");
    scope.call("probe", "kv-remove", &[s("files"), s("existing/dir")]).expect("queue the removal");
    scope.call("probe", "kv-remove", &[s("files"), s("missing")]).expect("queue the removal");
    scope.save().expect("removing what holds no file is nothing to do");
    assert_eq!(count(&f, "products"), 1);
    assert!(root.join("existing/dir").is_dir());
}

/// A step of a journaled commit that can never be applied (here a
/// directory stands where its file goes, as a service could once leave it)
/// does not stop the host from starting: it is dead, with the path and the
/// cause, its staged file is removed, and saves go on. Before, every start
/// failed until the outbox row was edited by hand.
#[test]
fn a_step_that_can_never_be_applied_does_not_stop_the_host_from_starting() {
    let (f, options) = files_config(&["probe"], "outbox = \"main\"\n");
    drop(Host::open(&options).expect("host"));
    let root = f.dir.path().join("files");
    std::fs::create_dir_all(root.join("d/x")).expect("a directory where the file goes");
    let staged = ".sluice-stage-999999999-0-d";
    std::fs::write(root.join(staged), b"never").expect("staged");
    pending_step(&f, "probe", "d", staged);
    let host = Host::open(&options).expect("the host starts though the step cannot be applied");
    let (state, error): (String, String) = f
        .db()
        .query_row("SELECT state, last_error FROM sluice_outbox WHERE id = 'r1'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("r1");
    assert_eq!(state, "dead");
    assert!(error.starts_with("d: ") && error.to_lowercase().contains("directory"), "{error}");
    assert!(!root.join(staged).exists(), "the dead step's staged file is still there");
    assert!(root.join("d/x").is_dir());
    let report =
        call::run(&host, "probe", "kv-set", &[s("files"), s("a.txt"), bytes(b"next")], Mode::Save).expect("set");
    assert_eq!(sluice_host::values::to_json(&report.results[0]).to_string(), r#"{"ok":1}"#);
    assert_eq!(std::fs::read(root.join("a.txt")).expect("a.txt"), b"next");
    let service: String = f
        .db()
        .query_row("SELECT service FROM sluice_outbox WHERE target = 'write a.txt'", [], |r| r.get(0))
        .expect("the new row");
    assert_eq!(service, "probe", "a journal row names the service that wrote the path");
}
