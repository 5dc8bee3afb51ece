//! Recycling: a worker is replaced after `max_tasks_per_worker` Calls.

use dispatcher_pool::ProcessPool;

use crate::support::{config, service, WAIT};
use crate::tasks::*;

pub async fn recycle_after_max_tasks() {
    let mut c = config(1, 1);
    c.max_tasks_per_worker = Some(2);
    let svc = service(ProcessPool::with_config(c)).await;
    let p = svc.publisher();
    for _ in 0..6 {
        p.publish(pid::call()).await.unwrap();
    }
    let calls = svc.wait_for_calls(6, WAIT).await.unwrap();
    let pids: Vec<_> = calls.iter().map(|c| c.result.clone().unwrap()).collect();
    assert_eq!(pids[0], pids[1]);
    assert_eq!(pids[2], pids[3]);
    assert_eq!(pids[4], pids[5]);
    assert_ne!(pids[1], pids[2]);
    assert_ne!(pids[3], pids[4]);
    svc.shutdown().await;
}
