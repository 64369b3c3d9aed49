//! A real `sluice serve` process on `127.0.0.1:0` for a fixture, and a real
//! HTTP client to talk to it.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::support::Fixture;

/// A running server; killed when dropped.
pub struct Served {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    log: Arc<Mutex<String>>,
    client: reqwest::blocking::Client,
}

impl Fixture {
    /// Starts `sluice serve` on this fixture's services and data, with
    /// `extra` arguments after `serve`, and waits until it listens.
    pub fn serve(&self, extra: &[&str]) -> Served {
        self.serve_env(&[], extra)
    }

    /// [`Fixture::serve`] with extra environment variables.
    pub fn serve_env(&self, env: &[(&str, &str)], extra: &[&str]) -> Served {
        let mut child = self
            .command()
            .envs(env.iter().copied())
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice serve");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("read stdout");
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in stdout.lines().map_while(Result::ok) {});
        let Some(base) = first.trim().strip_prefix("listening on ").map(str::to_string) else {
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!("sluice serve did not start: {first:?}\n{}", log.lock().map(|l| l.clone()).unwrap_or_default());
        };
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        Served { child, base, log, client }
    }
}

impl Served {
    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST path` with a JSON body; the status and the JSON answer.
    pub fn post(&self, path: &str, body: &Json) -> (u16, Json) {
        self.post_raw(path, body.to_string())
    }

    /// `POST path` with any body text.
    pub fn post_raw(&self, path: &str, body: String) -> (u16, Json) {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", self.log()));
        let status = response.status().as_u16();
        let text = response.text().expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Json::String(text));
        (status, json)
    }

    /// `POST path` with a JSON body and a W3C `traceparent`: the status and
    /// the `traceparent` the answer echoes.
    pub fn post_traced(&self, path: &str, traceparent: &str, body: &Json) -> (u16, String) {
        let response = self
            .client
            .post(self.url(path))
            .header("traceparent", traceparent)
            .json(body)
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", self.log()));
        let echoed = response.headers().get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or_default();
        (response.status().as_u16(), echoed.to_string())
    }

    /// `GET path`: the status and the body text.
    pub fn get(&self, path: &str) -> (u16, String) {
        let response = self.client.get(self.url(path)).send().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        (response.status().as_u16(), response.text().expect("body"))
    }

    /// `GET path` as JSON.
    pub fn get_json(&self, path: &str) -> (u16, Json) {
        let (status, text) = self.get(path);
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {text}")))
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Polls `check` until it holds, for up to 30 s.
    pub fn wait_for(&self, what: &str, mut check: impl FnMut(&Served) -> bool) {
        let start = Instant::now();
        while !check(self) {
            assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CPU time the server process has used, from /proc.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("stat");
        // The fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        Duration::from_millis(ticks * 10)
    }

    /// The server process's peak resident memory, in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Opens a connection and writes `bytes` raw, leaving it open: for
    /// clients that stall or hang up.
    pub fn raw(&self, bytes: &[u8]) -> std::net::TcpStream {
        use std::io::Write as _;
        let mut stream = std::net::TcpStream::connect(self.address()).expect("connect");
        stream.write_all(bytes).expect("send");
        stream
    }

    /// `POST path` with a JSON `body`, written raw, or only its first
    /// `sent` bytes (the head promises all of them).
    pub fn raw_post(&self, path: &str, body: &str, sent: usize) -> std::net::TcpStream {
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
            self.address(),
            body.len(),
            &body[..sent.min(body.len())]
        );
        self.raw(request.as_bytes())
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let sent = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
    }

    /// Waits (up to 30 s) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "sluice serve did not exit\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
