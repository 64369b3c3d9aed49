//! Test service `pong`: the other half of the `ping` call cycle.

sluice_guest::generate!("test:cycle/pong", "../ping/wit");

struct Component;

impl exports::test::cycle::pong_api::Guest for Component {
    fn pong(n: u32) -> u32 {
        if n == 0 { 0 } else { test::cycle::ping_api::ping(n - 1) + 1 }
    }
}

export!(Component);
