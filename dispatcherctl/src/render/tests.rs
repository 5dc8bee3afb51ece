use dispatcher_core::control::{MainReply, PoolSummary};
use dispatcher_core::{Call, Outcome};
use serde_json::{json, Value};

use super::*;

#[test]
fn alive_and_errors() {
    assert_eq!(
        format_reply("alive", &json!({"node_id": "n1"})),
        "node n1: alive\n"
    );
    assert_eq!(
        format_reply(
            "nope",
            &json!({"error": "No control method nope", "node_id": "n1"})
        ),
        "node n1: error: No control method nope\n"
    );
    assert!(format_reply("alive", &json!([1])).starts_with("unexpected reply"));
}

#[test]
fn errors_win_over_tables_whatever_their_type() {
    for command in ["workers", "running", "history", "main", "alive", "status"] {
        assert_eq!(
            format_reply(command, &json!({"node_id": "n1", "error": "bad filter"})),
            "node n1: error: bad filter\n",
            "{command}"
        );
    }
    assert_eq!(
        format_reply("running", &json!({"node_id": "n1", "error": {"code": 7}})),
        "node n1: error: {\"code\":7}\n"
    );
    assert_eq!(
        format_reply("alive", &json!({"error": "x"})),
        "node (no node_id): error: x\n"
    );
}

#[test]
fn workers_table_sorted_numerically() {
    let reply = json!({
        "node_id": "n1",
        "worker-10": {"worker_id": 10, "pid": 7, "status": "idle", "finished_count": 0,
                      "current_task": null, "current_task_uuid": null, "age": 1.3},
        "worker-2": {"worker_id": 2, "pid": 7, "status": "busy", "finished_count": 3,
                     "current_task": "t.sleep", "current_task_uuid": "abc", "age": 0.5},
    });
    let out = format_reply("workers", &reply);
    assert!(out.starts_with("node n1: 2 workers\n"), "{out}");
    assert!(
        out.contains("worker     pid  status  finished  task     uuid  age"),
        "{out}"
    );
    let w2 = out.find("worker-2 ").unwrap();
    let w10 = out.find("worker-10").unwrap();
    assert!(w2 < w10, "{out}");
    assert!(
        out.contains("t.sleep") && out.contains("1.2s") || out.contains("1.3s"),
        "{out}"
    );
}

/// The row of `key` in a rendered table, split into cells.
fn row<'a>(out: &'a str, key: &str) -> Vec<&'a str> {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no row {key} in\n{out}"));
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

#[test]
fn worker_states_read_as_idle_or_busy() {
    // dispatcherd's words: a worker running a Call is `ready` with a `current_task`.
    let reply = json!({
        "node_id": "n1",
        "worker-0": {"worker_id": 0, "pid": 41, "status": "ready", "finished_count": 3,
                     "current_task": null, "current_task_uuid": null, "active_cancel": false,
                     "age": 2.5},
        "worker-1": {"worker_id": 1, "pid": 42, "status": "ready", "finished_count": 1,
                     "current_task": "t.nap", "current_task_uuid": "u-1", "active_cancel": false,
                     "age": 2.0},
        "worker-2": {"worker_id": 2, "pid": null, "status": "retired", "age": 9.0},
        "worker-3": {"worker_id": 3, "pid": 44, "status": "sleepwalking", "age": 1.0},
    });
    let out = format_reply("workers", &reply);
    assert!(out.starts_with("node n1: 4 workers\n"), "{out}");
    assert_eq!(
        row(&out, "worker-0"),
        ["worker-0", "41", "idle", "3", "-", "-", "2.5s"]
    );
    assert_eq!(
        row(&out, "worker-1"),
        ["worker-1", "42", "busy", "1", "t.nap", "u-1", "2.0s"]
    );
    assert_eq!(
        row(&out, "worker-2"),
        ["worker-2", "-", "retired", "0", "-", "-", "9.0s"]
    );
    assert_eq!(row(&out, "worker-3")[2], "sleepwalking");
    assert!(!out.contains("ready"), "{out}");
}

