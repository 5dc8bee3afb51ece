//! Scaling: queue pressure adds workers up to `max_workers`; idle ones above `min_workers` go.

use std::time::Duration;

use dispatcher_pool::ProcessPool;

use crate::support::{config, service, wait_workers, workers, WAIT};
use crate::tasks::*;

pub async fn scale_up_and_down() {
    let mut c = config(1, 3);
    c.scale_down_after = Duration::from_millis(300);
    let svc = service(ProcessPool::with_config(c)).await;
    assert_eq!(workers(&svc).await.len(), 1);
    let p = svc.publisher();
    for _ in 0..3 {
        p.publish(sleep::call(0.8)).await.unwrap();
    }
    let calls = svc.wait_for_calls(3, WAIT).await.unwrap();
    let mut pids: Vec<_> = calls
        .iter()
        .map(|c| c.result.clone().unwrap().to_string())
        .collect();
    pids.sort();
    pids.dedup();
    assert!(pids.len() >= 2, "queue pressure added workers: {calls:#?}");
    wait_workers(&svc, Duration::from_secs(5), "back to 1", |w| w.len() == 1).await;
    svc.shutdown().await;
}
