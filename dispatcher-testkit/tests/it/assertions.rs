//! History assertions: passing and failing, and what a failure prints.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use dispatcher_core::call::now_epoch;
use dispatcher_core::{Call, Outcome};
use dispatcher_testkit::expect::{assert_history, call, history_table};
use serde_json::{json, Value};

/// A finished Call that waited `wait_ms` and ran `run_ms`.
fn finished(
    uuid: &str,
    task: &str,
    args: Value,
    outcome: Outcome,
    error: Option<&str>,
    wait_ms: f64,
    run_ms: f64,
) -> Call {
    let mut c = Call::received(uuid.into(), task.into(), "node", "chan");
    let received = now_epoch() - 10.0;
    c.received_at = Some(received);
    c.started_at = Some(received + wait_ms / 1000.0);
    c.args = args;
    c.finish(
        outcome,
        error.map(str::to_owned),
        received + (wait_ms + run_ms) / 1000.0,
    );
    c
}

fn history() -> Vec<Call> {
    let mut child = finished("u-3", "t.double", json!([2]), Outcome::Ok, None, 1.0, 2.0);
    child.parent_uuid = Some("u-2".into());
    child.kwargs = json!({"scale": 3});
    child.result = Some(json!(4));
    vec![
        finished("u-1", "t.double", json!([21]), Outcome::Ok, None, 5.0, 3.0),
        finished(
            "u-2",
            "t.fanout",
            json!([1]),
            Outcome::Error,
            Some("it went wrong\non two lines"),
            1.0,
            250.0,
        ),
        child,
        finished(
            "u-4",
            "t.slow",
            json!([]),
            Outcome::Timeout,
            Some("timed out after 0.200s"),
            120.0,
            200.0,
        ),
    ]
}

/// Runs `f`, which must panic, and returns the panic message.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("the assertion must fail");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

fn assert_has_table(msg: &str) {
    for column in [
        "uuid", "task", "args", "outcome", "error", "wait_ms", "run_ms",
    ] {
        assert!(msg.contains(column), "no column {column}: {msg}");
    }
}

#[test]
fn passing_assertions_chain() {
    let calls = history();
    assert_history(&calls)
        .count(4)
        .has(
            call()
                .task("t.double")
                .args(json!([21]))
                .outcome(Outcome::Ok),
        )
        .has(
            call()
                .parent_uuid("u-2")
                .kwargs(json!({"scale": 3}))
                .result(json!(4)),
        )
        .has(
            call()
                .uuid("u-4")
                .error_contains("timed out")
                .waited_longer_than(Duration::from_millis(100)),
        )
        .has(
            call()
                .task("t.fanout")
                .ran_longer_than(Duration::from_millis(200)),
        )
        .has_exactly(2, call().task("t.double"))
        .has_exactly(2, call().ran_shorter_than(Duration::from_millis(10)))
        .has_exactly(0, call().outcome(Outcome::Panic))
        .has_none(call().outcome(Outcome::Rejected))
        .has_none(
            call()
                .task("t.double")
                .waited_longer_than(Duration::from_millis(10)),
        )
        .in_order([
            call().uuid("u-1"),
            call().task("t.fanout"),
            call().task("t.slow"),
        ])
        .in_order([call().task("t.double"), call().task("t.double")])
        .in_order([]);
    assert_history(&[]).count(0).has_none(call());
}

#[test]
fn matches_and_mismatches_explain_each_field() {
    let calls = history();
    let e = call()
        .task("t.double")
        .outcome(Outcome::Error)
        .error_contains("x")
        .ran_longer_than(Duration::from_secs(1));
    assert!(!e.matches(&calls[0]));
    let why = e.mismatches(&calls[0]);
    assert_eq!(why.len(), 3, "{why:?}");
    assert!(why[0].contains("outcome is ok, expected error"), "{why:?}");
    assert!(why[1].contains("has no error"), "{why:?}");
    assert!(
        why[2].contains("run_ms is 3.0, expected more than 1s"),
        "{why:?}"
    );
    assert!(call().matches(&calls[0]));
    let unfinished = Call::received("u-9".into(), "t.x".into(), "n", "c");
    assert!(
        !call().ran_shorter_than(WAIT_LONG).matches(&unfinished),
        "a Call that never ran has no run_ms"
    );
    assert!(!call().outcome(Outcome::Ok).matches(&unfinished));
}

const WAIT_LONG: Duration = Duration::from_secs(3600);

#[test]
fn expectations_display_readably() {
    assert_eq!(call().to_string(), "call(any)");
    let e = call()
        .task("t.double")
        .args(json!([1]))
        .outcome(Outcome::Ok)
        .error_contains("boom")
        .ran_shorter_than(Duration::from_millis(5));
    assert_eq!(
        e.to_string(),
        r#"call(task = "t.double", args = [1], outcome = ok, error contains "boom", run_ms < 5)"#
    );
}