#[test]
fn running_and_cancel_tables() {
    let reply = json!({
        "node_id": "n1",
        "queued-0": {"task": "t.add", "uuid": "u2", "args": [1, 2], "kwargs": {}},
        "worker-1": {"task": "t.sleep", "uuid": "u1", "args": [5], "kwargs": {}},
    });
    let out = format_reply("running", &reply);
    assert!(out.starts_with("node n1: 2 running or waiting\n"), "{out}");
    assert!(out.contains("slot"), "{out}");
    assert!(
        out.find("worker-1").unwrap() < out.find("queued-0").unwrap(),
        "{out}"
    );
    assert!(out.contains("[1,2]"), "{out}");
    let out = format_reply("cancel", &reply);
    assert!(out.starts_with("node n1: canceled 2\n"), "{out}");
    let out = format_reply("running", &json!({"node_id": "n1"}));
    assert_eq!(out, "node n1: nothing running or waiting\n");
}

#[test]
fn running_entries_show_their_typed_fields() {
    let reply = json!({
        "node_id": "n1",
        "delayed-0": {"task": "t.later", "uuid": "u3", "due_at": 1.0},
        "worker-0": {"task": "t.add", "uuid": "u1", "args": [1], "kwargs": {"b": 2},
                     "started_at": 1.0, "channel": "c"},
    });
    let out = format_reply("running", &reply);
    let worker = row(&out, "worker-0");
    assert_eq!(worker[..5], ["worker-0", "t.add", "u1", "[1]", "{\"b\":2}"]);
    // No run_s from the service: the time since started_at by this clock (decades here).
    assert!(worker[5].ends_with('h') && worker[6] == "-", "{out}");
    assert_eq!(
        row(&out, "delayed-0"),
        ["delayed-0", "t.later", "u3", "-", "-", "-", "0.0s"]
    );
    // The service's own figures win.
    let reply = json!({
        "node_id": "n1",
        "delayed-0": {"task": "t.later", "uuid": "u3", "due_at": 1.0, "due_in_s": 75.5},
        "worker-0": {"task": "t.add", "uuid": "u1", "started_at": 1.0, "run_s": 2.25},
    });
    let out = format_reply("running", &reply);
    assert!(out.contains("ran for  due in"), "{out}");
    assert_eq!(row(&out, "worker-0")[5..], ["2.2s", "-"]);
    assert_eq!(row(&out, "delayed-0")[5..], ["-", "1m 15s"]);
    let out = format_reply("cancel", &json!({"node_id": "n1"}));
    assert_eq!(out, "node n1: nothing matched; nothing canceled\n");
}

fn finished(uuid: &str, task: &str, outcome: Outcome) -> Call {
    let mut c = Call::received(uuid.to_owned(), task.to_owned(), "n1", "ch");
    c.outcome = Some(outcome);
    c
}

#[test]
fn history_table_truncates() {
    let long = "x".repeat(200);
    let mut ok = finished("0123456789abcdef", "t.add", Outcome::Ok);
    ok.result = Some(json!(3));
    ok.wait_ms = Some(1.234);
    ok.run_ms = Some(0.5);
    ok.total_ms = Some(1.734);
    let mut failed = finished("fedcba9876543210", "t.fail", Outcome::Error);
    failed.error = Some(long);
    failed.total_ms = Some(2.0);
    let reply = json!({"node_id": "n1", "calls": [ok, failed]});
    let out = format_reply("history", &reply);
    assert!(out.starts_with("node n1: 2 calls\n"), "{out}");
    assert!(
        out.contains(
            "uuid      task    outcome  attempt  finished (UTC)  wait ms  run ms  total ms  \
             result / error"
        ),
        "{out}"
    );
    assert!(out.contains("01234567  t.add"), "{out}");
    assert!(!out.contains("0123456789"), "{out}");
    assert!(out.contains("1.2") && out.contains('…'), "{out}");
    assert!(!out.contains(&"x".repeat(CELL_MAX_CHARS)), "{out}");
}

