//! `running` and `cancel`: the running and queued Calls with their filters, canceling by uuid and
//! by task (table and `--json`), and the canceled Calls in the history.

use dispatcher_core::Outcome;
use dispatcher_testkit::postgres::PgFixture;
use serde_json::{json, Value};

use crate::support::{ctl, nap, one, running_count, service, wait_until};

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
        .error_reply();
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
    assert!(run.stdout.contains(&first[..8]), "{run:?}");
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
