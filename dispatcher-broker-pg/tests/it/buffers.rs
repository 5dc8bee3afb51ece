//! A subscription buffers a bounded number of notifications and a bounded number of bytes: a
//! flood of batch notifications (up to 8,000 bytes each) waits in PostgreSQL, not in the
//! service's memory.

use std::time::Duration;

use dispatcher_broker_pg::{PgBroker, PgBrokerConfig};
use dispatcher_core::Broker;
use dispatcher_testkit::postgres::PgFixture;
use futures_util::{FutureExt, StreamExt};

use crate::WAIT;

async fn broker_with(fx: &PgFixture, max_bytes: usize) -> PgBroker {
    let mut config = PgBrokerConfig::new(fx.config().clone());
    config.subscriber_capacity = 1_000;
    config.subscriber_max_bytes = max_bytes;
    PgBroker::with_config(config).await.unwrap()
}

/// Messages ready in the subscription now, without letting the listener deliver more (the test
/// runtime has one thread, so it cannot run meanwhile).
fn ready_now(sub: &mut dispatcher_core::Subscription) -> Vec<String> {
    let mut got = Vec::new();
    while let Some(Some(m)) = sub.next().now_or_never() {
        got.push(m.payload);
    }
    got
}

#[tokio::test]
async fn a_subscription_holds_at_most_its_bytes_and_loses_nothing() {
    let fx = PgFixture::new().await.unwrap();
    let b = broker_with(&fx, 1_000).await;
    let mut sub = b.subscribe(&["buf_bytes".to_string()]).await.unwrap();
    let n = 50;
    for i in 0..n {
        // 100 bytes each.
        b.publish("buf_bytes", &format!("{i:03}{}", "x".repeat(97)))
            .await
            .unwrap();
    }
    // Let the listener read all it may.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = ready_now(&mut sub);
    assert_eq!(first.len(), 10, "1,000 bytes of 100-byte messages");
    // The rest arrive as the subscriber takes them, in order.
    let mut all = first;
    while all.len() < n {
        let m = tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("the rest arrives")
            .expect("subscription open");
        all.push(m.payload);
    }
    for (i, p) in all.iter().enumerate() {
        assert!(p.starts_with(&format!("{i:03}")), "{i}: {p:.10}");
    }
    // A payload larger than the whole bound still goes through, alone.
    let large = "y".repeat(5_000);
    b.publish("buf_bytes", &large).await.unwrap();
    b.publish("buf_bytes", "after").await.unwrap();
    let m = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.payload, large);
    let m = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.payload, "after");
}
