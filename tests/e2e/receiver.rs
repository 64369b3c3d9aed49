//! A real HTTP receiver on `127.0.0.1:0` for the `http-out` and `http`
//! tests: it records every request and answers 200, or the status it is
//! told to, or, for a path it was given, a canned answer or a stream of
//! bytes with no length (it stops when the client goes away).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A canned answer.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// Answer every request with this status (`None`: 200).
    always: Option<u16>,
    /// Answers by path (with its query).
    canned: std::collections::HashMap<String, Canned>,
    /// Paths answered with this many bytes, with no length.
    streams: std::collections::HashMap<String, usize>,
    /// Bytes of streams written so far.
    streamed: usize,
    /// How long to wait before answering.
    delay: std::time::Duration,
}

/// The receiver; its thread runs until the process ends.
#[derive(Clone)]
pub struct Receiver {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = answer(stream, &shared);
                });
            }
        });
        Receiver { base, state }
    }

    /// Answers every request with `status` (`None`: 200).
    pub fn always(&self, status: Option<u16>) {
        self.lock().always = status;
    }

    /// Answers `path` (with its query) with `status`, `headers` and `body`;
    /// a request with `If-None-Match` equal to its `etag` gets `304`.
    pub fn answer(&self, path: &str, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        self.lock().canned.insert(path.to_string(), Canned { status, headers, body: body.to_vec() });
    }

    /// Waits `delay` before each answer: a slow API.
    pub fn delay(&self, delay: std::time::Duration) {
        self.lock().delay = delay;
    }

    /// Answers `path` with `bytes` bytes in chunks, with no length.
    pub fn stream(&self, path: &str, bytes: usize) {
        self.lock().streams.insert(path.to_string(), bytes);
    }

    /// The bytes of streams written so far.
    pub fn streamed(&self) -> usize {
        self.lock().streamed
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn answer(stream: std::net::TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default().to_string(), parts.next().unwrap_or_default().to_string());
    if method.is_empty() {
        // The connection closed before a request (a sender that died).
        return Ok(());
    }
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let length: usize =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let condition = headers.iter().find(|(n, _)| n == "if-none-match").map(|(_, v)| v.clone());
    let (status, canned, streamed, delay) = {
        let mut state = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let canned = state.canned.get(&path).cloned();
        let streamed = state.streams.get(&path).copied();
        state.received.push(Received { method, path, headers, body });
        (state.always.unwrap_or(200), canned, streamed, state.delay)
    };
    std::thread::sleep(delay);
    let mut stream = stream;
    if let Some(total) = streamed {
        write!(stream, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")?;
        let chunk = vec![b'x'; 64 << 10];
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            stream.write_all(&chunk[..n])?;
            sent += n;
            state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).streamed += n;
        }
        return stream.flush();
    }
    if let Some(canned) = canned {
        let etag = canned.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("etag")).map(|(_, v)| v.clone());
        if condition.is_some() && condition == etag {
            write!(stream, "HTTP/1.1 304 Not Modified\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
            return stream.flush();
        }
        write!(
            stream,
            "HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n",
            canned.status,
            canned.body.len()
        )?;
        for (name, value) in &canned.headers {
            write!(stream, "{name}: {value}\r\n")?;
        }
        stream.write_all(b"\r\n")?;
        stream.write_all(&canned.body)?;
        return stream.flush();
    }
    write!(stream, "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
    stream.flush()
}
