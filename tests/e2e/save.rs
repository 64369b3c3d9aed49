//! Scopes through the library: lazy instances, reads, the queue, save,
//! rollback and discard, checked against the real SQLite file.

use serde_json::json;
use sluice_host::call::{self, Ending, Mode};
use sluice_host::command::{Operation, Outcome};
use sluice_host::{ScopeError, values};
use wasmtime::component::Val;

use crate::support::s;
use crate::support::{Fixture, product};
use sluice_host::command::SqlOp;

fn strings(items: &[&str]) -> Val {
    Val::List(items.iter().map(|i| s(i)).collect())
}

/// The happy path: the examples read, queue, and the save applies their
/// commands, which a read of the database then shows.
#[test]
fn example_scenario_applies_commands_at_save() {
    let f = Fixture::new(&["orders", "products", "inventory"]);
    f.migrate();
    let host = f.host();

    let added = call::run(&host, "products", "add", &[s("widget"), Val::S64(250)], Mode::Save).expect("add runs");
    let Ending::Saved(saved) = &added.ending else { panic!("add was not saved: {:?}", added.ending) };
    assert_eq!(saved.applied.len(), 1);
    let first = saved.applied.get(0).expect("one applied");
    assert_eq!(first.outcome, Outcome::Inserted(1));
    assert_eq!(&*first.command.service, "products");

    call::run(&host, "inventory", "restock", &[Val::S64(1), Val::U32(5)], Mode::Save).expect("restock runs");
    let placed =
        call::run(&host, "orders", "place", &[s("ann"), Val::S64(1), Val::U32(3)], Mode::Save).expect("place runs");
    assert_eq!(values::to_json(&placed.results[0]), json!({"ok": {"total-cents": 750}}));
    let cleared = call::run(&host, "orders", "do-clearing", &[Val::S64(1)], Mode::Save).expect("clearing runs");
    let Ending::Saved(saved) = &cleared.ending else { panic!("clearing was not saved") };
    assert_eq!(saved.applied.len(), 3, "an update and two inserts");
    assert_eq!(saved.applied.get(0).map(|a| a.outcome), Some(Outcome::Affected(1)));

    let status: String = f.db().query_row("SELECT status FROM orders WHERE id = 1", [], |r| r.get(0)).expect("order");
    assert_eq!(status, "cleared");
    let amount: i64 = f.db().query_row("SELECT amount_cents FROM clearings", [], |r| r.get(0)).expect("clearing");
    assert_eq!(amount, 750);
}

/// Commands wait in the queue: a read in the same scope does not see them,
/// and the database has nothing until save.
#[test]
fn commands_apply_only_at_save() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let host = f.host();
    let mut scope = host.scope();
    scope
        .call(
            "probe",
            "execute-all",
            &[s("main"), strings(&["INSERT INTO products (name, price_cents) VALUES ('a', 1)"])],
        )
        .expect("queue");
    assert_eq!(scope.pending().len(), 1);
    assert!(matches!(&scope.pending()[0].op, Operation::Sql(SqlOp::Execute { .. })));
    let read = scope
        .call("probe", "query", &[s("main"), s("SELECT count(*) AS n FROM products"), Val::List(vec![])])
        .expect("read");
    assert_eq!(values::to_json(&read[0])["ok"]["values"], json!([[{"integer": 0}]]));
    assert_eq!(f.count("products"), 0, "nothing applied before save");
    let report = scope.save().expect("save");
    assert_eq!(report.applied.len(), 1);
    assert_eq!(f.count("products"), 1);
}

/// A command that fails in the middle of the queue rolls back the ones
/// before it; the error names the command, its position and its service.
#[test]
fn failing_command_rolls_back_the_whole_queue() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let host = f.host();
    let before = f.dump();
    let mut scope = host.scope();
    let statements = strings(&[
        "INSERT INTO products (name, price_cents) VALUES ('first', 1)",
        "INSERT INTO products (name, price_cents) VALUES ('bad', -5)",
        "INSERT INTO products (name, price_cents) VALUES ('third', 3)",
    ]);
    scope.call("probe", "execute-all", &[s("main"), statements]).expect("queue");
    let err = scope.save().expect_err("the CHECK constraint fails the save");
    let ScopeError::Command { round, position, ref service, ref reason, .. } = err else {
        panic!("wrong error: {err}")
    };
    assert_eq!((round, position, service.as_str()), (1, 2, "probe"));
    assert!(reason.contains("CHECK constraint failed"), "{reason}");
    let message = err.to_string();
    assert!(
        message.starts_with("save failed in round 1 at command 2 (#2 probe.execute-all on main: execute `INSERT INTO products (name, price_cents) VALUES ('bad', -5)`"),
        "{message}"
    );
    assert!(message.ends_with("nothing was applied"), "{message}");
    assert_eq!(f.dump(), before, "the database is unchanged");
}

