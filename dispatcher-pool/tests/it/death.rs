//! Deaths: a worker that aborts or is killed from outside makes its Call `worker_lost` and is
//! replaced; workers die with a service that is killed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use dispatcher_core::{Outcome, TaskRegistry};
use dispatcher_pool::ProcessPool;
use dispatcher_testkit::expect::{assert_history, call};
use serde_json::json;

use crate::support::{alive, config, idle_count, service, wait_running_pid, wait_workers, WAIT};
use crate::tasks::*;

pub async fn abort_is_worker_lost() {
    let svc = service(ProcessPool::with_config(config(2, 2))).await;
    svc.publisher().publish(abort::call()).await.unwrap();
    let calls = svc.wait_for_calls(1, WAIT).await.unwrap();
    assert_history(&calls).has_exactly(
        1,
        call()
            .task("p.abort")
            .outcome(Outcome::WorkerLost)
            .error_contains("SIGABRT"),
    );
    let t = Instant::now();
    wait_workers(&svc, Duration::from_secs(2), "2 idle", |w| {
        idle_count(w) == 2
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(2));
    svc.publisher().publish(double::call(1)).await.unwrap();
    svc.wait_for_calls(2, WAIT).await.unwrap();
    svc.shutdown().await;
}

pub async fn sigkill_from_outside_is_worker_lost() {
    let svc = service(ProcessPool::with_config(config(1, 1))).await;
    let uuid = svc
        .publisher()
        .publish(sleep::call(60.0))
        .await
        .unwrap()
        .uuid()
        .to_owned();
    let pid = wait_running_pid(&svc, &uuid).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let calls = svc.wait_for_calls(1, WAIT).await.unwrap();
    assert_history(&calls).has_exactly(
        1,
        call()
            .uuid(&uuid)
            .outcome(Outcome::WorkerLost)
            .error_contains("signal 9 (SIGKILL)"),
    );
    wait_workers(
        &svc,
        Duration::from_secs(1),
        "1 idle within a second",
        |w| idle_count(w) == 1,
    )
    .await;
    svc.shutdown().await;
}

/// Run in a child process: a service with two workers; prints the worker pids, then waits.
pub fn serve_for_orphan_test(registry: TaskRegistry) -> ExitCode {
    let Ok(rt) = tokio::runtime::Runtime::new() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async {
        let svc = dispatcher_runtime::Service::builder()
            .registry(registry)
            .pool(ProcessPool::with_config(config(2, 2)))
            .start()
            .await
            .unwrap();
        let w = svc.control("workers", Default::default()).await.unwrap();
        let pids: Vec<u64> = w
            .as_object()
            .unwrap()
            .values()
            .map(|v| v["pid"].as_u64().unwrap())
            .collect();
        println!("{}", json!(pids));
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
    ExitCode::SUCCESS
}

pub async fn orphans_exit_when_the_service_is_killed() {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().unwrap();
    let mut child = tokio::process::Command::new(exe)
        .env("POOL_TEST_SERVE", "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(out).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let pids: Vec<u32> = serde_json::from_str(&line).unwrap();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|p| alive(*p)));
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    let t = Instant::now();
    while pids.iter().any(|p| alive(*p)) && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left: Vec<_> = pids.iter().filter(|p| alive(**p)).collect();
    assert!(left.is_empty(), "orphan workers still alive: {left:?}");
}
