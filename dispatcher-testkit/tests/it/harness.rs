//! The service harness, with small tasks.

use std::sync::Arc;
use std::time::Duration;

use dispatcher_core::{task, Broker, Outcome, Publisher, TaskRegistry};
use dispatcher_runtime::InProcessPool;
use dispatcher_testkit::expect::{assert_history, call};
use dispatcher_testkit::{MemoryBroker, RecordingHook, TestService, TestkitError};
use serde_json::json;

use crate::custom_broker::BroadcastBroker;
use crate::WAIT;

#[task(name = "tk.add")]
pub fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[task(name = "tk.nap")]
pub async fn nap(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

#[task(name = "tk.fail")]
pub fn fail(why: String) -> Result<(), String> {
    Err(why)
}

pub fn registry() -> TaskRegistry {
    TaskRegistry::new()
        .register::<add>()
        .register::<nap>()
        .register::<fail>()
}

#[tokio::test]
async fn smoke_publish_run_and_assert() {
    let svc = TestService::builder()
        .registry(registry())
        .start()
        .await
        .unwrap();
    assert_eq!(svc.channel(), "dispatcher_test");
    let p = svc.publisher();
    let sent = p.publish(add::call(20, 22)).await.unwrap();
    p.publish(fail::call("nope".into())).await.unwrap();
    p.publish(nap::call(30)).await.unwrap();
    let calls = svc.wait_for_calls(3, WAIT).await.unwrap();
    assert_history(&calls)
        .count(3)
        .has(
            call()
                .uuid(sent.uuid())
                .task("tk.add")
                .args(json!([20, 22]))
                .outcome(Outcome::Ok)
                .result(json!(42))
                .channel("dispatcher_test"),
        )
        .has_exactly(
            1,
            call()
                .task("tk.fail")
                .outcome(Outcome::Error)
                .error_contains("nope"),
        )
        .has(
            call()
                .task("tk.nap")
                .ran_longer_than(Duration::from_millis(20))
                .ran_shorter_than(WAIT),
        )
        .has_none(call().outcome(Outcome::Rejected));
    assert_eq!(svc.history(), calls);
    svc.shutdown().await;
}

#[tokio::test]
async fn publish_raw_reaches_the_service_and_malformed_input_is_rejected() {
    let svc = TestService::builder()
        .registry(registry())
        .start()
        .await
        .unwrap();
    svc.publish_raw(r#"{"task": "tk.add", "kwargs": {"a": 1, "b": 2}}"#)
        .await;
    svc.publish_raw("{ not json").await;
    svc.publish_raw(&format!(
        r#"{{"task": "tk.add", "args": [1, 2], "guid": "{}"}}"#,
        "g".repeat(20_000)
    ))
    .await;
    let calls = svc.wait_for_calls(3, WAIT).await.unwrap();
    assert_history(&calls)
        .has(
            call()
                .task("tk.add")
                .kwargs(json!({"a": 1, "b": 2}))
                .result(json!(3)),
        )
        .has(
            call()
                .outcome(Outcome::Rejected)
                .error_contains("invalid JSON"),
        )
        .has(call().outcome(Outcome::Rejected).error_contains("`guid`"));
    svc.shutdown().await;
}

#[tokio::test]
async fn wait_for_calls_times_out_showing_the_history() {
    let svc = TestService::builder()
        .registry(registry())
        .start()
        .await
        .unwrap();
    svc.publisher().publish(add::call(1, 2)).await.unwrap();
    let e = svc
        .wait_for_calls(2, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            TestkitError::Timeout {
                wanted: 2,
                finished: 1,
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("waiting for 2 finished Calls (1 finished)"),
        "{text}"
    );
    assert!(
        text.contains("history so far") && text.contains("tk.add") && text.contains("run_ms"),
        "{text}"
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn custom_channel_broker_pool_and_configure() {
    let bus = MemoryBroker::new();
    let svc = TestService::builder()
        .registry(registry())
        .pool(InProcessPool::new(1))
        .memory_broker(bus.clone())
        .channel("custom_chan")
        .configure(|b| b.node_id("node-under-test").history_size(2))
        .start()
        .await
        .unwrap();
    assert_eq!(svc.handle().node_id(), "node-under-test");
    assert_eq!(svc.channel(), "custom_chan");
    // A publisher of our own on the same bus reaches the service.
    let mine = Publisher::new(Arc::new(bus.clone()), "custom_chan").unwrap();
    for i in 0..3 {
        mine.publish(add::call(i, i)).await.unwrap();
    }
    // One worker: they run one after another; history keeps the newest 2.
    let calls = svc.wait_for_calls(3, WAIT).await.unwrap();
    assert_history(&calls)
        .count(2)
        .in_order([call().args(json!([1, 1])), call().args(json!([2, 2]))])
        .has_none(call().channel("dispatcher_test"));
    assert!(svc.memory_broker().unwrap().published_count() >= 3);
    svc.shutdown().await;
}

#[tokio::test]
async fn hooks_on_the_harness_publisher() {
    let svc = TestService::builder()
        .registry(registry())
        .start()
        .await
        .unwrap();
    let rec = RecordingHook::new();
    let p = svc.publisher().with_hook(rec.clone());
    p.publish(add::call(5, 5)).await.unwrap();
    svc.wait_for_calls(1, WAIT).await.unwrap();
    assert_eq!(rec.tasks(), ["tk.add"]);
    assert_eq!(rec.recorded()[0].channel, "dispatcher_test");
    svc.shutdown().await;
}

#[tokio::test]
async fn a_missing_registry_or_bad_channel_is_an_error() {
    let e = TestService::builder()
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no registry"), "{e}");
    let e = TestService::builder()
        .registry(registry())
        .channel("")
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid channel name"), "{e}");
}

#[tokio::test]
async fn shutdown_ends_running_calls_after_the_short_grace() {
    let svc = TestService::builder()
        .registry(registry())
        .start()
        .await
        .unwrap();
    svc.publisher().publish(nap::call(60_000)).await.unwrap();
    // Let it start.
    for _ in 0..200 {
        let running = svc
            .handle()
            .control("running", Default::default())
            .await
            .unwrap();
        if running
            .as_object()
            .is_some_and(|m| m.keys().any(|k| k.starts_with("worker-")))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    svc.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_history(&svc.history()).has_exactly(1, call().task("tk.nap").outcome(Outcome::Canceled));
}

/// The harness on a broker that is not the memory broker: its publisher, `publish_raw` (in
/// chunks under that broker's smaller limit) and another publisher on the same bus all reach
/// the service; there are no memory-broker faults to reach.
#[tokio::test]
async fn runs_on_any_broker_given_as_an_arc() {
    let bus = BroadcastBroker::new();
    let given: Arc<dyn Broker> = Arc::new(bus.clone());
    let svc = TestService::builder()
        .registry(registry())
        .broker(given.clone())
        .channel("any_broker")
        .start()
        .await
        .unwrap();
    assert!(svc.memory_broker().is_none());
    assert!(Arc::ptr_eq(svc.broker(), &given));
    let sent = svc.publisher().publish(add::call(2, 3)).await.unwrap();
    let why = "w".repeat(10_000);
    svc.publish_raw(&json!({"task": "tk.fail", "args": [why]}).to_string())
        .await;
    Publisher::new(Arc::new(bus.clone()), "any_broker")
        .unwrap()
        .publish(add::call(4, 4))
        .await
        .unwrap();
    let calls = svc.wait_for_calls(3, WAIT).await.unwrap();
    assert_history(&calls)
        .count(3)
        .has(
            call()
                .uuid(sent.uuid())
                .channel("any_broker")
                .outcome(Outcome::Ok)
                .result(json!(5)),
        )
        .has(
            call()
                .task("tk.fail")
                .outcome(Outcome::Error)
                .error_contains(&why),
        )
        .has(call().args(json!([4, 4])).result(json!(8)));
    svc.shutdown().await;
}

#[tokio::test]
async fn the_default_broker_is_a_fresh_memory_broker_with_faults() {
    let svc = TestService::builder()
        .registry(registry())
        .start()
        .await
        .unwrap();
    let bus = svc.memory_broker().expect("the default is a memory broker");
    assert_eq!(svc.broker().status().broker, "memory");
    bus.faults().drop_next(1);
    svc.publisher().publish(add::call(1, 1)).await.unwrap();
    svc.publisher().publish(add::call(2, 2)).await.unwrap();
    let calls = svc.wait_for_calls(1, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_history(&svc.history())
        .count(1)
        .has(call().args(json!([2, 2])));
    assert_eq!(bus.dropped_count(), 1);
    assert_eq!(bus.published_count(), 2);
    drop(calls);
    svc.shutdown().await;
}
