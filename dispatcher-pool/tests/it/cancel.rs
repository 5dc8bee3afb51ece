//! Canceling a running Call ends its worker, which is replaced.

use std::time::Duration;

use dispatcher_core::Outcome;
use dispatcher_pool::ProcessPool;
use dispatcher_testkit::expect::{assert_history, call};
use serde_json::json;

use crate::support::{alive, config, idle_count, service, wait_running_pid, wait_workers, WAIT};
use crate::tasks::*;

pub async fn cancel_kills_the_worker() {
    let svc = service(ProcessPool::with_config(config(1, 1))).await;
    let uuid = svc
        .publisher()
        .publish(sleep::call(60.0))
        .await
        .unwrap()
        .uuid()
        .to_owned();
    let pid = wait_running_pid(&svc, &uuid).await;
    let reply = svc
        .handle()
        .control("cancel", json!({"uuid": uuid}).as_object().unwrap().clone())
        .await
        .unwrap();
    assert_eq!(reply.as_object().unwrap().len(), 1, "{reply}");
    let calls = svc.wait_for_calls(1, WAIT).await.unwrap();
    assert_history(&calls).has_exactly(1, call().uuid(&uuid).outcome(Outcome::Canceled));
    assert!(calls[0].run_ms.unwrap() < 5000.0);
    assert!(!alive(pid), "the canceled worker process is gone");
    wait_workers(&svc, Duration::from_secs(2), "1 idle", |w| {
        idle_count(w) == 1
    })
    .await;
    svc.shutdown().await;
}
