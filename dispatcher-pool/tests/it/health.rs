//! Health pings: an idle worker that does not answer is replaced.

use std::time::{Duration, Instant};

use dispatcher_pool::ProcessPool;
use serde_json::json;

use crate::support::{alive, config, service, wait_workers, workers};

pub async fn unresponsive_idle_worker_is_replaced() {
    let mut c = config(1, 1);
    c.health_interval = Duration::from_millis(200);
    c.health_timeout = Duration::from_millis(300);
    let svc = service(ProcessPool::with_config(c)).await;
    let w = workers(&svc).await;
    let pid = w.values().next().unwrap()["pid"].as_u64().unwrap() as u32;
    let stopped = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(stopped, nix::sys::signal::Signal::SIGSTOP).unwrap();
    wait_workers(&svc, Duration::from_secs(5), "replaced", |w| {
        w.len() == 1
            && w.values().all(|v| {
                v["pid"].as_u64() != Some(u64::from(pid))
                    && v["status"] == json!("ready")
                    && v["current_task"].is_null()
            })
    })
    .await;
    let t = Instant::now();
    while alive(pid) && t.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(pid), "the frozen worker was killed");
    svc.shutdown().await;
}
