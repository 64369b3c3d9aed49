//! The unit of work: lifecycle hooks, save rounds with outcomes, calls
//! between services in one scope, provenance, and dry runs.

use sluice_host::call::{self, Ending, Mode};
use sluice_host::command::Outcome;
use sluice_host::registry::LoadError;
use sluice_host::{Host, ScopeError, values};
use wasmtime::component::Val;

use crate::support::s;
use crate::support::{Fixture, product};

/// Product 1, `widget` at 250 cents, with 10 in stock.
fn stock_widgets(host: &Host) {
    call::run(host, "products", "add", &[s("widget"), Val::S64(250)], Mode::Save).expect("add");
    call::run(host, "inventory", "restock", &[Val::S64(1), Val::U32(10)], Mode::Save).expect("restock");
}

fn lines(stdout: &str) -> Vec<&str> {
    stdout.lines().collect()
}

/// The hooks run in the documented order: init on first use, the calls,
/// on-save with the round's outcomes, on-finally after the commit, dispose
/// at the end; a probe that records what it receives shows it.
#[test]
fn lifecycle_hooks_run_in_documented_order() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let host = f.host();

    let mut scope = host.scope();
    scope.call("probe", "note", &[s("first")]).expect("note");
    scope.call("probe", "insert", &product("lamp", 5)).expect("insert");
    scope.call("probe", "note", &[s("second")]).expect("note");
    let report = scope.save().expect("save");
    assert_eq!(report.rounds, 1);
    assert_eq!(
        lines(&scope.end().stdout),
        [
            "hook init",
            "call note first",
            "call note second",
            "hook on-save 1:Outcome::Inserted(1)",
            "hook on-finally",
            "hook dispose"
        ]
    );

    // Without a save: no on-save or on-finally, but dispose still runs.
    let mut scope = host.scope();
    scope.call("probe", "note", &[s("unsaved")]).expect("note");
    assert_eq!(lines(&scope.end().stdout), ["hook init", "call note unsaved", "hook dispose"]);

    // A save with nothing queued runs no on-save round but does finish.
    let mut scope = host.scope();
    scope.call("probe", "note", &[s("empty")]).expect("note");
    assert_eq!(scope.save().expect("save").rounds, 0);
    assert_eq!(lines(&scope.end().stdout), ["hook init", "call note empty", "hook on-finally", "hook dispose"]);
}

/// The Tecture example: orders inserts an order, reads its new id from the
/// outcome in on-save, and queues the order's event in round 2.
#[test]
fn on_save_uses_the_new_id_in_a_second_round() {
    let f = Fixture::new(&["orders", "products", "inventory"]);
    f.migrate();
    let host = f.host();
    stock_widgets(&host);
    call::run(&host, "orders", "place", &[s("ann"), Val::S64(1), Val::U32(1)], Mode::Save).expect("first order");

    let report = call::run(&host, "orders", "place", &[s("bob"), Val::S64(1), Val::U32(2)], Mode::Save).expect("place");
    let Ending::Saved(saved) = report.ending else { panic!("not saved") };
    assert_eq!(saved.rounds, 2);
    let order = saved.applied.iter().find(|a| a.round == 1 && &*a.command.service == "orders").expect("order insert");
    assert_eq!(order.outcome, Outcome::Inserted(2));
    let event = saved.applied.iter().find(|a| a.round == 2).expect("round 2");
    assert_eq!(*event.command.chain, ["orders.on-save"]);
    let (id, what): (i64, String) = f
        .db()
        .query_row("SELECT order_id, event FROM order_events ORDER BY id DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("event row");
    assert_eq!((id, what.as_str()), (2, "placed"));
    let on_hand: i64 = f.db().query_row("SELECT on_hand FROM stock", [], |r| r.get(0)).expect("stock");
    assert_eq!(on_hand, 7);
}

/// A failure in round 3 rolls back rounds 1 and 2: the database is unchanged.
#[test]
fn failure_in_a_later_round_rolls_back_every_round() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let host = f.host();
    let before = f.dump();
    let mut scope = host.scope();
    scope.call("probe", "set-mode", &[s("fail-round-3")]).expect("mode");
    scope.call("probe", "insert", &product("round-one", 1)).expect("insert");
    let err = scope.save().expect_err("round 3 fails");
    let ScopeError::Command { round, ref service, .. } = err else { panic!("wrong error: {err}") };
    assert_eq!((round, service.as_str()), (3, "probe"));
    assert!(err.to_string().contains("CHECK constraint failed"), "{err}");
    assert_eq!(f.dump(), before);
    assert!(matches!(scope.save(), Err(ScopeError::Discarded { .. })), "a failed save cannot be retried");
    assert!(scope.end().stdout.ends_with("hook dispose\n"), "no trap, so dispose still runs");
}

