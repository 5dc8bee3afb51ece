//! The same control commands to a dispatcherd service and to the Rust service, through
//! dispatcherd's own client: every field dispatcherd's reply has, the Rust reply has too (with a
//! JSON value of the same kind), except the differences listed in [`KNOWN_DIFFERENCES`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dispatcher_testkit::postgres::PgFixture;
use serde_json::{json, Value};

use crate::support::*;

/// Fields of dispatcherd's replies that the Rust service does not give, by command. None of them
/// is read by dispatcherd's client (which only needs a JSON object per reply, with `node_id`).
const KNOWN_DIFFERENCES: &[(&str, &[&str])] = &[
    // dispatcherd's worker usage tracker (how long all workers were busy at once).
    ("main", &["pool.usage"]),
];

/// dispatcherd's worker status words.
const DISPATCHERD_WORKER_STATES: &[&str] = &[
    "initialized",
    "spawned",
    "starting",
    "ready",
    "stopping",
    "exited",
    "error",
    "retired",
];

/// Key paths of a reply, two levels deep, with numbered names (`worker-3`, `queued-0`) folded
/// into `worker-*`; `status` only one level deep (its parts are the other commands).
fn shape(command: &str, reply: &Value) -> BTreeMap<String, &'static str> {
    let mut out = BTreeMap::new();
    let depth = if command == "status" { 1 } else { 2 };
    walk(reply, "", depth, &mut out);
    out.remove("node_id");
    if command == "aio_tasks" {
        // Task names are each implementation's own (asyncio's dotted names, our
        // `service-loop`): compare what an entry holds.
        out.clear();
        for (name, entry) in reply.as_object().into_iter().flatten() {
            if name == "node_id" {
                continue;
            }
            out.insert("*".to_owned(), kind(entry));
            for (field, v) in entry.as_object().into_iter().flatten() {
                out.insert(format!("*.{field}"), kind(v));
            }
        }
    }
    out
}

fn fold(key: &str) -> String {
    match key.split_once('-') {
        Some((prefix, n)) if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => {
            format!("{prefix}-*")
        }
        _ => key.to_owned(),
    }
}

