//! Test service `ping`: calls `pong`, which calls back; `ping(2)` re-enters
//! `ping` and must be refused by the host as a call cycle.

sluice_guest::generate!("test:cycle/ping");

struct Component;

impl exports::test::cycle::ping_api::Guest for Component {
    fn ping(n: u32) -> u32 {
        if n == 0 { 0 } else { test::cycle::pong_api::pong(n - 1) + 1 }
    }
}

export!(Component);
