//! `run` submits a task message; `history` lists the Calls with its filters (task, outcome, uuid,
//! limit), as a table with short uuids and as `--json`.

use std::time::Duration;

use dispatcher_testkit::postgres::PgFixture;
use serde_json::json;

use crate::support::{ctl, one, service};

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
        run.stdout.starts_with("node node-a: started\ntask "),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("ctl.fail") && run.stdout.contains("[\"boom\"]"),
        "{run:?}"
    );
    let rejected = ctl(&fx, &["run", "--data", r#"{"task": "ctl.nope"}"#])
        .await
        .error_reply();
    assert!(
        rejected.stdout.starts_with("node node-a: error: "),
        "{rejected:?}"
    );
    assert!(rejected.stdout.contains("ctl.nope"), "{rejected:?}");
    let not_a_task = ctl(&fx, &["run", "--data", r#"{"args": [1]}"#])
        .await
        .error_reply();
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
        "finished (UTC)",
        "result / error",
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
        .error_reply();
    assert!(
        bad.stdout
            .starts_with("node node-a: error: unknown outcome"),
        "{bad:?}"
    );
    svc.shutdown().await.unwrap();
}