fn walk(v: &Value, prefix: &str, depth: usize, out: &mut BTreeMap<String, &'static str>) {
    let Value::Object(m) = v else { return };
    for (k, child) in m {
        let path = if prefix.is_empty() {
            fold(k)
        } else {
            format!("{prefix}.{}", fold(k))
        };
        out.insert(path.clone(), kind(child));
        if depth > 1 {
            walk(child, &path, depth - 1, out);
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

async fn ask(params: &str, command: &str, data: Option<Value>) -> Value {
    let data = data.map(|d| d.to_string());
    let mut args = vec!["control", command];
    if let Some(d) = &data {
        args.extend(["--data", d.as_str()]);
    }
    let replies = py_client(params, &args).await;
    assert_eq!(
        replies.as_array().map(Vec::len),
        Some(1),
        "{command}: {replies}"
    );
    replies[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_replies_have_the_fields_of_dispatcherd_replies() {
    bounded(async {
        let fx = PgFixture::new().await.expect("a PostgreSQL database");
        let py_channel = unique("shape_py");
        let rs_channel = unique("shape_rs");
        let scratch = Scratch::new(&py_channel);
        let py = PyService::start(&fx, &py_channel, &scratch).await;
        let demo = DemoService::start(&fx, &rs_channel, &scratch).await;
        let to_py = py_params(&fx, &py_channel, None);
        let to_rs = py_params(&fx, &rs_channel, None);

        // Something running on each side, so that `running` and `workers` show a task.
        let marker = scratch.file("sleeper");
        py_client(
            &to_py,
            &["submit", "interop_tasks.sleep_then_mark", "--args", &json!([20, marker]).to_string()],
        )
        .await;
        wait_for_file(&marker, |t| t == "started").await;
        py_client(&to_rs, &["submit", "demo.sleep", "--args", "[20]"]).await;
        poll_until("demo.sleep to run", || async {
            let r = ask(&to_rs, "running", None).await;
            (r.as_object().map(|m| m.len()) == Some(2)).then_some(())
        })
        .await;

        let known: BTreeMap<&str, BTreeSet<&str>> = KNOWN_DIFFERENCES
            .iter()
            .map(|(c, k)| (*c, k.iter().copied().collect()))
            .collect();
        let mut problems = Vec::new();
        // Not `metrics`: the name exists on both sides with different counters (see semantics.rs).
        let commands: &[(&str, Option<Value>)] = &[
            ("alive", None),
            ("workers", None),
            ("main", None),
            ("running", None),
            ("status", None),
            ("aio_tasks", None),
            ("chunks", None),
            ("producers", None),
            ("set_log_level", Some(json!({"level": "INFO"}))),
            ("nosuch", None),
        ];
        for (command, data) in commands {
            let from_py = ask(&to_py, command, data.clone()).await;
            let from_rs = ask(&to_rs, command, data.clone()).await;
            assert_eq!(from_py["node_id"], py.node_id.as_str(), "{command}");
            assert_eq!(from_rs["node_id"], demo.node_id.as_str(), "{command}");
            if *command == "workers" {
                // The same status words: a worker running a task is `ready` on both sides.
                for (name, w) in from_rs.as_object().into_iter().flatten() {
                    if name == "node_id" {
                        continue;
                    }
                    let word = w["status"].as_str().unwrap_or_default();
                    if !DISPATCHERD_WORKER_STATES.contains(&word) {
                        problems.push(format!("workers: {name} has status {word:?}, not one of dispatcherd's words"));
                    }
                    if !w["current_task"].is_null() && word != "ready" {
                        problems.push(format!("workers: busy {name} is {word:?}, dispatcherd says \"ready\""));
                    }
                }
            }
            let py_shape = shape(command, &from_py);
            let rs_shape = shape(command, &from_rs);
            let allowed = known.get(command).cloned().unwrap_or_default();
            for (path, py_kind) in &py_shape {
                match rs_shape.get(path) {
                    None if allowed.contains(path.as_str()) => {
                        eprintln!("{command}: known difference: `{path}` only from dispatcherd")
                    }
                    None => problems.push(format!(
                        "{command}: dispatcherd's reply has `{path}` ({py_kind}), the Rust reply does not"
                    )),
                    Some(rs_kind)
                        if rs_kind != py_kind && *rs_kind != "null" && *py_kind != "null" =>
                    {
                        problems.push(format!(
                            "{command}: `{path}` is {py_kind} from dispatcherd, {rs_kind} from Rust"
                        ))
                    }
                    Some(_) => {}
                }
            }
            for path in &allowed {
                if rs_shape.contains_key(*path) {
                    eprintln!("{command}: `{path}` is no longer a difference; drop it from KNOWN_DIFFERENCES");
                }
            }
        }
        assert!(
            problems.is_empty(),
            "Rust replies lack fields of dispatcherd's:\n{}",
            problems.join("\n")
        );

        // Leave nothing running.
        ask(&to_py, "cancel", Some(json!({"task": "interop_tasks.sleep_then_mark"}))).await;
        ask(&to_rs, "cancel", Some(json!({"task": "demo.sleep"}))).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    })
    .await;
}

/// The node ids in a list of replies.
fn nodes(replies: &Value) -> BTreeSet<String> {
    replies
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["node_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A dispatcherd service and a Rust service on the same channel (a cluster being migrated):
/// dispatcherd's client and `dispatcherctl` each get both replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_cluster_answers_dispatcherds_client_and_dispatcherctl() {
    prepare_dispatcherctl().await;
    bounded(async {
        let fx = PgFixture::new().await.expect("a PostgreSQL database");
        let channel = unique("mixed");
        let scratch = Scratch::new(&channel);
        // The Rust service first: its readiness check waits for the first `alive` reply.
        let demo = DemoService::start(&fx, &channel, &scratch).await;
        let py = PyService::start(&fx, &channel, &scratch).await;
        let both: BTreeSet<String> = [py.node_id.clone(), demo.node_id.clone()].into();
        let params = py_params(&fx, &channel, None);

        for client in [
            &["--expected", "2"][..],
            &["--expected", "2", "--async"][..],
        ] {
            let mut args = vec!["control", "alive"];
            args.extend_from_slice(client);
            let replies = py_client(&params, &args).await;
            assert_eq!(
                nodes(&replies),
                both,
                "dispatcherd's client {client:?}: {replies}"
            );
        }

        let (code, replies) =
            dispatcherctl(&fx, &channel, &["--expected-replies", "2", "alive"]).await;
        assert_eq!(code, 0, "{replies}");
        assert_eq!(nodes(&replies), both, "{replies}");

        let (code, replies) =
            dispatcherctl(&fx, &channel, &["--expected-replies", "2", "workers"]).await;
        assert_eq!(code, 0, "{replies}");
        assert_eq!(nodes(&replies), both, "{replies}");
        for r in replies.as_array().into_iter().flatten() {
            assert!(r["worker-0"]["pid"].is_u64(), "{r:#}");
        }
    })
    .await;
}
