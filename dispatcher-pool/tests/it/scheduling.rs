//! The workers' scheduling policy (`ProcessPoolConfig::worker_scheduling`).

use dispatcher_pool::{ProcessPool, WorkerScheduling};
use serde_json::json;

use crate::support::{config, service, WAIT};
use crate::tasks::*;

const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;

/// The policy of a worker and of a process its task starts, under `scheduling`.
async fn policies(scheduling: Option<WorkerScheduling>) -> serde_json::Value {
    let mut c = config(1, 1);
    if let Some(s) = scheduling {
        c.worker_scheduling = s;
    }
    let svc = service(ProcessPool::with_config(c)).await;
    svc.publisher().publish(policy::call()).await.unwrap();
    let calls = svc.wait_for_calls(1, WAIT).await.unwrap();
    svc.shutdown().await;
    assert_eq!(calls[0].error, None, "{:?}", calls[0]);
    calls[0].result.clone().unwrap()
}

pub async fn workers_run_under_sched_batch_by_default() {
    assert_eq!(policies(None).await, json!([SCHED_BATCH, SCHED_BATCH]));
}

pub async fn normal_scheduling_keeps_the_default_policy() {
    assert_eq!(
        policies(Some(WorkerScheduling::Normal)).await,
        json!([SCHED_OTHER, SCHED_OTHER])
    );
}
