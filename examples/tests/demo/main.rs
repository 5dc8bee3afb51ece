//! The demo application as users run it: `dispatcher-demo serve` in its own process on a fresh
//! PostgreSQL database, every demo task published to it, every outcome checked with
//! `dispatcherctl --json history`, then SIGTERM and exit status 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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
    // One table row per Call: the header, 15 rows.
    let rows: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("uuid"))
        .skip(1)
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
