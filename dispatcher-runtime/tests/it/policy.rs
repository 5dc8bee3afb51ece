//! Duplicate policies, delay, the capacity queue, producers and shutdown.

use std::time::Duration;

use dispatcher_core::{Call, Outcome};
use dispatcher_testkit::expect::{assert_history, call};
use dispatcher_testkit::TestService;
use serde_json::json;

use crate::tasks::*;
use crate::{registry, service, WAIT};

fn overlap(a: &Call, b: &Call) -> bool {
    a.started_at.unwrap() < b.finished_at.unwrap() && b.started_at.unwrap() < a.finished_at.unwrap()
}

#[tokio::test]
async fn parallel_duplicates_run_together() {
    let svc = service(2).await;
    let p = svc.publisher();
    p.publish(nap::call(0.3)).await.unwrap();
    p.publish(nap::call(0.3)).await.unwrap();
    let calls = svc.wait_for_calls(2, WAIT).await.unwrap();
    assert_history(&calls).has_exactly(2, call().task("t.nap").outcome(Outcome::Ok));
    assert!(overlap(&calls[0], &calls[1]), "{calls:#?}");
    svc.shutdown().await;
}

#[tokio::test]
async fn discard_drops_duplicates_but_not_other_arguments() {
    let svc = service(4).await;
    let p = svc.publisher();
    p.publish(exclusive::call(0.4)).await.unwrap();
    p.publish(exclusive::call(0.4)).await.unwrap();
    p.publish(exclusive::call(0.41)).await.unwrap();
    let calls = svc.wait_for_calls(3, WAIT).await.unwrap();
    assert_history(&calls)
        .has_exactly(1, call().args(json!([0.4])).outcome(Outcome::Ok))
        .has_exactly(
            1,
            call()
                .args(json!([0.4]))
                .outcome(Outcome::Discarded)
                .error_contains("on_duplicate = discard"),
        )
        .has_exactly(1, call().args(json!([0.41])).outcome(Outcome::Ok));
    // once the first finished, the same arguments run again
    p.publish(exclusive::call(0.0)).await.unwrap();
    p.publish(exclusive::call(0.4)).await.unwrap();
    let calls = svc.wait_for_calls(5, WAIT).await.unwrap();
    assert_history(&calls).has_exactly(2, call().args(json!([0.4])).outcome(Outcome::Ok));
    svc.shutdown().await;
}

