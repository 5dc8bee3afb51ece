//! What the tests share: a service with a process pool of this binary, and waiting for workers.

use std::future::Future;
use std::time::{Duration, Instant};

use dispatcher_core::Call;
use dispatcher_pool::{ProcessPool, ProcessPoolConfig};
use dispatcher_testkit::TestService;
use libtest_mimic::Failed;
use serde_json::{json, Value};

use crate::tasks;

/// How long a test waits for Calls to end or start.
pub const WAIT: Duration = Duration::from_secs(15);

pub fn block_on<F: Future<Output = ()>>(f: F) -> Result<(), Failed> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| Failed::from(e.to_string()))?;
    rt.block_on(f);
    Ok(())
}

pub fn config(min: usize, max: usize) -> ProcessPoolConfig {
    let mut c = ProcessPoolConfig::default();
    c.min_workers = min;
    c.max_workers = max;
    c.kill_grace = Duration::from_millis(300);
    c
}

pub async fn service(pool: ProcessPool) -> TestService {
    TestService::builder()
        .registry(tasks::registry())
        .pool(pool)
        .start()
        .await
        .expect("service with a process pool starts")
}

pub async fn workers(svc: &TestService) -> serde_json::Map<String, Value> {
    svc.handle()
        .control("workers", Default::default())
        .await
        .unwrap()
        .as_object()
        .cloned()
        .unwrap()
}

/// Waits until `pred` holds for the workers, or panics after `limit`.
pub async fn wait_workers(
    svc: &TestService,
    limit: Duration,
    what: &str,
    pred: impl Fn(&serde_json::Map<String, Value>) -> bool,
) {
    let start = Instant::now();
    loop {
        let w = workers(svc).await;
        if pred(&w) {
            return;
        }
        if start.elapsed() > limit {
            panic!("workers never became {what} within {limit:?}: {w:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn idle_count(w: &serde_json::Map<String, Value>) -> usize {
    w.values()
        .filter(|v| v["status"] == json!("ready") && v["current_task"].is_null())
        .count()
}

pub fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; treat it as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"),
        Err(_) => false,
    }
}

pub async fn wait_running_pid(svc: &TestService, uuid: &str) -> u32 {
    let start = Instant::now();
    loop {
        for v in workers(svc).await.values() {
            if v["current_task_uuid"] == json!(uuid) {
                return v["pid"].as_u64().unwrap() as u32;
            }
        }
        assert!(start.elapsed() < WAIT, "call {uuid} never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn find<'a>(calls: &'a [Call], task: &str) -> Vec<&'a Call> {
    calls.iter().filter(|c| c.task == task).collect()
}
