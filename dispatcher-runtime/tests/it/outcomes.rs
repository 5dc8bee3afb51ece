//! Every outcome, through the publisher, the memory broker and the service.

use std::time::Duration;

use async_trait::async_trait;
use dispatcher_core::pool::{CallKey, Dispatched, Job, Pool, PoolEvent, PoolEvents};
use dispatcher_core::{Outcome, WorkerStatus};
use dispatcher_runtime::Service;
use dispatcher_testkit::expect::{assert_history, call};
use dispatcher_testkit::MemoryBroker;
use serde_json::json;

use crate::tasks::*;
use crate::{service, WAIT};

#[tokio::test]
async fn ok_error_panic_timeout() {
    let svc = service(4).await;
    let p = svc.publisher();
    p.publish(double::call(21)).await.unwrap();
    p.publish(fail::call("no luck".into())).await.unwrap();
    p.publish(boom::call()).await.unwrap();
    p.publish(slow::call()).await.unwrap();
    let calls = svc.wait_for_calls(4, WAIT).await.unwrap();
    assert_history(&calls)
        .count(4)
        .has(
            call()
                .task("t.double")
                .args(json!([21]))
                .outcome(Outcome::Ok),
        )
        .has(
            call()
                .task("t.fail")
                .outcome(Outcome::Error)
                .error_contains("no luck"),
        )
        .has(
            call()
                .task("t.boom")
                .outcome(Outcome::Panic)
                .error_contains("boom goes the task"),
        )
        .has(
            call()
                .task("t.slow")
                .outcome(Outcome::Timeout)
                .error_contains("timed out after 0.200s"),
        );
    let ok = calls.iter().find(|c| c.task == "t.double").unwrap();
    assert_eq!(ok.result, Some(json!(42)));
    assert!(ok.received_at.is_some() && ok.started_at.is_some() && ok.finished_at.is_some());
    assert!(ok.time_pub.is_some(), "the publisher stamps time_pub");
    assert_eq!(ok.channel, "dispatcher_test");
    let slow = calls.iter().find(|c| c.task == "t.slow").unwrap();
    assert!(slow.run_ms.unwrap() >= 190.0, "{slow:?}");
    // The service survived all of it.
    p.publish(double::call(1)).await.unwrap();
    svc.wait_for_calls(5, WAIT).await.unwrap();
    svc.shutdown().await;
}