#[tokio::test]
async fn serial_runs_duplicates_one_after_another() {
    let svc = service(4).await;
    let p = svc.publisher();
    for _ in 0..3 {
        p.publish(one_at_a_time::call(0.15)).await.unwrap();
    }
    let calls = svc.wait_for_calls(3, WAIT).await.unwrap();
    assert_history(&calls).has_exactly(3, call().task("t.serial").outcome(Outcome::Ok));
    for i in 0..3 {
        for j in i + 1..3 {
            assert!(
                !overlap(&calls[i], &calls[j]),
                "serial Calls overlapped: {calls:#?}"
            );
        }
    }
    assert!(
        calls.iter().filter(|c| c.queued_at.is_some()).count() >= 2,
        "two waited"
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn queue_one_keeps_one_waiting_and_discards_the_rest() {
    let svc = service(4).await;
    let p = svc.publisher();
    for _ in 0..4 {
        p.publish(keep_one::call(0.3)).await.unwrap();
    }
    let calls = svc.wait_for_calls(4, WAIT).await.unwrap();
    assert_history(&calls)
        .has_exactly(2, call().task("t.queue_one").outcome(Outcome::Ok))
        .has_exactly(2, call().task("t.queue_one").outcome(Outcome::Discarded));
    let ran: Vec<_> = calls
        .iter()
        .filter(|c| c.outcome == Some(Outcome::Ok))
        .collect();
    assert!(!overlap(ran[0], ran[1]));
    svc.shutdown().await;
}

#[tokio::test]
async fn delay_holds_the_call() {
    let svc = service(2).await;
    svc.publisher()
        .publish(double::call(1).delay(Duration::from_millis(400)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let running = svc
        .handle()
        .control("running", Default::default())
        .await
        .unwrap();
    assert!(running.get("delayed-0").is_some(), "{running}");
    let calls = svc.wait_for_calls(1, WAIT).await.unwrap();
    let c = &calls[0];
    assert_eq!(c.outcome, Some(Outcome::Ok));
    assert!(c.wait_ms.unwrap() >= 390.0, "{c:?}");
    assert!(c.queued_at.is_some());
    svc.shutdown().await;
}

#[tokio::test]
async fn capacity_queue_and_its_bound() {
    let svc = TestService::builder()
        .registry(registry())
        .pool(dispatcher_runtime::InProcessPool::new(1))
        .configure(|b| b.max_waiting(2))
        .start()
        .await
        .unwrap();
    let p = svc.publisher();
    for _ in 0..4 {
        p.publish(nap::call(0.2)).await.unwrap();
    }
    let calls = svc.wait_for_calls(4, WAIT).await.unwrap();
    assert_history(&calls)
        .has_exactly(3, call().task("t.nap").outcome(Outcome::Ok))
        .has_exactly(
            1,
            call()
                .task("t.nap")
                .outcome(Outcome::Rejected)
                .error_contains("at capacity"),
        );
    let ok: Vec<_> = calls
        .iter()
        .filter(|c| c.outcome == Some(Outcome::Ok))
        .collect();
    let last = ok.last().unwrap();
    assert!(
        last.wait_ms.unwrap() >= 350.0,
        "the third waited for two: {last:?}"
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn on_start_and_scheduled_producers() {
    let svc = TestService::builder()
        .registry(registry())
        .configure(|b| {
            b.on_start(double::call(100))
                .schedule(double::call(7), Duration::from_millis(100))
        })
        .start()
        .await
        .unwrap();
    let calls = svc.wait_for_calls(4, WAIT).await.unwrap();
    assert_history(&calls)
        .has_exactly(1, call().args(json!([100])).outcome(Outcome::Ok))
        .has(call().args(json!([7])).outcome(Outcome::Ok));
    let scheduled: Vec<_> = calls.iter().filter(|c| c.args == json!([7])).collect();
    assert!(scheduled.len() >= 3);
    let mut uuids: Vec<_> = scheduled.iter().map(|c| c.uuid.clone()).collect();
    uuids.dedup();
    assert_eq!(
        uuids.len(),
        scheduled.len(),
        "each scheduled run is its own Call"
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_running_finish_and_cancels_waiting() {
    let svc = TestService::builder()
        .registry(registry())
        .pool(dispatcher_runtime::InProcessPool::new(1))
        .start()
        .await
        .unwrap();
    let p = svc.publisher();
    p.publish(nap::call(0.3)).await.unwrap();
    p.publish(nap::call(0.3)).await.unwrap();
    p.publish(double::call(1).delay(Duration::from_secs(60)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    svc.handle()
        .shutdown_with_grace(Some(Duration::from_secs(5)))
        .await
        .unwrap();
    let calls = svc.history();
    assert_history(&calls)
        .count(3)
        .has_exactly(1, call().task("t.nap").outcome(Outcome::Ok))
        .has_exactly(
            1,
            call()
                .task("t.nap")
                .outcome(Outcome::Canceled)
                .error_contains("abandoned at shutdown"),
        )
        .has_exactly(1, call().task("t.double").outcome(Outcome::Canceled));
}

#[tokio::test]
async fn shutdown_grace_ends_long_calls() {
    let svc = service(1).await;
    svc.publisher().publish(nap::call(30.0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    svc.handle()
        .shutdown_with_grace(Some(Duration::from_millis(200)))
        .await
        .unwrap();
    assert_history(&svc.history()).has_exactly(1, call().task("t.nap").outcome(Outcome::Canceled));
}

#[tokio::test]
async fn a_second_shutdown_with_a_shorter_grace_ends_at_once() {
    let svc = service(1).await;
    svc.publisher().publish(nap::call(30.0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let h = svc.handle();
    let started = std::time::Instant::now();
    let (first, second) = tokio::join!(
        h.shutdown_with_grace(Some(Duration::from_secs(60))),
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            h.shutdown_with_grace(Some(Duration::ZERO)).await
        }
    );
    first.unwrap();
    second.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "waited {:?}: the second request did not shorten the grace",
        started.elapsed()
    );
    assert_history(&svc.history()).has_exactly(1, call().task("t.nap").outcome(Outcome::Canceled));
}
