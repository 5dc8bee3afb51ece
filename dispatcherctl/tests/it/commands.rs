//! The read-only commands against one service: `alive`, `main`, `metrics`, `status`,
//! `workers` and `tasks`, each as a human-readable table or text and as `--json`.

use std::time::Duration;

use dispatcher_testkit::postgres::PgFixture;
use serde_json::{json, Value};

use crate::support::{add, assert_no_json, ctl, nap, one, running_count, service, wait_until};

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
    assert!(human.stdout.starts_with("node node-a:\npid "), "{human:?}");
    assert!(human.stdout.contains("control commands\n"), "{human:?}");
    assert!(
        human
            .stdout
            .contains("tasks (3): ctl.add, ctl.fail, ctl.nap\n"),
        "{human:?}"
    );
    // The broker's row: its self-check's round trips rounded, never 0.6563610000000001.
    assert!(human.stdout.contains("\npg_notify "), "{human:?}");
    assert_no_json(&human.stdout);
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
    assert!(
        human.stdout.starts_with("node node-a:\nmetric "),
        "{human:?}"
    );
    let ok_row = human
        .stdout
        .lines()
        .find(|l| l.starts_with("finished ok "))
        .unwrap_or_else(|| panic!("no finished ok row: {human:?}"));
    assert!(ok_row.ends_with(" 1"), "{human:?}");
    assert_no_json(&human.stdout);

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
    assert!(human.stdout.starts_with("node node-a:\npid "), "{human:?}");
    for section in [
        "\nworkers: 2 workers\n",
        "\nrunning: nothing running or waiting\n",
        "\nmetrics:\n",
        "\nproducers: ",
        "\nnewest calls: 1 call\n",
    ] {
        assert!(
            human.stdout.contains(section),
            "{section:?} missing: {human:?}"
        );
    }
    assert_no_json(&human.stdout);
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
    for col in ["worker", "pid", "status", "finished", "task", "uuid", "age"] {
        assert!(header.contains(col), "{col:?} missing in {header:?}");
    }
    // The uuid as the tables show it: its first 8 characters, which the commands accept.
    assert!(out.contains("ctl.nap") && out.contains(&uuid[..8]), "{out}");
    assert!(!out.contains(&uuid), "{out}");
    // The service says `ready` for both; people read `busy` and `idle`.
    let status_of = |needle: &str| {
        out.lines()
            .find(|l| l.starts_with("worker-") && l.contains(needle))
            .map(|l| l.split_whitespace().nth(2).unwrap_or_default().to_owned())
    };
    assert_eq!(status_of(&uuid[..8]).as_deref(), Some("busy"), "{out}");
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
async fn tasks_table_and_json() {
    let fx = PgFixture::new().await.unwrap();
    let svc = service(&fx, "node-a", None).await;

    let tasks = one(&fx, &["tasks"]).await;
    assert_eq!(
        tasks,
        json!({
            "node_id": "node-a",
            "ctl.add": {"timeout_s": 30.0, "on_duplicate": "parallel", "queue": null,
                        "max_attempts": 3, "backoff_s": 1.0, "unique": false,
                        "concurrency": null, "context": false},
            "ctl.fail": {"timeout_s": null, "on_duplicate": "parallel", "queue": null,
                         "max_attempts": 5, "backoff_s": 0.5, "unique": true,
                         "concurrency": null, "context": false},
            "ctl.nap": {"timeout_s": null, "on_duplicate": "parallel", "queue": null,
                        "max_attempts": 3, "backoff_s": 1.0, "unique": false,
                        "concurrency": null, "context": false},
        })
    );

    let run = ctl(&fx, &["tasks"]).await.ok();
    let out = &run.stdout;
    assert!(out.starts_with("node node-a: 3 tasks\n"), "{out}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("---"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec![
                "task",
                "timeout",
                "on_duplicate",
                "queue",
                "attempts",
                "backoff",
                "unique",
                "concurrency",
                "context"
            ],
            vec!["ctl.add", "30s", "parallel", "-", "3", "1s", "no", "-", "no"],
            vec!["ctl.fail", "-", "parallel", "-", "5", "0.5s", "yes", "-", "no"],
            vec!["ctl.nap", "-", "parallel", "-", "3", "1s", "no", "-", "no"],
        ],
        "{out}"
    );
    assert_no_json(out);
    svc.shutdown().await.unwrap();
}
