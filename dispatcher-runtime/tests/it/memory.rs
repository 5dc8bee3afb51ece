//! The runtime's in-memory broker: the broker conformance suite, broadcast, backpressure, the
//! payload limit, and a service with a publisher on one bus.

use std::sync::Arc;
use std::time::Duration;

use dispatcher_core::{Broker, BrokerError, CallFilter, Outcome, Publisher, Subscription};
use dispatcher_runtime::{InProcessPool, MemoryBroker, Service};
use dispatcher_testkit::run_broker_conformance;
use futures_util::StreamExt;
use serde_json::json;

use crate::tasks::*;
use crate::WAIT;

async fn sub(broker: &MemoryBroker, channels: &[&str]) -> Subscription {
    let channels: Vec<String> = channels.iter().map(|c| (*c).to_owned()).collect();
    broker.subscribe(&channels).await.unwrap()
}

async fn recv(sub: &mut Subscription) -> String {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a message in time")
        .expect("the subscription is open")
        .payload
}

async fn nothing_within(sub: &mut Subscription, d: Duration) {
    if let Ok(m) = tokio::time::timeout(d, sub.next()).await {
        panic!("expected nothing, got {m:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_broker_conformance_suite() {
    let bus = MemoryBroker::new();
    run_broker_conformance(move || {
        let b = bus.clone();
        async move { Arc::new(b) as Arc<dyn Broker> }
    })
    .await;
}

// Tiny queues and no payload limit: publishers wait for subscribers all the time, whole 100 KB
// payloads travel, nothing may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_broker_conformance_suite_with_tiny_queues_and_no_limit() {
    let bus = MemoryBroker::new().with_capacity(2).with_max_payload(None);
    run_broker_conformance(move || {
        let b = bus.clone();
        async move { Arc::new(b) as Arc<dyn Broker> }
    })
    .await;
}

#[tokio::test]
async fn clones_share_the_bus_channels_are_separate_and_dropping_unsubscribes() {
    let bus = MemoryBroker::new();
    let other: Arc<dyn Broker> = Arc::new(bus.clone());
    let mut a = sub(&bus, &["a"]).await;
    let mut a2 = sub(&bus, &["a"]).await;
    let mut ab = other
        .subscribe(&["a".to_owned(), "b".to_owned()])
        .await
        .unwrap();
    other.publish("b", "to b").await.unwrap();
    bus.publish("a", "to a").await.unwrap();
    assert_eq!(recv(&mut a).await, "to a");
    assert_eq!(recv(&mut a2).await, "to a", "broadcast");
    assert_eq!(recv(&mut ab).await, "to b");
    assert_eq!(recv(&mut ab).await, "to a");
    nothing_within(&mut a, Duration::from_millis(50)).await;
    assert_eq!(bus.subscription_count(), 3);
    drop(a);
    assert_eq!(
        bus.subscription_count(),
        2,
        "a dropped subscription unsubscribes"
    );
    // Published while nobody listens on the channel: gone, like NOTIFY.
    bus.publish("nobody", "lost").await.unwrap();
    let mut late = sub(&bus, &["nobody"]).await;
    nothing_within(&mut late, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_full_queue_makes_publish_wait_and_loses_nothing() {
    let bus = MemoryBroker::new().with_capacity(2);
    assert_eq!(bus.capacity(), 2);
    let mut s = sub(&bus, &["c"]).await;
    bus.publish("c", "1").await.unwrap();
    bus.publish("c", "2").await.unwrap();
    let publisher = bus.clone();
    let third = tokio::spawn(async move { publisher.publish("c", "3").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !third.is_finished(),
        "publish waits while the queue is full"
    );
    assert_eq!(recv(&mut s).await, "1");
    tokio::time::timeout(WAIT, third)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(recv(&mut s).await, "2");
    assert_eq!(recv(&mut s).await, "3");
}

#[tokio::test]
async fn dropping_a_full_subscription_releases_a_waiting_publisher() {
    let bus = MemoryBroker::new().with_capacity(1);
    let s = sub(&bus, &["c"]).await;
    bus.publish("c", "1").await.unwrap();
    let publisher = bus.clone();
    let blocked = tokio::spawn(async move { publisher.publish("c", "2").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!blocked.is_finished());
    drop(s);
    tokio::time::timeout(WAIT, blocked)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(bus.subscription_count(), 0);
}

#[tokio::test]
async fn streams_end_when_the_last_handle_is_dropped() {
    let bus = MemoryBroker::new();
    let mut s = sub(&bus, &["c"]).await;
    let clone = bus.clone();
    drop(bus);
    clone.publish("c", "still here").await.unwrap();
    assert_eq!(recv(&mut s).await, "still here");
    drop(clone);
    let end = tokio::time::timeout(WAIT, s.next()).await.unwrap();
    assert!(end.is_none(), "the stream ends with the bus");
}

#[tokio::test]
async fn payload_limit_like_postgres_and_chunking_through_send() {
    let bus = MemoryBroker::new();
    assert_eq!(bus.max_payload(), Some(8000));
    let e = bus.publish("c", &"x".repeat(8000)).await.unwrap_err();
    assert!(
        matches!(
            e,
            BrokerError::TooLarge {
                size: 8000,
                limit: 7999
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("8000 bytes exceeds the broker's limit of 7999"),
        "{e}"
    );
    let mut s = sub(&bus, &["c"]).await;
    bus.publish("c", &"x".repeat(7999)).await.unwrap();
    assert_eq!(recv(&mut s).await.len(), 7999);
    dispatcher_core::broker::send(&bus, "c", &"y".repeat(20_000))
        .await
        .unwrap();
    let first = recv(&mut s).await;
    assert!(first.contains("__dispatcherd_chunk__"), "{first}");
    let unlimited = MemoryBroker::new().with_max_payload(None);
    assert_eq!(unlimited.max_payload(), None);
    unlimited.publish("c", &"x".repeat(100_000)).await.unwrap();
}

#[tokio::test]
async fn a_batch_with_one_bad_message_sends_nothing() {
    let bus = MemoryBroker::new();
    let mut s = sub(&bus, &["c"]).await;
    let batch = vec![
        ("c".to_owned(), "fine".to_owned()),
        ("c".to_owned(), "x".repeat(9000)),
    ];
    assert!(bus.publish_batch(&batch).await.is_err());
    assert!(bus.check("c", "fine").is_ok());
    assert!(bus.check(&"c".repeat(64), "fine").is_err());
    assert!(bus.subscribe(&[String::new()]).await.is_err());
    nothing_within(&mut s, Duration::from_millis(50)).await;
    let ok = vec![
        ("c".to_owned(), "1".to_owned()),
        ("c".to_owned(), "2".to_owned()),
    ];
    bus.publish_batch(&ok).await.unwrap();
    assert_eq!(recv(&mut s).await, "1");
    assert_eq!(recv(&mut s).await, "2");
}

/// The embedded use: a service and a publisher on one bus, control commands over it, and the
/// broker's status in the service's.
#[tokio::test]
async fn a_service_and_a_publisher_share_the_bus() {
    let bus: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    let service = Service::builder()
        .registry(crate::registry())
        .broker(bus.clone())
        .channels(["embedded"])
        .pool(InProcessPool::new(2))
        .start()
        .await
        .unwrap();
    let p = Publisher::new(bus.clone(), "embedded").unwrap();
    let sent = p.publish(double::call(21)).await.unwrap();
    // 100 KB of arguments: chunks under the 8000-byte limit, assembled by the service.
    let big = "z".repeat(100_000);
    p.publish(greet::call(big.clone(), None)).await.unwrap();
    service.wait_for_finished(2, WAIT).await.unwrap();
    let calls = service.history(&CallFilter::default());
    let doubled = calls.iter().find(|c| c.uuid == sent.uuid()).unwrap();
    assert_eq!(doubled.outcome, Some(Outcome::Ok));
    assert_eq!(doubled.result, Some(json!(42)));
    assert_eq!(doubled.channel, "embedded");
    let greeted = calls.iter().find(|c| c.task == "t.greet").unwrap();
    assert_eq!(greeted.result, Some(json!(format!("hello, {big}"))));

    let replies = dispatcher_core::control::request(
        bus.as_ref(),
        "embedded",
        "status",
        Default::default(),
        Some(1),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(replies.len(), 1);
    let broker = &replies[0]["main"]["brokers"][0];
    assert_eq!(broker["broker"], json!("memory"), "{}", replies[0]);
    assert_eq!(broker["max_payload"], json!(8000));
    assert!(broker["subscriptions"].as_u64().unwrap() >= 1, "{broker}");
    service.shutdown().await.unwrap();
}
