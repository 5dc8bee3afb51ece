//! What a Call run in a worker reports: its result, error or panic (the worker survives them), and
//! the tasks it submits.

use dispatcher_core::Outcome;
use dispatcher_pool::ProcessPool;
use dispatcher_testkit::expect::{assert_history, call};
use serde_json::json;

use crate::support::{config, find, service, WAIT};
use crate::tasks::*;

pub async fn ok_error_and_panic_keep_the_worker() {
    let svc = service(ProcessPool::with_config(config(1, 1))).await;
    let p = svc.publisher();
    p.publish(pid::call()).await.unwrap();
    p.publish(double::call(21)).await.unwrap();
    p.publish(panics::call("worker-side panic".into()))
        .await
        .unwrap();
    p.publish(pid::call()).await.unwrap();
    let calls = svc.wait_for_calls(4, WAIT).await.unwrap();
    assert_history(&calls)
        .has(call().task("p.double").outcome(Outcome::Ok))
        .has(
            call()
                .task("p.panic")
                .outcome(Outcome::Panic)
                .error_contains("worker-side panic"),
        );
    assert_eq!(find(&calls, "p.double")[0].result, Some(json!(42)));
    let pids: Vec<_> = find(&calls, "p.pid")
        .iter()
        .map(|c| c.result.clone().unwrap())
        .collect();
    assert_eq!(pids[0], pids[1], "the worker survived the panic");
    assert_ne!(
        pids[0],
        json!(std::process::id()),
        "tasks ran in another process"
    );
    assert_eq!(
        find(&calls, "p.pid")[0].pid,
        pids[0].as_u64().map(|p| p as u32)
    );
    svc.shutdown().await;
}

pub async fn tasks_from_tasks() {
    let svc = service(ProcessPool::with_config(config(2, 2))).await;
    let parent = svc
        .publisher()
        .publish(fanout::call(3))
        .await
        .unwrap()
        .uuid()
        .to_owned();
    let calls = svc.wait_for_calls(4, WAIT).await.unwrap();
    assert_history(&calls)
        .has_exactly(1, call().task("p.fanout").outcome(Outcome::Ok))
        .has_exactly(
            3,
            call()
                .task("p.double")
                .parent_uuid(&parent)
                .outcome(Outcome::Ok),
        );
    svc.shutdown().await;
}