#[test]
fn history_rows_read_typed_calls() {
    let mut ok = finished("abcdef0123", "t.echo", Outcome::Ok);
    ok.result = Some(json!({"a": "b"}));
    ok.run_ms = Some(2.26);
    ok.finished_at = Some(1_700_000_000.5);
    ok.attempt = Some(2);
    let canceled = finished("99999999", "t.nap", Outcome::Canceled);
    let reply = json!({"node_id": "n1", "calls": [ok, canceled]});
    let out = format_reply("history", &reply);
    assert_eq!(
        row(&out, "abcdef01"),
        [
            "abcdef01",
            "t.echo",
            "ok",
            "2",
            "2023-11-14 22:13:20",
            "-",
            "2.3",
            "-",
            "{\"a\":\"b\"}"
        ]
    );
    assert_eq!(
        row(&out, "99999999"),
        ["99999999", "t.nap", "canceled", "-", "-", "-", "-", "-", "-"]
    );
    let out = format_reply("history", &json!({"node_id": "n1", "calls": []}));
    assert!(out.starts_with("node n1: 0 calls\n"), "{out}");
}

#[test]
fn main_shows_its_pool_summary() {
    let mut main = MainReply {
        pid: 12,
        control_count: 3,
        pool: PoolSummary {
            worker_ct: 2,
            running_ct: 1,
            active_task_ct: 4,
            queued_count: 3,
            finished_count: 10,
            canceled_count: 1,
            retirement_count: 5,
            ..PoolSummary::default()
        },
        ..MainReply::default()
    };
    main.registered_tasks = vec!["t.add".into()];
    let mut reply = serde_json::to_value(&main).unwrap();
    reply["node_id"] = json!("n1");
    let out = format_reply("main", &reply);
    assert!(
        out.starts_with("node n1:\npid 12, up 0.0s, 0 received, 3 control commands\n"),
        "{out}"
    );
    assert!(out.contains("tasks (1): t.add\n"), "{out}");
    assert!(!out.contains('{') && !out.contains('"'), "no JSON: {out}");
    assert!(
        out.contains("\npool: 2 workers, 1 running, 4 active\nqueued  blocked"),
        "{out}"
    );
    let last = out.lines().last().unwrap();
    let cells: Vec<&str> = last.split_whitespace().collect();
    assert_eq!(
        cells,
        ["3", "0", "0", "0", "10", "1", "0", "0", "5"],
        "{out}"
    );
}

#[test]
fn unexpected_shapes_fall_back_to_json() {
    let out = format_reply("workers", &json!({"node_id": "n", "weird": 1}));
    assert!(out.starts_with("node n:\n{"), "{out}");
    let out = format_reply("main", &json!({"node_id": "n", "pid": 1}));
    assert_eq!(out, "node n:\n{\n  \"pid\": 1\n}\n");
}

#[test]
fn replies_of_other_shapes_print_as_json_and_never_panic() {
    let odd = [
        (
            "workers",
            json!({"node_id": "n", "worker-0": {"status": "ready"}}),
        ),
        (
            "workers",
            json!({"node_id": "n", "worker-0": {"worker_id": "zero", "pid": 1, "status": "ready"}}),
        ),
        ("running", json!({"node_id": "n", "worker-0": {"task": 5}})),
        ("cancel", json!({"node_id": "n", "worker-0": []})),
        ("history", json!({"node_id": "n", "calls": [{"task": "t"}]})),
        ("history", json!({"node_id": "n", "calls": "none"})),
        ("history", json!({"node_id": "n", "entries": []})),
        ("main", json!({"node_id": "n", "pool": {"worker_ct": -1}})),
        ("main", json!({"node_id": "n", "pool": 3})),
    ];
    for (command, reply) in odd {
        let out = format_reply(command, &reply);
        let mut body = reply.clone();
        body.as_object_mut().unwrap().remove("node_id");
        assert_eq!(out, format!("node n:\n{body:#}\n"), "{command}: {reply}");
    }
    for reply in [json!(null), json!("x"), json!(1), json!([{"node_id": "n"}])] {
        for command in ["alive", "workers", "running", "history", "main", "x"] {
            assert!(format_reply(command, &reply).starts_with("unexpected reply"));
        }
    }
    let odd_ids = format_reply("alive", &json!({"node_id": 5}));
    assert_eq!(odd_ids, "node 5: alive\n");
}

