//! The service keeps listening when a broker's subscription ends, and reports its own stop.

use std::time::{Duration, Instant};

use dispatcher_core::Outcome;
use dispatcher_testkit::expect::{assert_history, call};

use crate::tasks::*;
use crate::{service, WAIT};

#[tokio::test]
async fn resubscribes_after_the_broker_disconnects() {
    let svc = service(1).await;
    let p = svc.publisher();
    p.publish(double::call(1)).await.unwrap();
    svc.wait_for_calls(1, WAIT).await.unwrap();
    svc.memory_broker().unwrap().faults().disconnect();
    assert!(
        p.publish(double::call(2)).await.is_err(),
        "publishing fails while disconnected"
    );
    svc.memory_broker().unwrap().faults().reconnect();
    // The service subscribes again with backoff; publish until one gets through.
    let start = Instant::now();
    loop {
        p.publish(double::call(3)).await.unwrap();
        if svc
            .handle()
            .wait_for_finished(2, Duration::from_millis(300))
            .await
            .is_ok()
        {
            break;
        }
        assert!(start.elapsed() < WAIT, "the service never listened again");
    }
    assert_history(&svc.history()).has(call().args(serde_json::json!([3])).outcome(Outcome::Ok));
    svc.shutdown().await;
}

#[tokio::test]
async fn waiting_on_a_stopped_service_ends_at_once() {
    let svc = service(1).await;
    let t = Instant::now();
    svc.handle().shutdown().await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "idle shutdown took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let e = svc
        .handle()
        .wait_for_finished(1, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(e.to_string().contains("not running"), "{e}");
}
