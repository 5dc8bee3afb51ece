//! What `ChannelBroker` does beyond the conformance suite: its limits, its counters, and a real
//! service receiving tasks through it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use dispatcher_core::{task, Broker, BrokerError, Outcome, Publisher, TaskRegistry};
use dispatcher_example_custom_broker::ChannelBroker;
use dispatcher_runtime::{InProcessPool, Service};
use futures_util::StreamExt;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn payloads_at_the_limit_are_refused_and_send_chunks_them() {
    let bus = ChannelBroker::with_limits(64, Some(1000));
    let e = bus.publish("big", &"x".repeat(1000)).await.unwrap_err();
    assert!(
        matches!(
            e,
            BrokerError::TooLarge {
                size: 1000,
                limit: 999
            }
        ),
        "{e}"
    );
    let mut sub = bus.subscribe(&["big".to_owned()]).await.unwrap();
    dispatcher_core::broker::send(&bus, "big", &"y".repeat(5000))
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        first.payload.len() < 1000,
        "a chunk under the limit: {first:?}"
    );
}

#[tokio::test]
async fn a_batch_with_one_bad_payload_sends_nothing() {
    let bus = ChannelBroker::with_limits(64, Some(100));
    let mut sub = bus.subscribe(&["b".to_owned()]).await.unwrap();
    let batch = vec![
        ("b".to_owned(), "fine".to_owned()),
        ("b".to_owned(), "z".repeat(200)),
    ];
    assert!(matches!(
        bus.publish_batch(&batch).await,
        Err(BrokerError::TooLarge { size: 200, .. })
    ));
    bus.publish("b", "after").await.unwrap();
    let m = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.payload, "after");
}

#[tokio::test]
async fn a_subscription_that_falls_behind_loses_the_oldest_and_they_are_counted() {
    let bus = ChannelBroker::with_limits(4, None);
    let mut sub = bus.subscribe(&["lag".to_owned()]).await.unwrap();
    for i in 0..10 {
        bus.publish("lag", &i.to_string()).await.unwrap();
    }
    let m = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.payload, "6", "the 4 newest are kept");
    assert_eq!(bus.lost_count(), 6);
    assert_eq!(bus.status().details["lost"], json!(6));
    assert_eq!(bus.status().details["published"], json!(10));
}

#[tokio::test]
async fn a_channel_listed_twice_is_delivered_once() {
    let bus = ChannelBroker::new();
    let mut sub = bus
        .subscribe(&["twice".to_owned(), "twice".to_owned()])
        .await
        .unwrap();
    bus.publish("twice", "one").await.unwrap();
    bus.publish("twice", "two").await.unwrap();
    let got: Vec<String> = sub.by_ref().take(2).map(|m| m.payload).collect().await;
    assert_eq!(got, ["one", "two"]);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), sub.next())
            .await
            .is_err(),
        "nothing more"
    );
}

#[tokio::test]
async fn bad_channel_names_are_refused() {
    let bus = ChannelBroker::new();
    let e = bus.publish("", "x").await.unwrap_err();
    assert!(
        matches!(&e, BrokerError::InvalidChannel { name, .. } if name.is_empty()),
        "{e:?}"
    );
    let long = "x".repeat(64);
    let e = bus
        .subscribe(std::slice::from_ref(&long))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&e, BrokerError::InvalidChannel { name, .. } if *name == long),
        "{e:?}"
    );
}

/// Joins its argument's words.
#[task(name = "custom_broker.join")]
fn join(words: Vec<String>) -> String {
    words.join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_receives_tasks_through_it() {
    let bus = ChannelBroker::new();
    let service = Service::builder()
        .registry(TaskRegistry::new().register::<join>())
        .pool(InProcessPool::new(2))
        .broker(Arc::new(bus.clone()))
        .channels(["custom_broker_demo"])
        .start()
        .await
        .unwrap();
    let publisher = Publisher::new(Arc::new(bus.clone()), "custom_broker_demo").unwrap();
    // Large enough to travel as chunks under the 8000-byte limit.
    let words: Vec<String> = (0..3000).map(|i| format!("w{i}")).collect();
    let sent = publisher.publish(join::call(words.clone())).await.unwrap();
    publisher
        .publish(join::call(vec!["hello".into(), "broker".into()]))
        .await
        .unwrap();
    service.wait_for_finished(2, WAIT).await.unwrap();
    let calls = service.history(&Default::default());
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls.iter().all(|c| c.outcome == Some(Outcome::Ok)),
        "{calls:?}"
    );
    let big = calls.iter().find(|c| c.uuid == sent.uuid()).unwrap();
    assert_eq!(big.result, Some(json!(words.join(" "))));
    assert!(
        bus.status().details["published"].as_u64().unwrap() > 2,
        "chunks were sent"
    );
    service.shutdown().await.unwrap();
}