#[test]
#[should_panic(
    expected = "expected at least one Call matching call(task = \"t.missing\"), found none"
)]
fn has_fails_when_nothing_matches() {
    assert_history(&history()).has(call().task("t.missing"));
}

#[test]
#[should_panic(expected = "expected exactly 3 Call(s) matching call(task = \"t.double\"), found 2")]
fn has_exactly_fails_on_another_count() {
    assert_history(&history()).has_exactly(3, call().task("t.double"));
}

#[test]
#[should_panic(expected = "expected no Call matching call(outcome = timeout), found 1")]
fn has_none_fails_when_one_matches() {
    assert_history(&history()).has_none(call().outcome(Outcome::Timeout));
}

#[test]
#[should_panic(expected = "expected 5 Call(s) in total, found 4")]
fn count_fails_on_another_total() {
    assert_history(&history()).count(5);
}

#[test]
#[should_panic(
    expected = "in_order: expectation 1 (call(uuid = \"u-1\")) has no matching Call after Call #3"
)]
fn in_order_fails_on_the_wrong_order() {
    assert_history(&history()).in_order([call().task("t.slow"), call().uuid("u-1")]);
}

#[test]
fn failure_messages_print_the_history_as_a_table() {
    let calls = history();
    let msg = panic_message(|| {
        assert_history(&calls).has(call().task("t.double").outcome(Outcome::Panic));
    });
    assert_has_table(&msg);
    for c in &calls {
        assert!(msg.contains(&c.uuid), "{msg}");
    }
    assert!(msg.contains("history (4 Calls, oldest first)"), "{msg}");
    // Near misses name the differing fields of Calls of the expected task.
    assert!(msg.contains("#0: outcome is ok, expected panic"), "{msg}");
    assert!(msg.contains("#2: outcome is ok, expected panic"), "{msg}");
    // Errors and kwargs are readable on one line.
    assert!(msg.contains(r"it went wrong\non two lines"), "{msg}");
    assert!(msg.contains(r#"[2] {"scale":3}"#), "{msg}");
    assert!(msg.contains("timed out after 0.200s"), "{msg}");

    let msg = panic_message(|| {
        assert_history(&calls).has_none(call().task("t.double"));
    });
    assert!(msg.contains("found 2:"), "{msg}");
    assert_has_table(&msg);

    let msg = panic_message(|| {
        assert_history(&calls).in_order([call().task("t.slow"), call().task("t.fanout")]);
    });
    assert!(
        msg.contains("it matches only earlier Calls (#1), so the order is wrong"),
        "{msg}"
    );
    assert!(
        msg.contains("expectation 0 (call(task = \"t.slow\")) matched Call #3"),
        "{msg}"
    );

    let msg = panic_message(|| {
        assert_history(&calls).has(call().task("t.unknown"));
    });
    assert!(
        msg.contains("no Call of task \"t.unknown\" at all"),
        "{msg}"
    );
}

#[test]
fn table_of_an_empty_history_and_long_cells() {
    assert!(history_table(&[]).contains("(no Calls)"));
    let long = finished(
        "u-long",
        "t.x",
        json!(["a".repeat(500)]),
        Outcome::Error,
        Some(&"e".repeat(500)),
        0.0,
        0.0,
    );
    let short = finished("u-short", "t.y", json!([1]), Outcome::Ok, None, 0.0, 0.0);
    let table = history_table(&[long, short]);
    // Arguments are cut; an error of 500 characters is shown whole, in the last column, so it
    // widens no other row.
    assert!(table.contains('…'), "{table}");
    assert!(!table.contains(&"a".repeat(100)), "{table}");
    assert!(table.contains(&"e".repeat(500)), "{table}");
    for line in table.lines().filter(|l| !l.contains("u-long")) {
        assert!(line.chars().count() < 250, "{line}");
    }
    let last_column = table.lines().next().unwrap().trim_end();
    assert!(last_column.ends_with("error"), "{table}");
}

#[test]
fn very_long_errors_are_cut_with_a_note_of_how_much() {
    use dispatcher_testkit::expect::MAX_ERROR_CHARS;
    let text = format!("{}{}", "x".repeat(MAX_ERROR_CHARS), "y".repeat(3000));
    let c = finished(
        "u-huge",
        "t.x",
        json!([]),
        Outcome::Error,
        Some(&text),
        0.0,
        0.0,
    );
    let table = history_table(&[c]);
    assert!(table.contains(&"x".repeat(MAX_ERROR_CHARS)), "{table}");
    assert!(!table.contains('y'), "{table}");
    assert!(table.contains("… (3000 more characters)"), "{table}");
}
