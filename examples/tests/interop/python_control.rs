//! dispatcherd's control client → the Rust service: `dispatcherd.control.Control` (its sync and
//! asyncio `control_with_reply`) and dispatcherd's own `dispatcherctl` command get replies they
//! read, with the fields dispatcherd's services give (`node_id` first of all).

use serde_json::{json, Value};

use crate::python_publishes::RustSide;
use crate::support::*;

/// Runs dispatcherd's `Control(...).control_with_reply(command, data=...)`; returns the replies.
async fn py_control(
    s: &RustSide,
    command: &str,
    data: Option<Value>,
    extra: &[&str],
) -> Vec<Value> {
    let data = data.map(|d| d.to_string());
    let mut args = vec!["control", command];
    if let Some(d) = &data {
        args.extend(["--data", d.as_str()]);
    }
    args.extend_from_slice(extra);
    let replies = s.py(&args).await;
    replies
        .as_array()
        .unwrap_or_else(|| panic!("dispatcherd's client returns a list: {replies}"))
        .clone()
}

/// The one reply of this node, checked for what dispatcherd's client relies on: a dict (not its
/// `{"error": "JSON parse error", "original": ...}` stand-in for an unreadable reply) that names
/// the node.
fn one_reply(s: &RustSide, replies: Vec<Value>, command: &str) -> Value {
    assert_eq!(replies.len(), 1, "{command}: one reply: {replies:?}");
    let reply = replies.into_iter().next().unwrap_or_default();
    assert!(reply.is_object(), "{command}: {reply}");
    assert_ne!(
        reply["error"], "JSON parse error",
        "{command}: dispatcherd could not parse the reply: {reply}"
    );
    assert_eq!(
        reply["node_id"],
        s.demo.node_id.as_str(),
        "{command}: {reply}"
    );
    reply
}

