//! `dispatcherctl` as a subprocess against real services on a real PostgreSQL server (see
//! `dispatcher_testkit::postgres` for where the server comes from). Each test works in a fresh
//! database, so its LISTEN/NOTIFY traffic is its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dispatcher_broker_pg::PgBroker;
use dispatcher_core::{task, Outcome, TaskRegistry};
use dispatcher_runtime::{InProcessPool, LogLevelControl, Service, ServiceHandle};
use dispatcher_testkit::postgres::PgFixture;
use serde_json::{json, Map, Value};

const CHANNEL: &str = "ctl_test";
/// Longest any single dispatcherctl run may take before the test fails.
const RUN_BOUND: Duration = Duration::from_secs(40);

/// Sleeps `secs` seconds and returns them.
#[task(name = "ctl.nap")]
fn nap(secs: f64) -> f64 {
    std::thread::sleep(Duration::from_secs_f64(secs));
    secs
}

/// Adds two numbers.
#[task(name = "ctl.add")]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Fails with a message.
#[task(name = "ctl.fail")]
fn fail(why: String) -> Result<(), String> {
    Err(why)
}

fn registry() -> TaskRegistry {
    TaskRegistry::new()
        .register::<nap>()
        .register::<add>()
        .register::<fail>()
}

/// A log level control that remembers the level.
struct FakeLogLevel(Mutex<String>);

impl LogLevelControl for FakeLogLevel {
    fn set_level(&self, level: &str) -> Result<String, String> {
        if level == "bogus" {
            return Err("not a filter".into());
        }
        let mut l = self.0.lock().unwrap();
        Ok(std::mem::replace(&mut *l, level.to_owned()))
    }
}

async fn service(
    fx: &PgFixture,
    node: &str,
    log: Option<Arc<dyn LogLevelControl>>,
) -> ServiceHandle {
    let broker = Arc::new(PgBroker::connect(&fx.url()).await.unwrap());
    let mut b = Service::builder()
        .registry(registry())
        .broker(broker)
        .channels([CHANNEL])
        .node_id(node)
        .shutdown_grace(Duration::from_secs(1))
        .pool(InProcessPool::new(2));
    if let Some(l) = log {
        b = b.log_control(l);
    }
    b.start().await.unwrap()
}

/// What one run of the binary gave.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// stdout as JSON: the whole of it must be one JSON array.
    fn json(&self) -> Vec<Value> {
        match serde_json::from_str::<Value>(&self.stdout) {
            Ok(Value::Array(a)) => a,
            other => panic!("stdout is not one JSON array: {other:?}\n{self:?}"),
        }
    }

    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }
}

async fn ctl_raw(args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatcherctl"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(RUN_BOUND, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("dispatcherctl {args:?} ran longer than {RUN_BOUND:?}"))
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs dispatcherctl on the fixture's database and the test channel, expecting one reply.
async fn ctl(fx: &PgFixture, args: &[&str]) -> Run {
    let url = fx.url();
    let mut all = vec![
        "--database-url",
        &url,
        "--channel",
        CHANNEL,
        "--timeout",
        "15",
        "--expected-replies",
        "1",
    ];
    all.extend_from_slice(args);
    ctl_raw(&all).await
}

/// The single reply of a `--json` run.
async fn one(fx: &PgFixture, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let run = ctl(fx, &all).await.ok();
    let mut replies = run.json();
    assert_eq!(replies.len(), 1, "{run:?}");
    replies.remove(0)
}

async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn running_count(svc: &ServiceHandle) -> usize {
    let r = svc.control("running", Map::new()).await.unwrap();
    r.as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("worker-"))
        .count()
}