/// A run of the same statement is applied on one prepared statement, yet
/// each command is its own: each sees what the one before it wrote, each
/// has its outcome, and a failure names its command and applies nothing.
#[test]
fn a_run_of_one_statement_applies_command_by_command() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let host = f.host();
    let mut scope = host.scope();
    let numbered = "INSERT INTO products (name, price_cents) SELECT 'n' || count(*), 1 FROM products";
    scope.call("probe", "execute-all", &[s("main"), strings(&[numbered; 4])]).expect("queue");
    let report = scope.save().expect("save");
    let outcomes: Vec<Outcome> = report.applied.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Outcome::Affected(1); 4]);
    let names: Vec<String> = f
        .db()
        .prepare("SELECT name FROM products ORDER BY id")
        .and_then(|mut stmt| stmt.query_map([], |r| r.get(0))?.collect())
        .expect("names");
    assert_eq!(names, ["n0", "n1", "n2", "n3"]);

    let before = f.dump();
    let mut scope = host.scope();
    let twice = "INSERT INTO products (name, price_cents) VALUES ('twice', 1)";
    let statements = strings(&["UPDATE products SET price_cents = 2", twice, twice, twice]);
    scope.call("probe", "execute-all", &[s("main"), statements]).expect("queue");
    let err = scope.save().expect_err("the second insert of one name fails");
    let ScopeError::Command { round, position, ref reason, .. } = err else { panic!("wrong error: {err}") };
    assert_eq!((round, position), (1, 3), "{err}");
    assert!(reason.contains("UNIQUE constraint failed"), "{reason}");
    assert_eq!(f.dump(), before, "the database is unchanged");
}

/// A command that changed another number of rows than it expected fails
/// the save as a conflict, even when a later command of the same run failed
/// too: the save reports the first thing that went wrong, in queue order.
#[test]
fn a_missed_expectation_comes_before_a_later_failure_of_its_run() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let host = f.host();
    call::run(
        &host,
        "probe",
        "execute-all",
        &[s("main"), strings(&["INSERT INTO products (name, price_cents) VALUES ('w', 15)"])],
        Mode::Save,
    )
    .expect("seed");
    let before = f.dump();
    let mut scope = host.scope();
    // The first takes the price to 5; the second would take it below zero.
    let cut = "UPDATE products SET price_cents = price_cents - 10 WHERE name = 'w'";
    let queued = scope.call("probe", "execute-all", &[s("main"), strings(&[cut, cut])]).expect("queue");
    let Some(Val::Result(Ok(Some(tickets)))) = queued.first() else { panic!("execute-all: {queued:?}") };
    let Val::List(tickets) = tickets.as_ref() else { panic!("{tickets:?}") };
    let expected = scope.call("probe", "expect", &[tickets[0].clone(), Val::U64(2)]).expect("expect");
    assert_eq!(expected, [Val::Result(Ok(None))]);
    let err = scope.save().expect_err("the first update changes one row, not two");
    let ScopeError::Conflict { ref reason, .. } = err else { panic!("expected a conflict, got {err}") };
    assert!(
        reason.contains("#1 probe.execute-all") && reason.contains("changed 1 row(s) where it expected 2"),
        "{reason}"
    );
    assert_eq!(f.dump(), before, "the database is unchanged");
}

/// Inserts of the same table and columns share a prepared statement: each
/// still gets its own row id.
#[test]
fn a_run_of_inserts_gives_each_its_row_id() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let host = f.host();
    let mut scope = host.scope();
    for name in ["a", "b", "c"] {
        scope.call("probe", "insert", &product(name, 1)).expect("insert");
    }
    let report = scope.save().expect("save");
    let outcomes: Vec<Outcome> = report.applied.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Outcome::Inserted(1), Outcome::Inserted(2), Outcome::Inserted(3)]);
}

/// Dropping a scope without saving applies nothing.
#[test]
fn dropped_scope_applies_nothing() {
    let f = Fixture::new(&["products"]);
    f.migrate();
    let host = f.host();
    let before = f.dump();
    {
        let mut scope = host.scope();
        scope.call("products", "add", &[s("widget"), Val::S64(250)]).expect("add");
        assert_eq!(scope.pending().len(), 1);
    }
    assert_eq!(f.dump(), before);
}

/// A service that answers with its own error gets its queue discarded, and
/// its validation error comes back as a value.
#[test]
fn service_error_discards_the_queue() {
    let f = Fixture::new(&["orders", "products", "inventory"]);
    f.migrate();
    let host = f.host();
    let before = f.dump();
    let report = call::run(&host, "orders", "place", &[s("ann"), Val::S64(42), Val::U32(1)], Mode::Save).expect("runs");
    assert_eq!(values::to_json(&report.results[0]), json!({"err": {"unknown-product": 42}}));
    assert!(matches!(report.ending, Ending::Discarded { .. }));
    let report = call::run(&host, "products", "add", &[s(""), Val::S64(1)], Mode::Save).expect("runs");
    assert_eq!(values::to_json(&report.results[0]), json!({"err": {"invalid-name": ""}}));
    assert_eq!(f.dump(), before);
}

