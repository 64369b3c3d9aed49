//! Hot reload: watches the services directory and, after a burst of changes
//! to `*.wasm` or `*.toml` files settles, reloads the host's registry on its
//! own thread, off the request path (see [`Host::reload`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use notify::{RecursiveMode, Watcher as _};

use crate::host::Host;

/// How long the directory must be quiet before a reload starts: copying a
/// large component in produces many write events, and one reload of the
/// finished file is wanted, not one per chunk.
pub const SETTLE: Duration = Duration::from_millis(200);

/// A running watcher; dropping it stops the watching and the thread.
pub struct Watcher {
    watcher: Option<notify::RecommendedWatcher>,
    stop: mpsc::Sender<Message>,
    thread: Option<JoinHandle<()>>,
}

enum Message {
    Changed,
    Stop,
}

impl Watcher {
    /// Starts watching `host`'s services directory.
    pub fn start(host: Arc<Host>) -> anyhow::Result<Watcher> {
        let dir = host.registry().dir().to_path_buf();
        let (tx, rx) = mpsc::channel::<Message>();
        let stop = tx.clone();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if event.paths.iter().any(|p| relevant(p)) && !event.kind.is_access() => {
                let _ = tx.send(Message::Changed);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("watching the services directory: {e}"),
        })
        .context("cannot start watching the services directory")?;
        watcher.watch(&dir, RecursiveMode::NonRecursive).with_context(|| format!("cannot watch {}", dir.display()))?;
        let thread = std::thread::Builder::new()
            .name("sluice-reload".into())
            .spawn(move || reload_loop(&host, &rx))
            .context("cannot start the reload thread")?;
        tracing::info!("watching {} for changes", dir.display());
        Ok(Watcher { watcher: Some(watcher), stop, thread: Some(thread) })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.watcher.take();
        let _ = self.stop.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Components and manifests; editors' temporary files and the cache are not.
fn relevant(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm" || e == "toml")
}

fn reload_loop(host: &Host, rx: &mpsc::Receiver<Message>) {
    while let Ok(Message::Changed) = rx.recv() {
        // Wait for the burst to settle.
        loop {
            match rx.recv_timeout(SETTLE) {
                Ok(Message::Changed) => continue,
                Err(RecvTimeoutError::Timeout) => break,
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        match host.reload() {
            Ok(changes) if changes.is_empty() => tracing::info!("services directory changed; no service changed"),
            Ok(changes) => tracing::info!("reloaded services: {changes}"),
            Err(e) => tracing::error!("reload failed, the current services keep serving: {e:#}"),
        }
    }
}
