//! `MemoryBroker` behaviour and fault injection.

use std::sync::Arc;
use std::time::Duration;

use dispatcher_core::{Broker, BrokerError, Outcome, Subscription};
use dispatcher_testkit::expect::{assert_history, call};
use dispatcher_testkit::{MemoryBroker, TestService};
use futures_util::StreamExt;

use crate::harness::{add, registry};
use crate::WAIT;

async fn sub(broker: &MemoryBroker, channel: &str) -> Subscription {
    broker.subscribe(&[channel.to_owned()]).await.unwrap()
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

#[tokio::test]
async fn clones_share_the_bus_and_channels_are_separate() {
    let bus = MemoryBroker::new();
    let other: Arc<dyn Broker> = Arc::new(bus.clone());
    let mut a = sub(&bus, "a").await;
    let mut ab = other
        .subscribe(&["a".to_owned(), "b".to_owned()])
        .await
        .unwrap();
    other.publish("b", "to b").await.unwrap();
    bus.publish("a", "to a").await.unwrap();
    assert_eq!(recv(&mut a).await, "to a");
    assert_eq!(recv(&mut ab).await, "to b");
    assert_eq!(recv(&mut ab).await, "to a");
    nothing_within(&mut a, Duration::from_millis(50)).await;
    assert_eq!(bus.published_count(), 2);
    assert_eq!(bus.subscription_count(), 2);
    drop(a);
    assert_eq!(
        bus.subscription_count(),
        1,
        "a dropped subscription unsubscribes"
    );
}

#[tokio::test]
async fn drop_next_loses_messages_and_counts_them() {
    let bus = MemoryBroker::new();
    let mut s = sub(&bus, "c").await;
    bus.faults().drop_next(2);
    for i in 0..5 {
        bus.publish("c", &i.to_string()).await.unwrap();
    }
    for want in ["2", "3", "4"] {
        assert_eq!(recv(&mut s).await, want);
    }
    nothing_within(&mut s, Duration::from_millis(50)).await;
    assert_eq!(bus.dropped_count(), 2);
    assert_eq!(bus.published_count(), 5, "dropped messages were accepted");
}

#[tokio::test]
async fn duplicate_next_delivers_twice() {
    let bus = MemoryBroker::new();
    let mut s = sub(&bus, "c").await;
    bus.faults().duplicate_next(1);
    bus.publish("c", "x").await.unwrap();
    bus.publish("c", "y").await.unwrap();
    for want in ["x", "x", "y"] {
        assert_eq!(recv(&mut s).await, want);
    }
    nothing_within(&mut s, Duration::from_millis(50)).await;
    assert_eq!(bus.duplicated_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn delay_holds_messages_and_keeps_their_order() {
    let bus = MemoryBroker::new();
    let mut s = sub(&bus, "c").await;
    bus.faults().delay(Duration::from_millis(300));
    let start = tokio::time::Instant::now();
    for i in 0..50 {
        bus.publish("c", &i.to_string()).await.unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "publish does not wait for the delay"
    );
    // Turned off again: the next message still queues behind the delayed ones.
    bus.faults().delay(Duration::ZERO);
    bus.publish("c", "after").await.unwrap();
    assert_eq!(recv(&mut s).await, "0");
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    for i in 1..50 {
        assert_eq!(recv(&mut s).await, i.to_string());
    }
    assert_eq!(recv(&mut s).await, "after");
    // And with nothing in flight, delivery is immediate again.
    let t = tokio::time::Instant::now();
    bus.publish("c", "now").await.unwrap();
    assert_eq!(recv(&mut s).await, "now");
    assert!(t.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn disconnect_ends_streams_and_fails_publishes_until_reconnect() {
    let bus = MemoryBroker::new();
    let mut s = sub(&bus, "c").await;
    let faults = bus.faults();
    faults.disconnect();
    assert!(!faults.is_connected());
    let ended = tokio::time::timeout(WAIT, s.next()).await.unwrap();
    assert!(ended.is_none(), "the stream ends");
    let e = bus.publish("c", "x").await.unwrap_err();
    assert!(matches!(e, BrokerError::Unavailable(_)), "{e:?}");
    assert!(
        e.to_string().contains("memory broker is disconnected"),
        "{e}"
    );
    let e = bus.subscribe(&["c".to_owned()]).await.err().unwrap();
    assert!(matches!(e, BrokerError::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains("disconnected"), "{e}");
    assert_eq!(
        bus.published_count(),
        0,
        "refused publishes are not counted"
    );
    faults.reconnect();
    let mut s = sub(&bus, "c").await;
    bus.publish("c", "back").await.unwrap();
    assert_eq!(recv(&mut s).await, "back");
}

#[tokio::test]
async fn a_full_queue_makes_publish_wait_and_loses_nothing() {
    let bus = MemoryBroker::new().with_capacity(2);
    let mut s = sub(&bus, "c").await;
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
    assert_eq!(bus.dropped_count(), 0);
}

#[tokio::test]
async fn disconnect_releases_a_publisher_waiting_on_a_full_queue() {
    let bus = MemoryBroker::new().with_capacity(1);
    let _s = sub(&bus, "c").await;
    bus.publish("c", "1").await.unwrap();
    let publisher = bus.clone();
    let blocked = tokio::spawn(async move { publisher.publish("c", "2").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    bus.faults().disconnect();
    let e = tokio::time::timeout(WAIT, blocked)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(e.to_string().contains("disconnected"), "{e}");
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
    bus.publish("c", &"x".repeat(7999)).await.unwrap();
    let mut s = sub(&bus, "c").await;
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
async fn bad_channel_names_are_refused() {
    let bus = MemoryBroker::new();
    assert!(matches!(
        bus.publish(&"x".repeat(64), "p").await,
        Err(BrokerError::InvalidChannel { .. })
    ));
    assert!(matches!(
        bus.subscribe(&[String::new()]).await,
        Err(BrokerError::InvalidChannel { .. })
    ));
}

#[tokio::test]
async fn faults_reach_a_running_service() {
    let bus = MemoryBroker::new();
    let svc = TestService::builder()
        .registry(registry())
        .memory_broker(bus.clone())
        .start()
        .await
        .unwrap();
    let p = svc.publisher();
    bus.faults().drop_next(1);
    p.publish(add::call(1, 1)).await.unwrap();
    bus.faults().duplicate_next(1);
    let twice = p.publish(add::call(2, 2)).await.unwrap().uuid().to_owned();
    let calls = svc.wait_for_calls(2, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_history(&svc.history())
        .count(2)
        .has_exactly(2, call().uuid(&twice).outcome(Outcome::Ok))
        .has_none(call().args(serde_json::json!([1, 1])));
    assert_eq!(bus.dropped_count(), 1);
    drop(calls);

    bus.faults().disconnect();
    let e = p.publish(add::call(3, 3)).await.unwrap_err().to_string();
    assert!(e.contains("memory broker is disconnected"), "{e}");
    let e = svc.try_publish_raw("t.add").await.unwrap_err().to_string();
    assert!(e.contains("disconnected"), "{e}");
    svc.shutdown().await;
}

#[tokio::test]
async fn after_a_reconnect_a_stale_full_subscription_blocks_nobody() {
    let bus = MemoryBroker::new().with_capacity(1);
    let mut stale = sub(&bus, "c").await;
    bus.publish("c", "1").await.unwrap(); // its queue is full now
    bus.faults().disconnect();
    bus.faults().reconnect();
    let mut fresh = sub(&bus, "c").await;
    assert_eq!(bus.subscription_count(), 1, "the stale one is gone");
    tokio::time::timeout(WAIT, bus.publish("c", "2"))
        .await
        .expect("publish does not wait for the stale subscription")
        .unwrap();
    assert_eq!(recv(&mut fresh).await, "2");
    let ended = tokio::time::timeout(WAIT, stale.next()).await.unwrap();
    assert!(ended.is_none(), "the stale subscription lost its queue");
}

#[tokio::test]
async fn status_reports_the_bus_the_connection_and_the_counters() {
    let bus = MemoryBroker::new();
    let _s = sub(&bus, "c").await;
    bus.faults().drop_next(1);
    bus.faults().duplicate_next(1);
    bus.publish("c", "lost").await.unwrap();
    bus.publish("c", "twice").await.unwrap();
    let status = serde_json::to_value(bus.status()).unwrap();
    assert_eq!(status["broker"], "memory", "{status}");
    assert_eq!(status["subscriptions"], 1, "{status}");
    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(status["published"], 2, "{status}");
    assert_eq!(status["dropped"], 1, "{status}");
    assert_eq!(status["duplicated"], 1, "{status}");
    bus.faults().disconnect();
    let status = serde_json::to_value(bus.status()).unwrap();
    assert_eq!(status["connected"], false, "{status}");
    assert_eq!(status["subscriptions"], 0, "{status}");
}
