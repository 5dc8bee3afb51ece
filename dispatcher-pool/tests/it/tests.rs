//! The tests. Each runs a real service with a `ProcessPool` of this very binary.

use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use dispatcher_core::{Call, Outcome, TaskRegistry};
use dispatcher_pool::{ProcessPool, ProcessPoolConfig};
use dispatcher_testkit::expect::{assert_history, call};
use dispatcher_testkit::TestService;
use libtest_mimic::{Failed, Trial};
use serde_json::{json, Value};

use crate::tasks::{self, *};

const WAIT: Duration = Duration::from_secs(15);

fn block_on<F: Future<Output = ()>>(f: F) -> Result<(), Failed> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| Failed::from(e.to_string()))?;
    rt.block_on(f);
    Ok(())
}

macro_rules! trials {
    ($($name:ident),* $(,)?) => {
        vec![$(Trial::test(stringify!($name), || block_on($name()))),*]
    };
}

pub fn all() -> Vec<Trial> {
    trials![
        ok_error_and_panic_keep_the_worker,
        timeout_kills_and_replaces_the_worker,
        cancel_kills_the_worker,
        abort_is_worker_lost,
        sigkill_from_outside_is_worker_lost,
        recycle_after_max_tasks,
        scale_up_and_down,
        tasks_from_tasks,
        unresponsive_idle_worker_is_replaced,
        orphans_exit_when_the_service_is_killed,
        forgotten_entry_call_fails_loudly,
        worker_that_never_connects_fails_start,
        worker_output_is_logged_with_the_worker_id,
        memory_limit_ends_a_greedy_worker,
        process_limit_bounds_a_fork_happy_task,
        processes_a_task_started_die_with_its_worker,
    ]
}

fn config(min: usize, max: usize) -> ProcessPoolConfig {
    let mut c = ProcessPoolConfig::default();
    c.min_workers = min;
    c.max_workers = max;
    c.kill_grace = Duration::from_millis(300);
    c
}

async fn service(pool: ProcessPool) -> TestService {
    TestService::builder()
        .registry(tasks::registry())
        .pool(pool)
        .start()
        .await
        .expect("service with a process pool starts")
}

async fn workers(svc: &TestService) -> serde_json::Map<String, Value> {
    svc.handle()
        .control("workers", Default::default())
        .await
        .unwrap()
        .as_object()
        .cloned()
        .unwrap()
}

/// Waits until `pred` holds for the workers, or panics after `limit`.
async fn wait_workers(
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

fn idle_count(w: &serde_json::Map<String, Value>) -> usize {
    w.values().filter(|v| v["status"] == json!("idle")).count()
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>; treat it as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"),
        Err(_) => false,
    }
}

async fn wait_running_pid(svc: &TestService, uuid: &str) -> u32 {
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

fn find<'a>(calls: &'a [Call], task: &str) -> Vec<&'a Call> {
    calls.iter().filter(|c| c.task == task).collect()
}

async fn ok_error_and_panic_keep_the_worker() {
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

async fn timeout_kills_and_replaces_the_worker() {
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

async fn cancel_kills_the_worker() {
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

async fn abort_is_worker_lost() {
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

async fn sigkill_from_outside_is_worker_lost() {
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

async fn recycle_after_max_tasks() {
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

async fn scale_up_and_down() {
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

async fn tasks_from_tasks() {
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

async fn unresponsive_idle_worker_is_replaced() {
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
            && w.values()
                .all(|v| v["pid"].as_u64() != Some(u64::from(pid)) && v["status"] == json!("idle"))
    })
    .await;
    let t = Instant::now();
    while alive(pid) && t.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(pid), "the frozen worker was killed");
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

async fn orphans_exit_when_the_service_is_killed() {
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

/// Run in a child process that has the worker marker but starts a pool, as an application that
/// forgot the entry call would.
pub fn forgetful_main(registry: TaskRegistry) -> ExitCode {
    let Ok(rt) = tokio::runtime::Runtime::new() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async {
        let r = dispatcher_runtime::Service::builder()
            .registry(registry)
            .pool(ProcessPool::new(1))
            .start()
            .await;
        match r {
            Ok(_) => println!("started"),
            Err(e) => println!("{e}"),
        }
    });
    ExitCode::from(3)
}

async fn forgotten_entry_call_fails_loudly() {
    let exe = std::env::current_exe().unwrap();
    let out = tokio::process::Command::new(exe)
        .env("POOL_TEST_FORGETFUL", "1")
        .env(
            dispatcher_pool::protocol::ENV_SOCKET,
            "/nonexistent/pool.sock",
        )
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("call `dispatcher_pool::run_if_worker(...)` first thing in `main`"),
        "{text}"
    );
}

async fn worker_that_never_connects_fails_start() {
    let mut c = config(1, 1);
    c.program = Some("/bin/true".into());
    c.start_timeout = Duration::from_secs(2);
    let r = dispatcher_runtime::Service::builder()
        .registry(tasks::registry())
        .pool(ProcessPool::with_config(c))
        .start()
        .await;
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains("before connecting") && e.contains("run_if_worker"),
        "{e}"
    );
}

static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends this process's logs to a buffer the tests can read.
pub fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_writer(|| LogWriter)
        .with_ansi(false)
        .with_env_filter("dispatcher_pool::worker_output=info")
        .try_init();
}

async fn worker_output_is_logged_with_the_worker_id() {
    let svc = service(ProcessPool::with_config(config(1, 1))).await;
    let token = format!("token-{}", dispatcher_core::call::new_uuid());
    svc.publisher()
        .publish(print::call(token.clone()))
        .await
        .unwrap();
    let calls = svc.wait_for_calls(1, WAIT).await.unwrap();
    let worker = calls[0].worker_id.unwrap();
    let start = Instant::now();
    loop {
        let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).to_string();
        let lines: Vec<&str> = logs.lines().filter(|l| l.contains(&token)).collect();
        let has = |stream: &str, prefix: &str| {
            lines.iter().any(|l| {
                l.contains(&format!("{prefix}{token}"))
                    && l.contains(&format!("worker={worker}"))
                    && l.contains(&format!("stream=\"{stream}\""))
            })
        };
        if has("stdout", "") && has("stderr", "err: ") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "worker output not logged: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    svc.shutdown().await;
}

async fn memory_limit_ends_a_greedy_worker() {
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

async fn process_limit_bounds_a_fork_happy_task() {
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

async fn processes_a_task_started_die_with_its_worker() {
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
