//! Test service `pong`: the other half of the `ping` call cycle.

wit_bindgen::generate!({
    path: ["../../wit", "../ping/wit"],
    world: "test:cycle/pong",
    with: {
        "sluice:service/types@0.1.0": sluice_guest::types,
        "sluice:service/from@0.1.0": sluice_guest::from,
        "sluice:service/to@0.1.0": sluice_guest::to,
    },
    generate_all,
});

struct Component;

impl exports::test::cycle::pong_api::Guest for Component {
    fn pong(n: u32) -> u32 {
        if n == 0 { 0 } else { test::cycle::ping_api::ping(n - 1) + 1 }
    }
}

export!(Component);
