//! The testkit's `TestService` on a `PgBroker`: the same harness and assertions as on the
//! memory broker, every message through PostgreSQL.

use std::sync::Arc;

use dispatcher_core::{task, Broker, Outcome, TaskRegistry};
use dispatcher_testkit::expect::{assert_history, call};
use dispatcher_testkit::TestService;
use serde_json::json;

use crate::{broker, WAIT};

#[task(name = "harness.add")]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[task(name = "harness.len")]
fn len(text: String) -> usize {
    text.len()
}

#[tokio::test]
async fn test_service_on_postgres() {
    let (fx, pg) = broker().await;
    let svc = TestService::builder()
        .registry(TaskRegistry::new().register::<add>().register::<len>())
        .broker(pg.clone() as Arc<dyn Broker>)
        .channel("pg_harness")
        .start()
        .await
        .unwrap();
    assert!(svc.memory_broker().is_none());
    assert_eq!(svc.broker().status().broker, "pg_notify");

    // The harness's publisher and publish_raw (20 KB: in chunks under PostgreSQL's limit) ...
    let sent = svc.publisher().publish(add::call(2, 3)).await.unwrap();
    let text = "t".repeat(20_000);
    svc.publish_raw(&json!({"task": "harness.len", "args": [text]}).to_string())
        .await;
    svc.publish_raw(r#"{"task": "harness.nope"}"#).await;
    // ... and a NOTIFY from another session of the fixture's database reach the service.
    fx.client()
        .await
        .unwrap()
        .batch_execute(
            r#"SELECT pg_notify('pg_harness', '{"task": "harness.add", "args": [40, 2]}')"#,
        )
        .await
        .unwrap();

    let calls = svc.wait_for_calls(4, WAIT).await.unwrap();
    assert_history(&calls)
        .count(4)
        .has(
            call()
                .uuid(sent.uuid())
                .task("harness.add")
                .channel("pg_harness")
                .args(json!([2, 3]))
                .outcome(Outcome::Ok)
                .result(json!(5)),
        )
        .has(
            call()
                .task("harness.len")
                .outcome(Outcome::Ok)
                .result(json!(20_000)),
        )
        .has(
            call()
                .task("harness.nope")
                .outcome(Outcome::Rejected)
                .error_contains("unknown task"),
        )
        .has(call().args(json!([40, 2])).result(json!(42)));
    let status = svc
        .handle()
        .control("status", Default::default())
        .await
        .unwrap();
    assert_eq!(status["main"]["brokers"][0]["broker"], json!("pg_notify"));
    svc.shutdown().await;
}
