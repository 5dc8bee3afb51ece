//! The demo application as users run it: `dispatcher-demo serve` in its own process on a fresh
//! PostgreSQL database, every demo task published to it, every outcome checked with
//! `dispatcherctl --json history`, then SIGTERM and exit status 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conninfo_env;
mod redaction;
mod silent_port;
mod socket_dirs;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher::{PgBroker, Publisher, TaskMessage};
use dispatcher_testkit::postgres::PgFixture;
use serde_json::{json, Value};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(30);

/// The dispatcherctl binary of this workspace (built by `cargo test --workspace`; built here
/// when this test runs alone).
fn dispatcherctl() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let path = dir.join("dispatcherctl");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "dispatcherctl"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "could not build dispatcherctl");
    }
    assert!(path.exists(), "no dispatcherctl at {}", path.display());
    path
}

async fn ctl(url: &str, channel: &str, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(dispatcherctl())
        .args([
            "--database-url",
            url,
            "--channel",
            channel,
            "--json",
            "--timeout",
            "2",
        ])
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn message(task: &str, args: Value) -> TaskMessage {
    let mut m = TaskMessage::new(task);
    m.args = args.as_array().cloned().unwrap_or_default();
    m
}

#[tokio::test]
async fn every_demo_task_through_postgres() {
    let fx = PgFixture::new().await.unwrap();
    let url = fx.url();
    let channel = "demo_test";
    let log_path = std::env::temp_dir().join(format!("dispatcher-demo-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_dispatcher-demo"))
        .args(["serve", "--database-url", &url, "--channel", channel])
        .args(["--workers", "3", "--node-id", "demo-test"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // wait until it answers
    let t = Instant::now();
    loop {
        let (code, v, _) = ctl(&url, channel, &["--expected-replies", "1", "alive"]).await;
        if code == 0 && v[0]["node_id"] == json!("demo-test") {
            break;
        }
        assert!(
            t.elapsed() < WAIT,
            "demo never answered; log:\n{}",
            read_log()
        );
    }

    let broker = Arc::new(PgBroker::connect(&url).await.unwrap());
    let p = Publisher::new(broker, channel).unwrap();
    let mut expected = 0;
    for (task, args) in [
        ("demo.noop", json!([])),
        ("demo.echo", json!([{"x": [1, 2, 3]}])),
        ("demo.sleep", json!([0.2])),
        ("demo.slow", json!([])),
        ("demo.fail", json!(["on purpose"])),
        ("demo.panic", json!([])),
        ("demo.abort", json!([])),
        ("demo.exclusive", json!([0.5])),
        ("demo.exclusive", json!([0.5])),
        ("demo.fanout", json!([2])),
    ] {
        p.publish_message(channel, message(task, args))
            .await
            .unwrap();
        expected += 1;
    }
    expected += 2; // the fanout's children

    let t = Instant::now();
    let calls = loop {
        let (code, v, err) = ctl(&url, channel, &["--expected-replies", "1", "history"]).await;
        assert_eq!(code, 0, "{err}");
        let calls = v[0]["calls"].as_array().cloned().unwrap_or_default();
        if calls.len() >= expected {
            break calls;
        }
        assert!(
            t.elapsed() < WAIT,
            "only {} of {expected} Calls; log:\n{}",
            calls.len(),
            read_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let outcome_of = |task: &str| -> Vec<String> {
        calls
            .iter()
            .filter(|c| c["task"] == json!(task))
            .map(|c| c["outcome"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(outcome_of("demo.noop"), ["ok"]);
    assert_eq!(outcome_of("demo.sleep"), ["ok"]);
    assert_eq!(outcome_of("demo.slow"), ["timeout"]);
    assert_eq!(outcome_of("demo.fail"), ["error"]);
    assert_eq!(outcome_of("demo.panic"), ["panic"]);
    assert_eq!(outcome_of("demo.abort"), ["worker_lost"]);
    assert_eq!(outcome_of("demo.fanout"), ["ok"]);
    let mut exclusive = outcome_of("demo.exclusive");
    exclusive.sort();
    assert_eq!(exclusive, ["discarded", "ok"]);
    assert_eq!(outcome_of("demo.echo"), ["ok", "ok", "ok"]);
    let find = |task: &str| calls.iter().find(|c| c["task"] == json!(task)).unwrap();
    assert_eq!(find("demo.fail")["error"], json!("on purpose"));
    assert!(find("demo.panic")["error"]
        .as_str()
        .unwrap()
        .contains("panics on purpose"));
    assert!(find("demo.abort")["error"]
        .as_str()
        .unwrap()
        .contains("SIGABRT"));
    let slow = find("demo.slow");
    let run_ms = slow["run_ms"].as_f64().unwrap();
    assert!(
        (990.0..10_000.0).contains(&run_ms),
        "demo.slow ran {run_ms} ms"
    );
    let fanout_uuid = find("demo.fanout")["uuid"].clone();
    let children = calls
        .iter()
        .filter(|c| c["task"] == json!("demo.echo") && c["parent_uuid"] == fanout_uuid)
        .count();
    assert_eq!(children, 2);
    let echo = calls
        .iter()
        .find(|c| c["task"] == json!("demo.echo") && c["parent_uuid"].is_null())
        .unwrap();
    assert_eq!(echo["result"], json!({"x": [1, 2, 3]}));

    // the pool is back to 3 workers after the abort and the timeout
    let (_, workers, _) = ctl(&url, channel, &["--expected-replies", "1", "workers"]).await;
    assert_eq!(workers[0].as_object().unwrap().len() - 1, 3, "{workers}"); // minus node_id

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(WAIT, demo.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "log:\n{}", read_log());
    let _ = std::fs::remove_file(&log_path);
}

/// `dispatcher-demo` without arguments and without `DATABASE_URL`: the quickstart runs on the
/// runtime's in-memory broker and prints a Call for every message (12 published, 3 children).
#[tokio::test]
async fn quickstart_in_memory() {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(env!("CARGO_BIN_EXE_dispatcher-demo"))
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the quickstart finishes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("on the in-memory broker"), "{stdout}");
    // One table row per Call: the header, its rule, 15 rows.
    let rows: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("uuid"))
        .skip(2)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(rows.len(), 15, "{stdout}");
    let with = |task: &str, outcome: &str| {
        rows.iter()
            .filter(|r| {
                let cols: Vec<&str> = r.split_whitespace().collect();
                cols.get(1) == Some(&task) && cols.get(2) == Some(&outcome)
            })
            .count()
    };
    assert_eq!(with("demo.echo", "ok"), 4, "{stdout}");
    assert_eq!(with("demo.noop", "ok"), 2, "{stdout}");
    assert_eq!(with("demo.sleep", "ok"), 1, "{stdout}");
    assert_eq!(with("demo.fanout", "ok"), 1, "{stdout}");
    assert_eq!(with("demo.slow", "timeout"), 1, "{stdout}");
    assert_eq!(with("demo.fail", "error"), 1, "{stdout}");
    assert_eq!(with("demo.panic", "panic"), 1, "{stdout}");
    assert_eq!(with("demo.abort", "worker_lost"), 1, "{stdout}");
    assert_eq!(with("demo.exclusive", "ok"), 1, "{stdout}");
    assert_eq!(with("demo.exclusive", "discarded"), 1, "{stdout}");
    assert_eq!(with("demo.unknown", "rejected"), 1, "{stdout}");
}

/// Runs `dispatcher-demo ARGS` to its end (bounded); returns exit code, stdout, stderr.
async fn demo_once(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dispatcher-demo"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("dispatcher-demo {args:?} did not finish within 120 s"))
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `dispatcher-demo enqueue`: a job on the durable queue; returns the uuid it printed.
async fn enqueue(url: &str, queue: &str, task: &str, args: &str) -> String {
    let (code, stdout, stderr) = demo_once(
        &[
            "enqueue",
            "--database-url",
            url,
            "--queue",
            queue,
            task,
            args,
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.starts_with("enqueued job "),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
        .split_whitespace()
        .skip_while(|w| *w != "uuid")
        .nth(1)
        .unwrap_or_else(|| panic!("no uuid in {stdout:?}"))
        .to_owned()
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// `dispatcher-demo serve --queue`: the service consumes the durable queue of its database
/// (migrated on start). A job enqueued before any service ran is run once it starts, and
/// `demo.flaky(2)` fails on attempts 1 and 2 and succeeds on 3, each retry after its backoff
/// (0.5 s then 1 s, ±25 %), all read back with `dispatcherctl --json history`. Done jobs leave
/// no rows.
#[tokio::test]
async fn serve_queue_retries_the_flaky_job_until_it_succeeds() {
    let fx = PgFixture::new().await.unwrap();
    let url = fx.url();
    let db = fx.client().await.unwrap();
    let channel = "demo_queue";

    // Nobody consumes yet: the job waits in its table (enqueue migrated the schema).
    let early = enqueue(&url, channel, "demo.echo", r#"[{"early": true}]"#).await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM dispatcher.jobs WHERE state = 'available'"
        )
        .await,
        1
    );

    let log_path =
        std::env::temp_dir().join(format!("dispatcher-demo-queue-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_dispatcher-demo"))
        .args([
            "serve",
            "--queue",
            "--database-url",
            &url,
            "--channel",
            channel,
        ])
        .args(["--workers", "2", "--node-id", "demo-queue"])
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let t = Instant::now();
    loop {
        let (code, v, _) = ctl(&url, channel, &["--expected-replies", "1", "alive"]).await;
        if code == 0 && v[0]["node_id"] == json!("demo-queue") {
            break;
        }
        assert!(
            t.elapsed() < WAIT,
            "demo never answered; log:\n{}",
            read_log()
        );
    }

    let flaky = enqueue(&url, channel, "demo.flaky", "[2]").await;
    let history = |uuid: String| {
        let url = url.clone();
        async move {
            let data = json!({ "uuid": uuid }).to_string();
            let args = ["--expected-replies", "1", "history", "--data", &data];
            let (code, v, err) = ctl(&url, channel, &args).await;
            assert_eq!(code, 0, "{err}");
            v[0]["calls"].as_array().cloned().unwrap_or_default()
        }
    };
    let t = Instant::now();
    let mut calls = loop {
        let calls = history(flaky.clone()).await;
        if calls.iter().any(|c| c["outcome"] == json!("ok")) {
            break calls;
        }
        assert!(
            t.elapsed() < WAIT,
            "demo.flaky did not succeed; its Calls: {calls:#?}\nlog:\n{}",
            read_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    calls.sort_by_key(|c| c["attempt"].as_u64());
    let seen: Vec<(Option<u64>, &str)> = calls
        .iter()
        .map(|c| (c["attempt"].as_u64(), c["outcome"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        seen,
        [(Some(1), "error"), (Some(2), "error"), (Some(3), "ok")],
        "{calls:#?}"
    );
    for (c, attempt) in calls.iter().zip(1..) {
        assert_eq!(c["task"], json!("demo.flaky"));
        assert_eq!(c["args"], json!([2]));
        assert_eq!(c["channel"], json!(channel));
        assert_eq!(c["node_id"], json!("demo-queue"));
        if attempt < 3 {
            assert_eq!(
                c["error"],
                json!(format!(
                    "attempt {attempt} fails on purpose (demo.flaky fails 2 times)"
                ))
            );
        }
    }
    assert_eq!(calls[2]["result"], json!(3));
    // Each retry waited for its backoff: 0.5 s × 2^(attempt - 1), jitter 0.75–1.25.
    let at = |c: &Value, field: &str| c[field].as_f64().unwrap();
    let gap1 = at(&calls[1], "started_at") - at(&calls[0], "finished_at");
    let gap2 = at(&calls[2], "started_at") - at(&calls[1], "finished_at");
    assert!(
        gap1 >= 0.375,
        "attempt 2 started {gap1:.3} s after 1 failed"
    );
    assert!(gap2 >= 0.75, "attempt 3 started {gap2:.3} s after 2 failed");

    // The job enqueued before the service started ran, once.
    let early_calls = history(early).await;
    assert_eq!(early_calls.len(), 1, "{early_calls:#?}");
    assert_eq!(early_calls[0]["outcome"], json!("ok"));
    assert_eq!(early_calls[0]["attempt"], json!(1));
    assert_eq!(early_calls[0]["result"], json!({"early": true}));

    // Done jobs are deleted (settlements are written within milliseconds).
    let t = Instant::now();
    while count(&db, "SELECT count(*) FROM dispatcher.jobs").await
        + count(&db, "SELECT count(*) FROM dispatcher.claims").await
        > 0
    {
        assert!(t.elapsed() < WAIT, "job rows left behind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(WAIT, demo.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "log:\n{}", read_log());
    let _ = std::fs::remove_file(&log_path);
}

/// `dispatcher-demo` with `DATABASE_URL`: the quickstart on PostgreSQL, NOTIFY and the durable
/// queue: a Call for every message, and `demo.flaky(2)` from the queue as attempts 1, 2 (error)
/// and 3 (ok) in the printed table.
#[tokio::test]
async fn quickstart_on_postgres_shows_a_retried_job() {
    let fx = PgFixture::new().await.unwrap();
    let url = fx.url();
    let (code, stdout, stderr) = demo_once(&[], &[("DATABASE_URL", &url)]).await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("on PostgreSQL (DATABASE_URL): NOTIFY and the durable queue"),
        "{stdout}"
    );
    // The header, its rule, then the rows.
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("uuid"))
        .skip(2)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows.len(),
        18,
        "15 from NOTIFY, 3 attempts from the queue:\n{stdout}"
    );
    // uuid, task, outcome, attempt
    let mut flaky: Vec<(&str, &str, &str)> = rows
        .iter()
        .filter(|r| r.get(1) == Some(&"demo.flaky"))
        .map(|r| (r[0], r[3], r[2]))
        .collect();
    flaky.sort_by_key(|r| r.1);
    let uuid = flaky.first().map(|r| r.0).unwrap_or_default();
    assert_eq!(
        flaky,
        [
            (uuid, "1", "error"),
            (uuid, "2", "error"),
            (uuid, "3", "ok")
        ],
        "{stdout}"
    );
    // Calls that came through NOTIFY have no attempt.
    assert!(
        rows.iter()
            .filter(|r| r.get(1) != Some(&"demo.flaky"))
            .all(|r| r.get(3) == Some(&"-")),
        "{stdout}"
    );
    assert!(stdout.contains("attempt 3 succeeded"), "{stdout}");
    // The quickstart made the queue's schema, and its finished job left no row.
    let db = fx.client().await.unwrap();
    assert_eq!(count(&db, "SELECT count(*) FROM dispatcher.jobs").await, 0);
}