#[tokio::test]
async fn canceled_by_control_command() {
    let svc = service(2).await;
    let uuid = svc
        .publisher()
        .publish(nap::call(30.0))
        .await
        .unwrap()
        .uuid()
        .to_owned();
    // wait until it runs
    let h = svc.handle();
    for _ in 0..200 {
        let running = h.control("running", Default::default()).await.unwrap();
        if running
            .as_object()
            .is_some_and(|m| m.keys().any(|k| k.starts_with("worker-")))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let data = json!({"uuid": uuid}).as_object().unwrap().clone();
    let reply = h.control("cancel", data).await.unwrap();
    let canceled: Vec<_> = reply.as_object().unwrap().values().collect();
    assert_eq!(canceled.len(), 1, "{reply}");
    assert_eq!(canceled[0]["uuid"], json!(uuid));
    let calls = svc.wait_for_calls(1, WAIT).await.unwrap();
    assert_history(&calls).has_exactly(1, call().uuid(&uuid).outcome(Outcome::Canceled));
    svc.shutdown().await;
}

/// A pool whose workers all die: the service must record `worker_lost` and go on.
#[derive(Debug, Default)]
struct DyingPool {
    events: Option<PoolEvents>,
}

#[async_trait]
impl Pool for DyingPool {
    async fn start(&mut self, events: PoolEvents) -> dispatcher_core::Result<()> {
        self.events = Some(events);
        Ok(())
    }
    fn try_dispatch(&mut self, job: Job) -> Result<Dispatched, Job> {
        let Some(events) = self.events.clone() else {
            return Err(job);
        };
        tokio::spawn(async move {
            let _ = events
                .send(PoolEvent::Finished {
                    key: job.key,
                    outcome: Outcome::WorkerLost,
                    result: None,
                    error: Some("worker 7 exited with signal 9".into()),
                    at: dispatcher_core::call::now_epoch(),
                })
                .await;
        });
        Ok(Dispatched::running(7, 4242))
    }
    fn cancel(&mut self, _key: CallKey) -> bool {
        false
    }
    fn workers(&self) -> Vec<WorkerStatus> {
        Vec::new()
    }
    async fn shutdown(&mut self, _grace: Duration) {}
}

#[tokio::test]
async fn worker_lost_is_recorded() {
    let svc = Service::builder()
        .registry(crate::registry())
        .pool(DyingPool::default())
        .start()
        .await
        .unwrap();
    svc.submit(double::call(1)).await.unwrap();
    svc.wait_for_finished(1, WAIT).await.unwrap();
    let calls = svc.history(&Default::default());
    assert_history(&calls).has_exactly(
        1,
        call()
            .task("t.double")
            .outcome(Outcome::WorkerLost)
            .error_contains("signal 9"),
    );
    assert_eq!(calls[0].worker_id, Some(7));
    assert_eq!(calls[0].pid, Some(4242));
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn rejected_unknown_task_bad_args_malformed_json() {
    let svc = service(2).await;
    svc.publish_raw(r#"{"task": "t.nope", "args": [1]}"#).await;
    svc.publish_raw(r#"{"task": "t.double", "args": ["seven"]}"#)
        .await;
    svc.publish_raw(r#"{"task": "t.double", "args": [1, 2]}"#)
        .await;
    svc.publish_raw(r#"{"task": "t.double"}"#).await;
    svc.publish_raw(r#"{"task": "t.double", "kwargs": {"y": 1}}"#)
        .await;
    svc.publish_raw(r#"{"task": "t.double", "args": [1"#).await;
    svc.publish_raw("this is not json").await;
    svc.publish_raw(r#"[1, 2, 3]"#).await;
    // and it still runs good work afterwards
    svc.publish_raw(r#"{"task": "t.double", "kwargs": {"x": 5}}"#)
        .await;
    let calls = svc.wait_for_calls(9, WAIT).await.unwrap();
    assert_history(&calls)
        .has(
            call()
                .task("t.nope")
                .outcome(Outcome::Rejected)
                .error_contains("unknown task \"t.nope\""),
        )
        .has(
            call()
                .task("t.double")
                .outcome(Outcome::Rejected)
                .error_contains("argument `x`: invalid type: string \"seven\", expected i64"),
        )
        .has(
            call()
                .task("t.double")
                .outcome(Outcome::Rejected)
                .error_contains("takes 1 argument (x) but 2 positional were given"),
        )
        .has(
            call()
                .task("t.double")
                .outcome(Outcome::Rejected)
                .error_contains("missing argument `x`"),
        )
        .has(
            call()
                .task("t.double")
                .outcome(Outcome::Rejected)
                .error_contains("unexpected argument `y`"),
        )
        .has(
            call()
                .outcome(Outcome::Rejected)
                .error_contains("invalid JSON"),
        )
        .has(
            call()
                .outcome(Outcome::Rejected)
                .error_contains("not a JSON object and not a bare task name"),
        )
        .has_exactly(8, call().outcome(Outcome::Rejected))
        .has_exactly(
            1,
            call()
                .task("t.double")
                .kwargs(json!({"x": 5}))
                .outcome(Outcome::Ok),
        );
    svc.shutdown().await;
}

#[tokio::test]
async fn bare_names_and_mixed_arguments() {
    let svc = service(2).await;
    svc.publish_raw(r#""t.boom""#).await;
    svc.publish_raw(r#"{"task": "t.greet", "args": ["Ada"], "kwargs": {"greeting": "hi"}}"#)
        .await;
    svc.publish_raw(r#"{"task": "t.greet", "kwargs": {"name": "Bob"}}"#)
        .await;
    svc.publish_raw(
        r#"{"task": "t.greet", "args": ["Cy"], "timeout": 1, "on_duplicate": "discard"}"#,
    )
    .await;
    let calls = svc.wait_for_calls(4, WAIT).await.unwrap();
    assert_history(&calls).has(call().task("t.boom").outcome(Outcome::Panic));
    let results: Vec<_> = calls
        .iter()
        .filter(|c| c.task == "t.greet")
        .map(|c| c.result.clone().unwrap())
        .collect();
    assert!(results.contains(&json!("hi, Ada")));
    assert!(results.contains(&json!("hello, Bob")));
    assert!(results.contains(&json!("hello, Cy")));
    let m = svc
        .handle()
        .control("metrics", Default::default())
        .await
        .unwrap();
    assert_eq!(m["ignored_fields"], json!(1), "{m}");
    svc.shutdown().await;
}

#[tokio::test]
async fn large_arguments_travel_in_chunks() {
    let svc = service(2).await;
    let big = "x".repeat(100_000);
    svc.publisher()
        .publish(greet::call(big.clone(), None))
        .await
        .unwrap();
    let calls = svc.wait_for_calls(1, WAIT).await.unwrap();
    assert_eq!(calls[0].outcome, Some(Outcome::Ok), "{:?}", calls[0].error);
    assert_eq!(calls[0].result, Some(json!(format!("hello, {big}"))));
    assert!(
        svc.memory_broker().unwrap().published_count() > 10,
        "sent as chunks"
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn tasks_from_tasks_record_parent() {
    let svc = service(2).await;
    let parent = svc
        .publisher()
        .publish(fanout::call(3))
        .await
        .unwrap()
        .uuid()
        .to_owned();
    let calls = svc.wait_for_calls(4, WAIT).await.unwrap();
    assert_history(&calls)
        .has_exactly(1, call().task("t.fanout").outcome(Outcome::Ok))
        .has_exactly(
            3,
            call()
                .task("t.double")
                .parent_uuid(&parent)
                .outcome(Outcome::Ok),
        );
    let children: Vec<_> = calls.iter().filter(|c| c.task == "t.double").collect();
    assert!(children.iter().all(|c| c.channel == "local"));
    let returned = calls
        .iter()
        .find(|c| c.task == "t.fanout")
        .unwrap()
        .result
        .clone()
        .unwrap();
    for c in children {
        assert!(returned.as_array().unwrap().contains(&json!(c.uuid)));
    }
    svc.shutdown().await;
}

#[tokio::test]
async fn brokers_keep_other_channels_apart() {
    let broker = MemoryBroker::new();
    let svc = dispatcher_testkit::TestService::builder()
        .registry(crate::registry())
        .memory_broker(broker.clone())
        .channel("only_this")
        .start()
        .await
        .unwrap();
    let p = svc.publisher();
    // `routed` declares queue = "other_channel": nobody listens there.
    let sent = p.publish(routed::call()).await.unwrap();
    assert!(
        matches!(sent, dispatcher_core::Published::Sent { ref channel, .. } if channel == "other_channel")
    );
    p.publish(double::call(2)).await.unwrap();
    let calls = svc.wait_for_calls(1, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_history(&svc.history())
        .count(1)
        .has(call().task("t.double"));
    drop(calls);
    svc.shutdown().await;
}
