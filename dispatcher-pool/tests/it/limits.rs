//! Memory and process limits, and the worker's process group: what a task started dies with its
//! worker.

use std::time::{Duration, Instant};

use dispatcher_core::Outcome;
use dispatcher_pool::ProcessPool;
use dispatcher_testkit::expect::{assert_history, call};
use serde_json::json;

use crate::support::{alive, config, find, service, WAIT};
use crate::tasks::*;

pub async fn memory_limit_ends_a_greedy_worker() {
    let mut c = config(1, 1);
    c.max_worker_rss = Some(64 << 20);
    c.limit_check_interval = Duration::from_millis(20);
    let svc = service(ProcessPool::with_config(c)).await;
    svc.publisher().publish(eat::call(400)).await.unwrap();
    svc.publisher().publish(double::call(2)).await.unwrap();
    let calls = svc.wait_for_calls(2, WAIT).await.unwrap();
    assert_history(&calls)
        .has_exactly(
            1,
            call()
                .task("p.eat")
                .outcome(Outcome::WorkerLost)
                .error_contains("exceeded its memory limit"),
        )
        .has_exactly(1, call().task("p.double").outcome(Outcome::Ok));
    let eat = find(&calls, "p.eat")[0];
    assert!(eat.run_ms.unwrap() < 5_000.0, "{eat:?}");
    svc.shutdown().await;
}

fn pids_in(path: &std::path::Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

async fn wait_all_dead(pids: &[u32]) {
    let t = Instant::now();
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "still alive: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn process_limit_bounds_a_fork_happy_task() {
    let mut c = config(1, 1);
    c.max_worker_processes = Some(5);
    c.limit_check_interval = Duration::from_millis(20);
    let svc = service(ProcessPool::with_config(c)).await;
    let path = std::env::temp_dir().join(format!("spawn-{}", dispatcher_core::call::new_uuid()));
    svc.publisher()
        .publish(spawn_many::call(20, path.display().to_string()))
        .await
        .unwrap();
    let calls = svc.wait_for_calls(1, WAIT).await.unwrap();
    assert_history(&calls).has_exactly(
        1,
        call()
            .task("p.spawn_many")
            .outcome(Outcome::WorkerLost)
            .error_contains("max_worker_processes 5"),
    );
    wait_all_dead(&pids_in(&path)).await;
    let _ = std::fs::remove_file(&path);
    svc.shutdown().await;
}

pub async fn processes_a_task_started_die_with_its_worker() {
    let svc = service(ProcessPool::with_config(config(1, 1))).await;
    let path = std::env::temp_dir().join(format!("spawn-{}", dispatcher_core::call::new_uuid()));
    let uuid = svc
        .publisher()
        .publish(spawn_many::call(3, path.display().to_string()))
        .await
        .unwrap()
        .uuid()
        .to_owned();
    let t = Instant::now();
    while pids_in(&path).len() < 3 {
        assert!(t.elapsed() < WAIT, "children never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pids = pids_in(&path);
    assert!(pids.iter().all(|p| alive(*p)));
    svc.handle()
        .control("cancel", json!({"uuid": uuid}).as_object().unwrap().clone())
        .await
        .unwrap();
    svc.wait_for_calls(1, WAIT).await.unwrap();
    wait_all_dead(&pids).await;
    let _ = std::fs::remove_file(&path);
    svc.shutdown().await;
}
