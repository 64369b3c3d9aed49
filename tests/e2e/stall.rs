//! A TCP proxy in front of a real server (PostgreSQL, Redis) that a test
//! can make stop answering, or break at a chosen request: the faults of
//! the conformance suite, on real servers and real clients.
//!
//! - [`Stall::freeze`]: every connection stays open and nothing passes
//!   either way, as when the server's process is stopped or the network
//!   drops packets (the kernel still acknowledges, so no TCP timeout
//!   fires); new connections are accepted and hang the same way.
//! - [`Stall::cut_on`]: the next request that carries a marker never
//!   reaches the server; its connection is closed both ways instead.
//! - [`Stall::hold_on`]: the same request is held, its connection open and
//!   silent, as when the host's process is stopped right there.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The proxy; it stops with its last handle.
pub(crate) struct Stall {
    port: u16,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    frozen: AtomicBool,
    /// The marker of the request to cut (or to hold: `true`), until it is
    /// seen.
    trap: Mutex<Option<(Vec<u8>, bool)>>,
    cut: AtomicBool,
    /// Ends the holding of a held request: its connection is closed.
    released: AtomicBool,
    stop: AtomicBool,
}

/// How often a blocked proxy thread looks at the state.
const TICK: Duration = Duration::from_millis(10);

impl Stall {
    /// A proxy on 127.0.0.1 to `backend` (`host:port`).
    pub(crate) fn to(backend: &str) -> Stall {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("address").port();
        let state = Arc::new(State::default());
        let (shared, backend) = (Arc::clone(&state), backend.to_string());
        std::thread::spawn(move || {
            while !shared.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(&backend) else { continue };
                        let _ = client.set_nonblocking(false);
                        for (from, to, up) in [(&client, &server, true), (&server, &client, false)] {
                            let (from, to) = (from.try_clone().expect("clone"), to.try_clone().expect("clone"));
                            let state = Arc::clone(&shared);
                            std::thread::spawn(move || pipe(from, to, up, &state));
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
                    Err(_) => return,
                }
            }
        });
        Stall { port, state }
    }

    /// The proxy's port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Nothing passes from now on, on any connection; see the module docs.
    pub(crate) fn freeze(&self) {
        self.state.frozen.store(true, Ordering::SeqCst);
    }

    /// Everything held passes again.
    pub(crate) fn thaw(&self) {
        self.state.frozen.store(false, Ordering::SeqCst);
    }

    /// Closes, instead of passing it on, the connection whose next request
    /// to the server carries `marker`.
    pub(crate) fn cut_on(&self, marker: &[u8]) {
        self.arm(marker, false);
    }

    fn arm(&self, marker: &[u8], hold: bool) {
        self.state.cut.store(false, Ordering::SeqCst);
        self.state.released.store(false, Ordering::SeqCst);
        *self.state.trap.lock().expect("marker") = Some((marker.to_vec(), hold));
    }

    /// Closes the connection of a held request.
    pub(crate) fn release(&self) {
        self.state.released.store(true, Ordering::SeqCst);
    }

    /// Holds, instead of passing it on, the request to the server that
    /// carries `marker`, and everything after it on its connection.
    pub(crate) fn hold_on(&self, marker: &[u8]) {
        self.arm(marker, true);
    }

    /// Whether a request was cut or held.
    pub(crate) fn was_cut(&self) -> bool {
        self.state.cut.load(Ordering::SeqCst)
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
    }
}

/// Passes what `from` sends on to `to` (`up`: towards the server), as the
/// state allows.
fn pipe(mut from: TcpStream, mut to: TcpStream, up: bool, state: &State) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = vec![0u8; 64 * 1024];
    let close = |from: &TcpStream, to: &TcpStream| {
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    };
    loop {
        if state.stop.load(Ordering::SeqCst) {
            return close(&from, &to);
        }
        let n = match from.read(&mut buf) {
            Ok(0) => return close(&from, &to),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return close(&from, &to),
        };
        while state.frozen.load(Ordering::SeqCst) && !state.stop.load(Ordering::SeqCst) {
            std::thread::sleep(TICK);
        }
        if up {
            let mut trap = state.trap.lock().expect("marker");
            if let Some((_, hold)) = trap.take_if(|(m, _)| buf[..n].windows(m.len()).any(|w| w == m.as_slice())) {
                drop(trap);
                state.cut.store(true, Ordering::SeqCst);
                while hold && !state.stop.load(Ordering::SeqCst) && !state.released.load(Ordering::SeqCst) {
                    std::thread::sleep(TICK);
                }
                return close(&from, &to);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            return close(&from, &to);
        }
    }
}