/// A trap in on-save rolls back the save, names the hook, and the host goes on.
#[test]
fn trap_in_on_save_leaves_the_database_unchanged() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let host = f.host();
    let before = f.dump();
    let mut scope = host.scope();
    scope.call("probe", "set-mode", &[s("trap-on-save")]).expect("mode");
    scope.call("probe", "insert", &product("doomed", 1)).expect("insert");
    let err = scope.save().expect_err("on-save traps");
    let message = err.to_string();
    assert!(message.starts_with("probe.on-save failed: wasm trap"), "{message}");
    assert!(message.contains("on-save refuses"), "{message}");
    assert_eq!(f.dump(), before);
    assert!(!scope.end().stdout.contains("hook dispose"), "a trapped instance is not entered again");
    let mut next = host.scope();
    next.call("probe", "insert", &product("fine", 1)).expect("insert");
    next.save().expect("the next scope saves");
    assert_eq!(f.count("products"), 1);
}

/// on-save hooks that never stop queueing hit the round limit: a clear error
/// naming the service, and nothing committed. The limit is configurable.
#[test]
fn round_limit_stops_a_save_that_never_settles() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let before = f.dump();
    for (limit, options) in [
        (8, f.options()),
        (2, {
            let mut o = f.options();
            o.runtime.limits.save_rounds = 2;
            o
        }),
    ] {
        let host = Host::open(&options).expect("host");
        let mut scope = host.scope();
        scope.call("probe", "set-mode", &[s("requeue")]).expect("mode");
        scope.call("probe", "insert", &product("start", 1)).expect("insert");
        let err = scope.save().expect_err("never settles");
        assert!(matches!(err, ScopeError::TooManyRounds { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "save did not settle: probe still queueing in round {}, past the limit of {limit} round(s) \
                 (limits.save-rounds); nothing was applied",
                limit + 1
            )
        );
        assert_eq!(f.dump(), before);
    }
}

/// A call that would re-enter a service already on the stack is refused with
/// the chain; a call that does not is fine; the host goes on.
#[test]
fn call_cycle_is_refused_with_the_chain() {
    let f = Fixture::new(&["ping", "pong"]);
    let host = f.host();
    let mut scope = host.scope();
    assert_eq!(scope.call("ping", "ping", &[Val::U32(1)]).expect("ping → pong"), [Val::U32(1)]);
    let err = scope.call("ping", "ping", &[Val::U32(2)]).expect_err("ping → pong → ping");
    assert_eq!(
        err.to_string(),
        "ping.ping failed: call cycle: ping.ping → pong.pong → ping.ping would re-enter ping, which is already running"
    );
    let mut next = host.scope();
    assert_eq!(next.call("pong", "pong", &[Val::U32(1)]).expect("pong → ping"), [Val::U32(1)]);
}

/// An import with no exporter, or with two, is refused at load time, naming
/// the importer and the interface; the other services load.
#[test]
fn exporters_are_resolved_at_load_time() {
    let f = Fixture::new(&["orders", "products"]);
    let host = f.host();
    assert!(host.registry().service("products").is_ok());
    let registry = host.registry();
    let [failure] = registry.failures() else { panic!("{:?}", registry.failures()) };
    assert!(matches!(failure.error, LoadError::NoExporter { .. }));
    assert_eq!(
        failure.error.to_string(),
        "orders: imports acme:inventory/stock@0.1.0, but no loaded service exports it"
    );

    f.add_component("inventory");
    std::fs::copy(f.services().join("inventory.wasm"), f.services().join("stock.wasm")).expect("copy");
    let host = f.host();
    let registry = host.registry();
    let [failure] = registry.failures() else { panic!("{:?}", registry.failures()) };
    assert_eq!(
        failure.error.to_string(),
        "orders: imports acme:inventory/stock@0.1.0, which more than one service exports (inventory, stock); keep one"
    );

    // A service with no partner fails on its own.
    let f = Fixture::new(&["ping"]);
    let host = f.host();
    assert_eq!(
        host.registry().failures()[0].error.to_string(),
        "ping: imports test:cycle/pong-api@0.1.0, but no loaded service exports it"
    );

    // Failures cascade: two pongs make ping's import ambiguous, so ping fails;
    // then both pongs import from ping, which failed, and fail naming it.
    f.add_component("pong");
    std::fs::copy(f.services().join("pong.wasm"), f.services().join("pong2.wasm")).expect("copy");
    std::fs::copy(f.manifest("pong"), f.manifest("pong2")).expect("copy manifest");
    let host = f.host();
    assert_eq!(host.registry().services().count(), 0);
    let messages: Vec<String> = host.registry().failures().iter().map(|f| f.error.to_string()).collect();
    assert_eq!(
        messages,
        [
            "ping: imports test:cycle/pong-api@0.1.0, which more than one service exports (pong, pong2); keep one",
            "pong2: imports test:cycle/ping-api@0.1.0 from ping, which failed to load",
            "pong: imports test:cycle/ping-api@0.1.0 from ping, which failed to load",
        ]
    );
}

