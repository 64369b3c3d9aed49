//! Test service `hostile`: a corpus of attacks on the host, one function
//! each. None of them may cost more than the scope they run in.

sluice_guest::generate!("test:hostile/hostile");

use std::cell::Cell;
use std::hint::black_box;
use std::io::Write as _;

use exports::sluice::service::lifecycle;
use exports::test::hostile::attacks::Guest;
use sluice_guest::{
    from, row, to,
    types::{Error, Outcome, Refusal},
};

thread_local! {
    /// Set by `trap-on-save`: this instance's `on-save` traps.
    static TRAP_ON_SAVE: Cell<bool> = const { Cell::new(false) };
}

struct Component;

impl Guest for Component {
    fn spin() {
        let mut n: u64 = 0;
        loop {
            n = black_box(n.wrapping_add(1));
        }
    }

    fn balloon(mib: u32) -> u32 {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        for i in 0..mib {
            blocks.push(vec![i as u8; 1 << 20]);
        }
        black_box(&blocks);
        blocks.len() as u32
    }

    fn recurse(depth: u64) -> u64 {
        if depth == 0 { 0 } else { black_box(Self::recurse(black_box(depth - 1))) + 1 }
    }

    fn huge(mib: u32) -> String {
        "x".repeat((mib as usize) << 20)
    }

    fn flood(count: u32) -> Result<u32, Error> {
        for i in 0..count {
            to::insert(
                "main",
                "products",
                &row(&[("name", format!("flood-{i}").into()), ("price_cents", 1i64.into())]),
            )?;
        }
        Ok(count)
    }

    fn shout(kib: u32) {
        let line = "!".repeat(1023);
        let mut out = std::io::stdout();
        for _ in 0..kib {
            // Any failure to write ends the attack, as it would a real guest.
            if writeln!(out, "{line}").is_err() {
                return;
            }
        }
    }

    fn snoop() -> Vec<String> {
        let passwd = match std::fs::read_to_string("/etc/passwd") {
            Ok(text) => format!("passwd: read {} bytes: {}", text.len(), text.lines().next().unwrap_or_default()),
            Err(e) => format!("passwd: {e}"),
        };
        let root = match std::fs::read_dir("/") {
            Ok(entries) => format!("root: listed {} entries", entries.count()),
            Err(e) => format!("root: {e}"),
        };
        let vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
        let args: Vec<String> = std::env::args().collect();
        vec![passwd, root, format!("env: {vars:?}"), format!("args: {args:?}")]
    }

    fn connect(address: String) -> Result<String, String> {
        match std::net::TcpStream::connect(&address) {
            Ok(stream) => Ok(format!("connected to {:?}", stream.peer_addr())),
            Err(e) => Err(format!("connect {address}: {e}")),
        }
    }

    fn quit(code: u8) {
        std::process::exit(i32::from(code));
    }

    fn execute(sql: String) -> Result<u64, Error> {
        to::execute("main", &sql, &[])
    }

    fn query(sql: String) -> Result<u64, Error> {
        Ok(from::query("main", &sql, &[])?.values.len() as u64)
    }

    fn inject(payload: String) -> Result<u64, Error> {
        let found = from::query("main", "SELECT id FROM products WHERE name = ?1", &[payload.clone().into()])?;
        to::execute("main", "DELETE FROM products WHERE name = ?1", &[payload.into()])?;
        Ok(found.values.len() as u64)
    }

    fn trap_on_save() -> Result<u64, Error> {
        TRAP_ON_SAVE.with(|t| t.set(true));
        to::insert("main", "products", &row(&[("name", "doomed".into()), ("price_cents", 1i64.into())]))
    }
}

impl lifecycle::Guest for Component {
    fn init() {}

    fn on_save(_outcomes: Vec<(u64, Outcome)>) -> Result<(), Refusal> {
        if TRAP_ON_SAVE.with(Cell::get) {
            panic!("hostile traps in on-save");
        }
        Ok(())
    }

    fn on_finally() {}

    fn dispose() {}
}

export!(Component);
