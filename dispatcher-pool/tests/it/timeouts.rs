//! A task's timeout ends its worker, which is replaced.

use dispatcher_core::Outcome;
use dispatcher_pool::ProcessPool;
use dispatcher_testkit::expect::{assert_history, call};

use crate::support::{alive, config, find, service, WAIT};
use crate::tasks::*;

pub async fn timeout_kills_and_replaces_the_worker() {
    let svc = service(ProcessPool::with_config(config(1, 1))).await;
    let p = svc.publisher();
    p.publish(pid::call()).await.unwrap();
    p.publish(slow::call()).await.unwrap();
    p.publish(spin::call()).await.unwrap();
    p.publish(pid::call()).await.unwrap();
    let calls = svc.wait_for_calls(4, WAIT).await.unwrap();
    assert_history(&calls)
        .has(
            call()
                .task("p.slow")
                .outcome(Outcome::Timeout)
                .error_contains("timed out after 0.300s"),
        )
        .has(call().task("p.spin").outcome(Outcome::Timeout))
        .has_none(call().task("p.slow").outcome(Outcome::Ok));
    let slow = find(&calls, "p.slow")[0];
    assert!(
        slow.run_ms.unwrap() >= 290.0 && slow.run_ms.unwrap() < 5000.0,
        "{slow:?}"
    );
    assert!(!alive(slow.pid.unwrap()), "the timed-out worker is gone");
    let pids: Vec<_> = find(&calls, "p.pid")
        .iter()
        .map(|c| c.result.clone().unwrap())
        .collect();
    assert_ne!(pids[0], pids[1], "a new worker replaced the killed one");
    svc.shutdown().await;
}