/// A service is instantiated once per scope, on first use, and a new scope
/// gets a new instance.
#[test]
fn one_instance_per_scope() {
    let f = Fixture::new(&["probe"]);
    let host = f.host();
    let mut scope = host.scope();
    assert_eq!(scope.call("probe", "counter", &[]).expect("call"), vec![Val::U32(1)]);
    assert_eq!(scope.call("probe", "counter", &[]).expect("call"), vec![Val::U32(2)]);
    let mut other = host.scope();
    assert_eq!(other.call("probe", "counter", &[]).expect("call"), vec![Val::U32(1)]);
    assert_ne!(scope.id(), other.id());
}

/// A trap discards its scope (no more calls, no save) and names the service,
/// the function and the panic; the next scope runs normally.
#[test]
fn trap_discards_the_scope_and_the_host_goes_on() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let host = f.host();
    let before = f.dump();
    let mut scope = host.scope();
    scope
        .call(
            "probe",
            "execute-all",
            &[s("main"), strings(&["INSERT INTO products (name, price_cents) VALUES ('x', 1)"])],
        )
        .expect("queue");
    let err = scope.call("probe", "fail", &[s("boom")]).expect_err("traps");
    let message = err.to_string();
    assert!(message.starts_with("probe.fail failed: wasm trap: wasm `unreachable`"), "{message}");
    assert!(message.contains("boom"), "the panic message is shown: {message}");
    let again = scope.call("probe", "add", &[Val::S32(1), Val::S32(2)]).expect_err("discarded");
    assert!(matches!(again, ScopeError::Discarded { .. }), "{again}");
    assert!(matches!(scope.save(), Err(ScopeError::Discarded { .. })));
    assert_eq!(f.dump(), before);
    let mut next = host.scope();
    assert_eq!(next.call("probe", "add", &[Val::S32(1), Val::S32(2)]).expect("next scope"), vec![Val::S32(3)]);
}

/// Bad channels and malformed commands come back to the guest as WIT errors
/// and queue nothing.
#[test]
fn refused_commands_are_error_values() {
    let f = Fixture::new(&["probe"]);
    f.migrate();
    let host = f.host();
    let mut scope = host.scope();
    let out = scope.call("probe", "execute-all", &[s("nope"), strings(&["SELECT 1"])]).expect("call");
    let err = values::to_json(&out[0]);
    assert!(
        err["err"]["unknown-channel"].as_str().is_some_and(|m| m.contains("no channel \"nope\"") && m.contains("main")),
        "{err}"
    );
    let insert = scope
        .call("probe", "insert", &[s("main"), s("products"), strings(&["name", "price_cents"]), Val::List(vec![])])
        .expect("call");
    let err = values::to_json(&insert[0]);
    assert!(err["err"]["invalid"].as_str().is_some_and(|m| m.contains("2 column(s) but 0 value(s)")), "{err}");
    let write = scope.call("probe", "query", &[s("main"), s("DELETE FROM products"), Val::List(vec![])]).expect("call");
    assert!(values::to_json(&write[0])["err"]["invalid"].is_string());
    assert!(scope.pending().is_empty());
}

/// Unknown services and functions, and the wrong number of arguments, are
/// clear errors from the library too.
#[test]
fn lookup_and_arity_errors() {
    let f = Fixture::new(&["probe"]);
    let host = f.host();
    let mut scope = host.scope();
    let e = scope.call("nope", "add", &[]).expect_err("unknown service").to_string();
    assert_eq!(e, "no service \"nope\"; loaded services: probe");
    let e = scope.call("probe", "nope", &[]).expect_err("unknown function").to_string();
    assert!(e.starts_with("service probe has no function \"nope\"; it exports: execute-all"), "{e}");
    let e = scope.call("probe", "add", &[Val::S32(1)]).expect_err("arity").to_string();
    assert_eq!(e, "probe.add: takes 2 argument(s) (a: s32, b: s32), got 1");
}

/// A wrongly typed value passed through the library is an argument error
/// naming the parameter, and the scope stays usable.
#[test]
fn wrongly_typed_values_are_argument_errors() {
    let f = Fixture::new(&["probe"]);
    let host = f.host();
    let mut scope = host.scope();
    let e = scope.call("probe", "add", &[s("one"), Val::S32(2)]).expect_err("wrong type");
    assert_eq!(e.to_string(), "probe.add: argument a: expected s32, got a string");
    assert_eq!(scope.call("probe", "add", &[Val::S32(1), Val::S32(2)]).expect("still usable"), vec![Val::S32(3)]);
}