#[test]
fn set_log_level_and_run_are_tables() {
    let reply = json!({"node_id": "n", "level": "warn", "previous_level": "debug"});
    assert_eq!(
        format_reply("set_log_level", &reply),
        "node n:\nlogger  level  previous level\n-----------------------------\n-       warn   \
         debug\n"
    );
    let reply = json!({"node_id": "n", "ack": {"task": "t.add", "args": [1, 2]}, "uuid": "u-9"});
    let out = format_reply("run", &reply);
    assert!(
        out.starts_with("node n: started\ntask   uuid  args   kwargs  delay\n"),
        "{out}"
    );
    assert!(out.contains("t.add  u-9   [1,2]  -       -"), "{out}");
    // Unknown commands' replies stay JSON.
    let out = format_reply("nosuch", &json!({"node_id": "n", "x": 1}));
    assert_eq!(out, "node n:\n{\n  \"x\": 1\n}\n");
}

#[test]
fn metrics_and_status_are_tables_with_rounded_numbers() {
    use dispatcher_core::broker::SelfCheckStatus;
    use dispatcher_core::control::{MetricsReply, StatusReply};
    use dispatcher_core::BrokerStatus;
    let mut broker = BrokerStatus::new("pg_notify");
    broker.connected = Some(true);
    let mut check = SelfCheckStatus::new(4, 0);
    check.last_rtt_ms = Some(0.656_361_000_000_000_1);
    broker.self_check = Some(check);
    let mut status = StatusReply::default();
    status.main.brokers = vec![broker];
    status.metrics = MetricsReply {
        received: 7,
        finished: [("ok".to_owned(), 3)].into_iter().collect(),
        ..MetricsReply::default()
    };
    status.history = Some(Default::default());
    let mut reply = serde_json::to_value(&status).unwrap();
    reply["node_id"] = json!("n");
    let out = format_reply("status", &reply);
    for needle in [
        "pg_notify",
        "0.66",
        "\nworkers: 0 workers\n",
        "\nrunning: nothing running or waiting\n",
        "\nmetrics:\n",
        "finished ok",
        "\nproducers: 0 producers\n",
        "\nnewest calls: 0 calls\n",
    ] {
        assert!(out.contains(needle), "{needle:?} missing in\n{out}");
    }
    assert!(!out.contains("0.656") && !out.contains('{'), "{out}");
    let mut reply = serde_json::to_value(&status.metrics).unwrap();
    reply["node_id"] = json!("n");
    let out = format_reply("metrics", &reply);
    assert!(out.starts_with("node n:\nmetric"), "{out}");
    assert!(row(&out, "received").ends_with(&["7"]), "{out}");
    assert!(out.ends_with("metrics endpoint: none\n"), "{out}");
}

#[test]
fn json_output_is_one_array() {
    let replies = vec![json!({"node_id": "a"}), json!({"node_id": "b"})];
    let out = format_json(&replies);
    let back: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(back, Value::Array(replies));
    assert_eq!(format_json(&[]), "[]\n");
    // exactly the replies as sent, also those that are not of the expected shape
    let odd = vec![
        json!({"node_id": "a", "worker-0": {"status": "ready"}}),
        json!([1]),
    ];
    let back: Value = serde_json::from_str(&format_json(&odd)).unwrap();
    assert_eq!(back, Value::Array(odd));
}