/// The called service is instantiated lazily in the caller's scope, once; its
/// commands join the same queue with their provenance.
#[test]
fn called_service_joins_the_scope() {
    let f = Fixture::new(&["orders", "products", "inventory"]);
    f.migrate();
    let host = f.host();
    stock_widgets(&host);
    let mut scope = host.scope();
    scope.call("orders", "place", &[s("ann"), Val::S64(1), Val::U32(1)]).expect("place");
    scope.call("orders", "place", &[s("bob"), Val::S64(1), Val::U32(1)]).expect("place");
    assert_eq!(scope.instantiated(), ["orders", "inventory"]);
    let chains: Vec<String> = scope.pending().iter().map(|c| c.chain.join(" → ")).collect();
    assert_eq!(
        chains,
        ["orders.place → inventory.reserve", "orders.place", "orders.place → inventory.reserve", "orders.place"]
    );
    assert!(scope.pending().iter().all(|c| c.scope == scope.id()));
    let report = scope.save().expect("save");
    assert_eq!(report.applied.len(), 6, "two reservations, two orders, two events");
}

/// A dry run applies nothing, yet its plan (rounds, provenance, outcomes)
/// is exactly what a real save of the same scope then applies.
#[test]
fn dry_run_plan_matches_the_real_save() {
    let f = Fixture::new(&["orders", "products", "inventory"]);
    f.migrate();
    let host = f.host();
    stock_widgets(&host);
    let before = f.dump();
    let args = [s("ann"), Val::S64(1), Val::U32(3)];
    let plan = call::run(&host, "orders", "place", &args, Mode::DryRun).expect("dry run");
    assert_eq!(f.dump(), before, "a dry run applies nothing");
    let real = call::run(&host, "orders", "place", &args, Mode::Save).expect("save");
    let (Ending::DryRun(plan), Ending::Saved(real)) = (plan.ending, real.ending) else { panic!("wrong endings") };
    let view = |r: &sluice_host::SaveReport| -> Vec<String> {
        r.applied
            .iter()
            .map(|a| {
                format!(
                    "{} {} {:?} {:?} -> {}",
                    a.round,
                    a.command.chain.join(">"),
                    a.command.channel,
                    a.command.op,
                    a.outcome
                )
            })
            .collect()
    };
    assert_eq!(view(&plan), view(&real));
    assert_eq!((plan.rounds, plan.dry_run, real.dry_run), (2, true, false));
    assert_ne!(f.dump(), before, "the real save applied it");

    let out = f.sluice(&["call", "--dry-run", "orders.place", "bob", "1", "1"]);
    let stdout = crate::support::text(&out.stdout);
    assert!(stdout.contains("command(s) applied in 2 round(s); rolled back, nothing was applied"), "{stdout}");
    assert!(stdout.contains("round 2: #3 orders.on-save on main: insert into order_events"), "{stdout}");
}

/// After the commit the queue is closed: on-finally and dispose get an
/// `invalid` error back, and nothing they asked for is applied.
#[test]
fn commands_after_the_save_are_refused() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let host = f.host();
    let mut scope = host.scope();
    scope.call("probe", "set-mode", &[s("queue-late")]).expect("mode");
    scope.call("probe", "insert", &product("kept", 1)).expect("insert");
    scope.save().expect("save");
    let stdout = scope.end().stdout;
    assert!(
        stdout.contains(
            "on-finally refused: Error::Invalid(\"probe: the scope is saved; commands queued in on-finally are not applied\")"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("dispose refused: Error::Invalid(\"probe: the scope is ending;"), "{stdout}");
    assert_eq!(f.count("products"), 1, "the late DELETE was not applied");
}

/// Results of calls after settling are refused with a clear error.
#[test]
fn a_scope_settles_once() {
    let f = Fixture::new(&["probe"]);
    let host = f.host();
    let mut scope = host.scope();
    scope.call("probe", "add", &[Val::S32(1), Val::S32(1)]).expect("call");
    scope.dry_run().expect("dry run");
    let err = scope.call("probe", "add", &[Val::S32(1), Val::S32(1)]).expect_err("settled");
    assert_eq!(err.to_string(), format!("{} is already dry-run; start a new scope", scope.id()));
    assert!(values::to_json(&Val::S32(1)).is_number());
}
