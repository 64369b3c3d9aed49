//! Test service `ping`: calls `pong`, which calls back; `ping(2)` re-enters
//! `ping` and must be refused by the host as a call cycle.

wit_bindgen::generate!({
    path: ["../../wit", "wit"],
    world: "test:cycle/ping",
    with: {
        "sluice:service/types@0.1.0": sluice_guest::types,
        "sluice:service/from@0.1.0": sluice_guest::from,
        "sluice:service/to@0.1.0": sluice_guest::to,
    },
    generate_all,
});

struct Component;

impl exports::test::cycle::ping_api::Guest for Component {
    fn ping(n: u32) -> u32 {
        if n == 0 { 0 } else { test::cycle::pong_api::pong(n - 1) + 1 }
    }
}

export!(Component);