#[tokio::test]
async fn alive_main_metrics_status() {
    let fx = PgFixture::new().await.unwrap();
    let svc = service(&fx, "node-a", None).await;

    let run = ctl(&fx, &["alive"]).await.ok();
    assert_eq!(run.stdout, "node node-a: alive\n", "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
    let alive = one(&fx, &["alive"]).await;
    assert_eq!(alive, json!({"node_id": "node-a"}));

    let main = one(&fx, &["main"]).await;
    assert_eq!(main["node_id"], "node-a");
    assert_eq!(main["pid"], json!(std::process::id()));
    assert!(main["received_count"].is_u64(), "{main}");
    assert!(main["control_count"].as_u64().unwrap() >= 3, "{main}");
    assert!(main["pool"]["finished_count"].is_u64(), "{main}");
    let human = ctl(&fx, &["main"]).await.ok();
    assert!(human.stdout.starts_with("node node-a:\n{\n"), "{human:?}");
    assert!(human.stdout.contains("\"control_count\""), "{human:?}");
    assert!(
        human
            .stdout
            .contains("\npool: 2 workers, 0 running, 0 active\n"),
        "{human:?}"
    );

    svc.submit(add::call(1, 2)).await.unwrap();
    svc.wait_for_finished(1, Duration::from_secs(10))
        .await
        .unwrap();
    let metrics = one(&fx, &["metrics"]).await;
    assert_eq!(metrics["finished"]["ok"], json!(1), "{metrics}");
    assert_eq!(metrics["node_id"], "node-a");
    let human = ctl(&fx, &["metrics"]).await.ok();
    assert!(human.stdout.contains("\"finished\""), "{human:?}");

    let status = one(&fx, &["status"]).await;
    for k in [
        "main",
        "workers",
        "running",
        "aio_tasks",
        "producers",
        "metrics",
        "chunks",
    ] {
        assert!(status.get(k).is_some(), "status lacks {k}: {status}");
    }
    assert_eq!(status["node_id"], "node-a");
    let human = ctl(&fx, &["status"]).await.ok();
    assert!(human.stdout.starts_with("node node-a:\n"), "{human:?}");
    assert!(human.stdout.contains("\"workers\""), "{human:?}");
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn workers_table_and_json() {
    let fx = PgFixture::new().await.unwrap();
    let svc = service(&fx, "node-a", None).await;
    let uuid = svc.submit(nap::call(20.0)).await.unwrap();
    wait_until("a running nap", async || running_count(&svc).await == 1).await;

    let workers = one(&fx, &["workers"]).await;
    let w: Vec<&Value> = workers
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("worker-"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(w.len(), 2, "{workers}");
    assert!(
        w.iter().any(|w| w["current_task_uuid"] == json!(uuid)),
        "{workers}"
    );

    let run = ctl(&fx, &["workers"]).await.ok();
    let out = &run.stdout;
    assert!(out.starts_with("node node-a: 2 workers\n"), "{out}");
    let header = out.lines().nth(1).unwrap();
    for col in [
        "worker",
        "pid",
        "status",
        "finished",
        "current task",
        "uuid",
        "age",
    ] {
        assert!(header.contains(col), "{col:?} missing in {header:?}");
    }
    assert!(out.contains("ctl.nap") && out.contains(&uuid), "{out}");
    // The service says `ready` for both; people read `busy` and `idle`.
    let status_of = |needle: &str| {
        out.lines()
            .find(|l| l.starts_with("worker-") && l.contains(needle))
            .map(|l| l.split_whitespace().nth(2).unwrap_or_default().to_owned())
    };
    assert_eq!(status_of(&uuid).as_deref(), Some("busy"), "{out}");
    assert_eq!(status_of(" - ").as_deref(), Some("idle"), "{out}");
    assert!(!out.contains("ready"), "{out}");

    let canceled = one(
        &fx,
        &["cancel", "--data", &json!({"uuid": uuid}).to_string()],
    )
    .await;
    assert_eq!(canceled.as_object().unwrap().len(), 2, "{canceled}");
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn running_and_cancel_then_history_says_canceled() {
    let fx = PgFixture::new().await.unwrap();
    let svc = service(&fx, "node-a", None).await;
    // Two run (pool of 2), one waits in the queue.
    let first = svc.submit(nap::call(30.0)).await.unwrap();
    let second = svc.submit(nap::call(31.0)).await.unwrap();
    let third = svc.submit(nap::call(32.0)).await.unwrap();
    wait_until("two running naps", async || running_count(&svc).await == 2).await;

    let running = one(&fx, &["running"]).await;
    let keys: Vec<&String> = running.as_object().unwrap().keys().collect();
    assert!(
        keys.iter().filter(|k| k.starts_with("worker-")).count() == 2,
        "{running}"
    );
    assert_eq!(running["queued-0"]["uuid"], json!(third), "{running}");

    let run = ctl(&fx, &["running"]).await.ok();
    let out = &run.stdout;
    assert!(
        out.starts_with("node node-a: 3 running or waiting\n"),
        "{out}"
    );
    let header = out.lines().nth(1).unwrap();
    for col in ["slot", "task", "uuid", "args"] {
        assert!(header.contains(col), "{col:?} missing in {header:?}");
    }
    assert!(out.contains("queued-0") && out.contains("worker-"), "{out}");
    assert!(out.contains("[32.0]"), "{out}");

    // filters
    let filtered = one(
        &fx,
        &["running", "--data", &json!({"uuid": first}).to_string()],
    )
    .await;
    assert_eq!(filtered.as_object().unwrap().len(), 2, "{filtered}");
    let none = ctl(&fx, &["running", "--data", r#"{"task": "ctl.add"}"#])
        .await
        .ok();
    assert_eq!(none.stdout, "node node-a: nothing running or waiting\n");
    let bad = ctl(&fx, &["running", "--data", r#"{"colour": "red"}"#])
        .await
        .ok();
    assert!(
        bad.stdout
            .starts_with("node node-a: error: unknown filter field"),
        "{bad:?}"
    );

    // cancel the first (running) one, human output
    let run = ctl(
        &fx,
        &["cancel", "--data", &json!({"uuid": first}).to_string()],
    )
    .await
    .ok();
    assert!(
        run.stdout.starts_with("node node-a: canceled 1\n"),
        "{run:?}"
    );
    assert!(run.stdout.contains(&first), "{run:?}");
    let history = one(
        &fx,
        &["history", "--data", &json!({"uuid": first}).to_string()],
    )
    .await;
    let calls = history["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{history}");
    assert_eq!(calls[0]["outcome"], "canceled", "{history}");
    assert_eq!(calls[0]["task"], "ctl.nap");

    // cancel the rest by task, JSON output
    let rest = one(&fx, &["cancel", "--data", r#"{"task": "ctl.nap"}"#]).await;
    let uuids: Vec<&Value> = rest
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "node_id")
        .map(|(_, v)| &v["uuid"])
        .collect();
    assert_eq!(uuids.len(), 2, "{rest}");
    assert!(
        uuids.contains(&&json!(second)) && uuids.contains(&&json!(third)),
        "{rest}"
    );
    let history = one(&fx, &["history", "--data", r#"{"outcome": "canceled"}"#]).await;
    assert_eq!(history["calls"].as_array().unwrap().len(), 3, "{history}");
    let nothing = ctl(&fx, &["cancel", "--data", r#"{"task": "ctl.nap"}"#])
        .await
        .ok();
    assert_eq!(
        nothing.stdout,
        "node node-a: nothing matched; nothing canceled\n"
    );
    assert_eq!(
        svc.history(&Default::default())
            .iter()
            .filter(|c| c.outcome == Some(Outcome::Canceled))
            .count(),
        3
    );
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn run_and_history_with_filters() {
    let fx = PgFixture::new().await.unwrap();
    let svc = service(&fx, "node-a", None).await;

    let ack = one(
        &fx,
        &[
            "run",
            "--data",
            r#"{"task": "ctl.add", "args": [2], "kwargs": {"b": 3}}"#,
        ],
    )
    .await;
    let uuid = ack["uuid"].as_str().unwrap().to_owned();
    assert_eq!(ack["ack"]["task"], "ctl.add");
    let run = ctl(
        &fx,
        &["run", "--data", r#"{"task": "ctl.fail", "args": ["boom"]}"#],
    )
    .await
    .ok();
    assert!(
        run.stdout.starts_with("node node-a:\n{\n  \"ack\""),
        "{run:?}"
    );
    let rejected = ctl(&fx, &["run", "--data", r#"{"task": "ctl.nope"}"#])
        .await
        .ok();
    assert!(
        rejected.stdout.starts_with("node node-a: error: "),
        "{rejected:?}"
    );
    assert!(rejected.stdout.contains("ctl.nope"), "{rejected:?}");
    let not_a_task = ctl(&fx, &["run", "--data", r#"{"args": [1]}"#]).await.ok();
    assert!(
        not_a_task
            .stdout
            .contains("error: control_data is not a task message"),
        "{not_a_task:?}"
    );
    svc.wait_for_finished(2, Duration::from_secs(10))
        .await
        .unwrap();

    let all = one(&fx, &["history"]).await;
    let calls = all["calls"].as_array().unwrap();
    assert!(calls.len() >= 2, "{all}");
    let by_task = one(&fx, &["history", "--data", r#"{"task": "ctl.add"}"#]).await;
    let calls = by_task["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{by_task}");
    assert_eq!(calls[0]["uuid"], json!(uuid));
    assert_eq!(calls[0]["outcome"], "ok");
    assert_eq!(calls[0]["result"], json!(5));
    let errors = one(&fx, &["history", "--data", r#"{"outcome": "error"}"#]).await;
    let calls = errors["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{errors}");
    assert_eq!(calls[0]["error"], "boom");
    let limited = one(&fx, &["history", "--data", r#"{"limit": 1}"#]).await;
    assert_eq!(limited["calls"].as_array().unwrap().len(), 1, "{limited}");
    let by_uuid = one(
        &fx,
        &["history", "--data", &json!({"uuid": uuid}).to_string()],
    )
    .await;
    assert_eq!(by_uuid["calls"].as_array().unwrap().len(), 1, "{by_uuid}");

    let run = ctl(&fx, &["history"]).await.ok();
    let out = &run.stdout;
    let header = out.lines().nth(1).unwrap();
    for col in [
        "uuid",
        "task",
        "outcome",
        "wait ms",
        "run ms",
        "total ms",
        "error / result",
    ] {
        assert!(header.contains(col), "{col:?} missing in {header:?}");
    }
    assert!(
        out.contains(&uuid[..8]) && !out.contains(&uuid),
        "short uuids: {out}"
    );
    assert!(out.contains("boom"), "{out}");
    let bad = ctl(&fx, &["history", "--data", r#"{"outcome": "meh"}"#])
        .await
        .ok();
    assert!(
        bad.stdout
            .starts_with("node node-a: error: unknown outcome"),
        "{bad:?}"
    );
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn set_log_level_and_unknown_command() {
    let fx = PgFixture::new().await.unwrap();
    let svc = service(&fx, "node-a", None).await;
    // Without a log control the service answers with an error object: it is printed as one.
    let run = ctl(&fx, &["set_log_level", "--data", r#"{"level": "debug"}"#])
        .await
        .ok();
    assert!(run.stdout.starts_with("node node-a: error: "), "{run:?}");
    let reply = one(&fx, &["set_log_level", "--data", r#"{"level": "debug"}"#]).await;
    assert!(reply["error"].is_string(), "{reply}");
    let missing = one(&fx, &["set_log_level"]).await;
    assert!(
        missing["error"].as_str().unwrap().contains("level"),
        "{missing}"
    );

    let run = ctl(&fx, &["frobnicate"]).await.ok();
    assert_eq!(
        run.stdout, "node node-a: error: No control method frobnicate\n",
        "{run:?}"
    );
    let reply = one(&fx, &["frobnicate", "--data", r#"{"x": 1}"#]).await;
    assert_eq!(
        reply,
        json!({"error": "No control method frobnicate", "node_id": "node-a"})
    );
    svc.shutdown().await.unwrap();

    // With one, the reply is the new and the previous level.
    let log: Arc<dyn LogLevelControl> = Arc::new(FakeLogLevel(Mutex::new("info".into())));
    let svc = service(&fx, "node-b", Some(log)).await;
    let reply = one(&fx, &["set_log_level", "--data", r#"{"level": "debug"}"#]).await;
    assert_eq!(
        reply,
        json!({"logger": "dispatcher", "level": "debug", "previous_level": "info", "node_id": "node-b"})
    );
    let run = ctl(&fx, &["set_log_level", "--data", r#"{"level": "warn"}"#])
        .await
        .ok();
    assert!(run.stdout.starts_with("node node-b:\n"), "{run:?}");
    assert!(
        run.stdout.contains("\"previous_level\": \"debug\""),
        "{run:?}"
    );
    let refused = ctl(&fx, &["set_log_level", "--data", r#"{"level": "bogus"}"#])
        .await
        .ok();
    assert!(
        refused.stdout.starts_with("node node-b: error: "),
        "{refused:?}"
    );
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_services_expected_replies() {
    let fx = PgFixture::new().await.unwrap();
    let a = service(&fx, "node-a", None).await;
    let b = service(&fx, "node-b", None).await;
    let url = fx.url();
    let base = [
        "--database-url",
        url.as_str(),
        "--channel",
        CHANNEL,
        "--json",
    ];

    let start = Instant::now();
    let mut args = base.to_vec();
    args.extend(["--timeout", "20", "--expected-replies", "2", "alive"]);
    let run = ctl_raw(&args).await.ok();
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "stops waiting once 2 replies are in"
    );
    let mut nodes: Vec<String> = run
        .json()
        .iter()
        .map(|r| r["node_id"].as_str().unwrap().to_owned())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["node-a", "node-b"]);
    assert_eq!(run.stderr, "", "{run:?}");

    // Human output: one section per node.
    let mut args = base[..4].to_vec();
    args.extend(["--timeout", "20", "--expected-replies", "2", "workers"]);
    let run = ctl_raw(&args).await.ok();
    assert!(run.stdout.contains("node node-a: 2 workers"), "{run:?}");
    assert!(run.stdout.contains("node node-b: 2 workers"), "{run:?}");

    // Without --expected-replies the whole timeout is waited and both are collected.
    let mut args = base.to_vec();
    args.extend(["--timeout", "2", "alive"]);
    let start = Instant::now();
    let run = ctl_raw(&args).await.ok();
    assert!(start.elapsed() >= Duration::from_secs(2));
    assert_eq!(run.json().len(), 2, "{run:?}");

    // Three expected, two services: exit 1, and what arrived is still printed.
    let mut args = base.to_vec();
    args.extend(["--timeout", "2", "--expected-replies", "3", "alive"]);
    let run = ctl_raw(&args).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json().len(), 2, "{run:?}");
    assert!(
        run.stderr.contains("only 2 of 3 expected replies"),
        "{run:?}"
    );
    assert!(run.stderr.contains(CHANNEL), "{run:?}");

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn nobody_listening_is_exit_1() {
    let fx = PgFixture::new().await.unwrap();
    let url = fx.url();
    let run = ctl_raw(&[
        "--database-url",
        &url,
        "--channel",
        "ctl_nobody",
        "--timeout",
        "1",
        "alive",
    ])
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr
            .contains("no service replied on channel \"ctl_nobody\" within 1s"),
        "{run:?}"
    );
    let run = ctl_raw(&[
        "--database-url",
        &url,
        "--channel",
        "ctl_nobody",
        "--timeout",
        "1",
        "--json",
        "alive",
    ])
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.json().is_empty(), "{run:?}");
}

#[tokio::test]
async fn bad_data_is_exit_2() {
    // Usage errors are found before connecting: no server needed.
    let url = "host=127.0.0.1 port=1 user=postgres connect_timeout=2";
    let run = ctl_raw(&["--database-url", url, "running", "--data", "{bad"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains("not valid JSON") && run.stderr.contains("{bad"),
        "{run:?}"
    );
    let run = ctl_raw(&["--database-url", url, "running", "--data", "[1]"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("JSON object") && run.stderr.contains("[1]"),
        "{run:?}"
    );
    let run = ctl_raw(&["--database-url", url, "--timeout", "soon", "alive"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    let run = ctl_raw(&["--database-url", url, "cancel"]).await;
    assert_eq!(run.code, 2, "cancel without a filter: {run:?}");
    assert!(run.stderr.contains("--data '{}'"), "{run:?}");
    let run = ctl_raw(&["alive"]).await;
    assert_eq!(run.code, 2, "no URL at all: {run:?}");
    assert!(run.stderr.contains("--database-url"), "{run:?}");
    let run = ctl_raw(&[
        "--database-url",
        "host=h port=notaport password=hunter2",
        "alive",
    ])
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("port") && !run.stderr.contains("hunter2"),
        "{run:?}"
    );
}

#[tokio::test]
async fn unreachable_server_is_exit_3() {
    let url = "host=127.0.0.1 port=1 user=postgres password=hunter2 connect_timeout=2";
    let start = Instant::now();
    let run = ctl_raw(&["--database-url", url, "--json", "alive"]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.stdout, "", "{run:?}");
    assert!(start.elapsed() < Duration::from_secs(15));
    assert!(
        run.stderr.contains(
            "cannot connect to host=127.0.0.1 port=1 user=postgres password=*** connect_timeout=2"
        ),
        "{run:?}"
    );
    assert!(!run.stderr.contains("hunter2"), "{run:?}");
    assert!(run.stderr.contains("error connecting to server"), "{run:?}");

    let run = ctl_raw(&[
        "--database-url",
        "postgres://postgres:hunter2@127.0.0.1:1/postgres?connect_timeout=2",
        "alive",
    ])
    .await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr
            .contains("postgres://postgres:***@127.0.0.1:1/postgres"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("hunter2"), "{run:?}");
}

#[tokio::test]
async fn passwords_never_show_whatever_the_connection_string() {
    use dispatcherctl::exit::{CONNECT, USAGE};
    // No server is needed: port 1 refuses connections, and `notaport` does not parse.
    let cases = [
        (
            "postgres://postgres@127.0.0.1:notaport/db?password=TOPSECRET",
            USAGE,
            "postgres://postgres@127.0.0.1:notaport/db?password=***",
        ),
        (
            "host=127.0.0.1 port=notaport user=postgres password=TOPSECRET",
            USAGE,
            "host=127.0.0.1 port=notaport user=postgres password=***",
        ),
        (
            "postgres://postgres@127.0.0.1:1/db?password=TOPSECRET&connect_timeout=2",
            CONNECT,
            "cannot connect to postgres://postgres@127.0.0.1:1/db?password=***&connect_timeout=2",
        ),
        (
            "postgresql://postgres:TOPSECRET@127.0.0.1:1/db?connect_timeout=2",
            CONNECT,
            "cannot connect to postgresql://postgres:***@127.0.0.1:1/db?connect_timeout=2",
        ),
        (
            // tokio-postgres knows `password` in lower case only: an unknown option
            "postgres://postgres:TOPSECRET@127.0.0.1:1/db?PassWord=TOPSECRET",
            USAGE,
            "postgres://postgres:***@127.0.0.1:1/db?PassWord=***",
        ),
        (
            "host=127.0.0.1 port=1 user=postgres password=TOPSECRET connect_timeout=2",
            CONNECT,
            "cannot connect to host=127.0.0.1 port=1 user=postgres password=*** connect_timeout=2",
        ),
        (
            "host=127.0.0.1 port=1 password = 'TOP SECRET' connect_timeout=2",
            CONNECT,
            "cannot connect to host=127.0.0.1 port=1 password=*** connect_timeout=2",
        ),
    ];
    for (url, code, shown) in cases {
        for json in [false, true] {
            let mut args = vec!["--database-url", url, "--timeout", "1"];
            if json {
                args.push("--json");
            }
            args.push("alive");
            let run = ctl_raw(&args).await;
            assert_eq!(run.code, i32::from(code), "{url}: {run:?}");
            assert_eq!(run.stdout, "", "{url}: {run:?}");
            assert!(
                !run.stderr.contains("TOPSECRET") && !run.stderr.contains("SECRET"),
                "{url}: {run:?}"
            );
            assert!(run.stderr.contains(shown), "{url}: {run:?}");
        }
    }
}

#[tokio::test]
async fn database_url_comes_from_the_environment() {
    let fx = PgFixture::new().await.unwrap();
    let svc = service(&fx, "node-a", None).await;
    let out = tokio::time::timeout(
        RUN_BOUND,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatcherctl"))
            .args([
                "--channel",
                CHANNEL,
                "--expected-replies",
                "1",
                "--timeout",
                "15",
                "alive",
            ])
            .env("DATABASE_URL", fx.url())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "node node-a: alive\n"
    );
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn signed_commands_for_a_service_that_requires_them() {
    let fx = PgFixture::new().await.unwrap();
    let secret = "a secret shared by this cluster";
    let key = dispatcher_core::signing::SigningKey::new(secret.as_bytes()).unwrap();
    let broker = Arc::new(PgBroker::connect(&fx.url()).await.unwrap());
    let svc = Service::builder()
        .registry(registry())
        .broker(broker)
        .channels([CHANNEL])
        .node_id("signed")
        .require_signatures(key)
        .pool(InProcessPool::new(1))
        .start()
        .await
        .unwrap();
    let url = fx.url();
    // unsigned: rejected by the service, so no reply
    let r = ctl_raw(&[
        "--database-url",
        &url,
        "--channel",
        CHANNEL,
        "--timeout",
        "1",
        "--expected-replies",
        "1",
        "alive",
    ])
    .await;
    assert_eq!(r.code, 1, "{r:?}");
    // signed with the secret from a file
    let file = std::env::temp_dir().join(format!("ctl-secret-{}", std::process::id()));
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let file_s = file.display().to_string();
    let r = ctl_raw(&[
        "--database-url",
        &url,
        "--channel",
        CHANNEL,
        "--timeout",
        "15",
        "--expected-replies",
        "1",
        "--json",
        "--signing-secret-file",
        &file_s,
        "history",
    ])
    .await
    .ok();
    let calls = r.json()[0]["calls"].as_array().unwrap().clone();
    assert!(
        calls.iter().any(|c| c["outcome"] == "rejected"
            && c["error"].as_str().unwrap().contains("requires signed")),
        "{calls:?}"
    );
    // a missing secret file is a usage error naming it
    let r = ctl_raw(&[
        "--database-url",
        &url,
        "--signing-secret-file",
        "/nonexistent/key",
        "alive",
    ])
    .await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("/nonexistent/key"), "{r:?}");
    let _ = std::fs::remove_file(&file);
    svc.shutdown().await.unwrap();
}
