//! The listener recovers from a terminated backend and from a frozen one.

use std::time::{Duration, Instant};

use dispatcher_core::Broker;
use futures_util::StreamExt;

use crate::broker;

/// The broker's status as JSON, for messages and field checks.
fn status_json(b: &dispatcher_broker_pg::PgBroker) -> serde_json::Value {
    serde_json::to_value(b.status()).unwrap()
}

async fn wait_new_listener(
    b: &dispatcher_broker_pg::PgBroker,
    old_pid: i32,
    limit: Duration,
) -> i32 {
    let start = Instant::now();
    loop {
        let pid = b.listener_pid();
        if pid != 0 && pid != old_pid {
            return pid;
        }
        assert!(
            start.elapsed() < limit,
            "listener not replaced within {limit:?}: {}",
            status_json(b)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes until one arrives: after recovery, the subscription works again.
async fn round_trip(
    b: &dispatcher_broker_pg::PgBroker,
    sub: &mut dispatcher_core::Subscription,
    channel: &str,
) {
    for i in 0..50 {
        let token = format!("ping-{i}");
        b.publish(channel, &token).await.unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            assert!(m.payload.starts_with("ping-"));
            return;
        }
    }
    panic!("no message came through after recovery: {}", status_json(b));
}

#[tokio::test]
async fn terminated_backend_is_replaced() {
    let (fx, b) = broker().await;
    let mut sub = b.subscribe(&["recover_term".to_string()]).await.unwrap();
    round_trip(&b, &mut sub, "recover_term").await;
    let pid = b.listener_pid();
    assert!(pid > 0);
    let admin = fx.client().await.unwrap();
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let start = Instant::now();
    wait_new_listener(&b, pid, Duration::from_secs(10)).await;
    round_trip(&b, &mut sub, "recover_term").await;
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(b.recycles() >= 1);
    let status = status_json(&b);
    assert!(status["recycles"].as_u64().unwrap() >= 1, "{status}");
}

#[tokio::test]
async fn frozen_backend_is_detected_by_the_self_check() {
    let (_fx, b) = broker().await;
    let mut sub = b.subscribe(&["recover_frozen".to_string()]).await.unwrap();
    round_trip(&b, &mut sub, "recover_frozen").await;
    let pid = b.listener_pid();
    let frozen = dispatcher_testkit::postgres::Frozen::freeze(pid).unwrap();
    let start = Instant::now();
    let new_pid = wait_new_listener(&b, pid, Duration::from_secs(10)).await;
    let detected = start.elapsed();
    drop(frozen);
    assert_ne!(new_pid, pid);
    assert!(detected < Duration::from_secs(10), "took {detected:?}");
    round_trip(&b, &mut sub, "recover_frozen").await;
    let status = status_json(&b);
    assert!(
        status["self_check"]["failures"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert!(
        status["last_recycle_reason"]
            .as_str()
            .unwrap()
            .contains("self-check"),
        "{status}"
    );
}

#[tokio::test]
async fn subscribing_while_the_listener_starts_is_not_lost() {
    let (fx, _b) = broker().await;
    for i in 0..10 {
        let b = dispatcher_broker_pg::PgBroker::connect(&fx.url())
            .await
            .unwrap();
        let channel = format!("early_{i}");
        let mut sub = b.subscribe(std::slice::from_ref(&channel)).await.unwrap();
        b.publish(&channel, "first").await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap_or_else(|_| panic!("round {i}: nothing arrived: {}", status_json(&b)))
            .unwrap();
        assert_eq!(got.payload, "first");
    }
}

#[tokio::test]
async fn a_healthy_listener_is_never_recycled() {
    // Regression: the first self-check used to fire before the publishing path existed, time out
    // and recycle a healthy connection once after start.
    let (_fx, b) = broker().await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(b.recycles(), 0, "{}", status_json(&b));
    assert!(
        status_json(&b)["self_check"]["count"].as_u64().unwrap() >= 3,
        "{}",
        status_json(&b)
    );
}