/// The `worker-<id>` entries of a reply.
fn worker_entries(reply: &Value) -> Vec<(&String, &Value)> {
    reply
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| k.starts_with("worker-")).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alive_through_the_sync_and_async_clients() {
    bounded(async {
        let s = RustSide::start("ctl_alive").await;
        let sync = one_reply(&s, py_control(&s, "alive", None, &[]).await, "alive");
        assert_eq!(sync, json!({"node_id": s.demo.node_id}));
        let asynchronous = one_reply(
            &s,
            py_control(&s, "alive", None, &["--async"]).await,
            "alive (async)",
        );
        assert_eq!(asynchronous, json!({"node_id": s.demo.node_id}));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_main_status_and_unknown_commands() {
    bounded(async {
        let s = RustSide::start("ctl_workers").await;
        let workers = one_reply(&s, py_control(&s, "workers", None, &[]).await, "workers");
        let entries = worker_entries(&workers);
        assert_eq!(entries.len(), 2, "2 workers: {workers:#}");
        for (name, w) in entries {
            assert_eq!(*name, format!("worker-{}", w["worker_id"]), "{workers:#}");
            assert!(w["pid"].is_u64(), "{name}: {w}");
            assert!(w["status"].is_string(), "{name}: {w}");
            assert!(w["finished_count"].is_u64(), "{name}: {w}");
            assert!(w["current_task"].is_null(), "{name}: {w}");
            assert!(w["current_task_uuid"].is_null(), "{name}: {w}");
            assert!(w["age"].is_number(), "{name}: {w}");
        }

        let main = one_reply(&s, py_control(&s, "main", None, &[]).await, "main");
        for k in ["received_count", "control_count", "pid"] {
            assert!(main[k].is_u64(), "main.{k}: {main:#}");
        }
        for k in ["finished_count", "canceled_count"] {
            assert!(main["pool"][k].is_u64(), "main.pool.{k}: {main:#}");
        }

        let status = one_reply(&s, py_control(&s, "status", None, &[]).await, "status");
        for k in ["main", "workers", "running"] {
            assert!(status[k].is_object(), "status.{k}: {status:#}");
        }

        // dispatcherd's own text for a command it does not know.
        let unknown = one_reply(&s, py_control(&s, "nosuch", None, &[]).await, "nosuch");
        assert_eq!(
            unknown,
            json!({"error": "No control method nosuch", "node_id": s.demo.node_id})
        );

        // dispatcherd's set_log_level takes the level names of Python's logging.
        let set = one_reply(
            &s,
            py_control(&s, "set_log_level", Some(json!({"level": "DEBUG"})), &[]).await,
            "set_log_level",
        );
        assert!(set.get("error").is_none(), "{set:#}");
        assert!(
            set["level"].is_string() && set["previous_level"].is_string(),
            "{set:#}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_with_filters_then_cancel() {
    bounded(async {
        let s = RustSide::start("ctl_running").await;
        let out = s.submit(&["demo.sleep", "--args", "[30]"]).await;
        let uuid = out["message"]["uuid"].as_str().expect("uuid").to_owned();

        let running = poll_until("demo.sleep to show in `running`", || async {
            let r = one_reply(
                &s,
                py_control(&s, "running", Some(json!({"task": "demo.sleep"})), &[]).await,
                "running",
            );
            let found = !worker_entries(&r).is_empty();
            found.then_some(r)
        })
        .await;
        let entries = worker_entries(&running);
        assert_eq!(entries.len(), 1, "{running:#}");
        let (_, message) = entries[0];
        assert_eq!(message["task"], "demo.sleep", "{running:#}");
        assert_eq!(message["uuid"], uuid.as_str(), "{running:#}");
        assert_eq!(message["args"], json!([30]), "{running:#}");

        let by_uuid = one_reply(
            &s,
            py_control(&s, "running", Some(json!({"uuid": uuid})), &[]).await,
            "running by uuid",
        );
        assert_eq!(worker_entries(&by_uuid).len(), 1, "{by_uuid:#}");
        let other = one_reply(
            &s,
            py_control(&s, "running", Some(json!({"task": "demo.noop"})), &[]).await,
            "running demo.noop",
        );
        assert_eq!(other, json!({"node_id": s.demo.node_id}));

        // The workers reply shows the running task as dispatcherd's does.
        let workers = one_reply(&s, py_control(&s, "workers", None, &[]).await, "workers");
        assert!(
            worker_entries(&workers)
                .iter()
                .any(|(_, w)| w["current_task"] == "demo.sleep"
                    && w["current_task_uuid"] == uuid.as_str()),
            "{workers:#}"
        );

        let canceled = one_reply(
            &s,
            py_control(&s, "cancel", Some(json!({"uuid": uuid})), &[]).await,
            "cancel",
        );
        let entries = worker_entries(&canceled);
        assert_eq!(entries.len(), 1, "{canceled:#}");
        assert_eq!(entries[0].1["uuid"], uuid.as_str());
        let call = s.call(&uuid).await;
        assert_eq!(call["outcome"], "canceled", "{call:#}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_command_from_dispatcherd_client() {
    bounded(async {
        let s = RustSide::start("ctl_run").await;
        let reply = one_reply(
            &s,
            py_control(
                &s,
                "run",
                Some(json!({"task": "demo.echo", "args": ["via run"]})),
                &[],
            )
            .await,
            "run",
        );
        let ack = &reply["ack"];
        assert_eq!(ack["task"], "demo.echo", "{reply:#}");
        assert_eq!(ack["args"], json!(["via run"]), "{reply:#}");
        assert!(
            ack.get("uuid").is_none(),
            "the ack is the data as sent: {reply:#}"
        );
        let uuid = reply["uuid"].as_str().expect("the reply names the uuid");
        let call = s.call(uuid).await;
        assert_eq!(call["outcome"], "ok", "{call:#}");
        assert_eq!(call["result"], "via run");

        // Control.control: fire and forget, no reply_to.
        let data = json!({"task": "demo.echo", "args": ["fire and forget"]}).to_string();
        let sent = s
            .py(&["control", "run", "--data", &data, "--no-reply"])
            .await;
        assert_eq!(sent, json!({"sent": true}));
        let call = poll_until("the fire-and-forget run", || async {
            let r = s.control("history", json!({"task": "demo.echo"})).await;
            r["calls"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["result"] == "fire and forget"))
                .cloned()
        })
        .await;
        assert_eq!(call["outcome"], "ok", "{call:#}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcherds_own_cli_reads_the_rust_replies() {
    bounded(async {
        let s = RustSide::start("ctl_cli").await;
        let config = s.scratch.file("dispatcher.yml");
        s.py(&["write-config", &config]).await;
        let node = format!("node_id: {}", s.demo.node_id);

        let (code, out) = py_dispatcherctl(&config, &["alive"]).await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&node), "{out}");

        let (code, out) = py_dispatcherctl(&config, &["workers"]).await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&node), "{out}");
        assert!(
            out.contains("worker-0:") && out.contains("current_task_uuid:"),
            "{out}"
        );

        let (code, out) = py_dispatcherctl(&config, &["running", "--task", "demo.noop"]).await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&node), "{out}");

        let (code, out) = py_dispatcherctl(&config, &["main"]).await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("received_count:"), "{out}");
    })
    .await;
}
