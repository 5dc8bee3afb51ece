//! Faults of worker processes while other Calls flow: killed from outside, aborting, eating
//! memory past `max_worker_memory_mb`, starting processes past `max_worker_processes`.
//!
//! Each time the Call on that worker is `worker_lost` with a reason naming what happened, the
//! pool is back to size, the Calls around it all end ok, and the accounting holds.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use dispatcher_core::{Call, Outcome};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use crate::harness::{
    account, alive, assert_all_ok, group_members, start, Flow, Opts, Sent, Svc, Trials,
};

const WORKERS: usize = 2;
const LIMIT: Duration = Duration::from_secs(15);

pub fn all() -> Trials {
    trials![
        worker_sigkilled_mid_task,
        task_abort_is_worker_lost,
        memory_hog_hits_the_worker_memory_limit,
        fork_bomb_hits_the_worker_process_limit,
    ]
}

/// A flow of short Calls around the fault: none of them may suffer from it.
fn flow(svc: &Svc) -> Flow {
    Flow::start(svc, "f.work", vec![json!(500)], Duration::from_millis(5))
}

fn assert_lost(call: &Call, needle: &str) {
    assert_eq!(call.outcome, Some(Outcome::WorkerLost), "{call:?}");
    let error = call.error.as_deref().unwrap_or("");
    assert!(
        error.contains(needle),
        "the reason does not name {needle:?}: {error:?}"
    );
}

/// After the fault: a batch of Calls that must all end ok, then the accounting of everything.
async fn finish(svc: &Svc, name: &str, sent: Vec<Sent>, faulty: &[String], extra: String) {
    let post = svc.publish_batch("f.noop", 50, |_| vec![]).await;
    let flow: Vec<String> = sent.iter().map(|s| s.uuid.clone()).collect();
    let mut known: HashSet<String> = flow.iter().cloned().collect();
    known.extend(post.iter().cloned());
    known.extend(faulty.iter().cloned());
    let acc = account(svc, &known, Duration::from_secs(30)).await;
    assert!(sent.iter().all(|s| s.ok), "a publish failed");
    assert_all_ok(&acc, &flow, "Calls flowing around the fault");
    assert_all_ok(&acc, &post, "Calls published after the fault");
    let (rss, hwm) = svc.rss_kb();
    println!(
        "faults: {name}: {extra}; flow {} ok, post {} ok; {}; service RSS {:.1} MB (peak {:.1} MB)",
        flow.len(),
        post.len(),
        acc.counts,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}

async fn worker_sigkilled_mid_task() {
    let svc = start(Opts::default()).await;
    let flow = flow(&svc);
    let victim = svc.publish("f.sleep", vec![json!(10.0)]).await;
    let pid = svc.worker_pid_of(&victim, LIMIT).await;
    let t = Instant::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let call = svc.wait_call(&victim, LIMIT).await;
    let recorded = t.elapsed();
    assert_lost(&call, "SIGKILL");
    svc.wait_pool_size(WORKERS, Some(u64::from(pid)), LIMIT)
        .await;
    let back = t.elapsed();
    assert!(!alive(pid), "the killed worker {pid} is still there");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = flow.stop().await;
    finish(
        &svc,
        "worker SIGKILL mid-task",
        sent,
        &[victim],
        format!(
            "worker_lost recorded {:.0} ms after the kill ({:?}), pool back to {WORKERS} after {:.0} ms",
            recorded.as_secs_f64() * 1000.0,
            call.error.unwrap_or_default(),
            back.as_secs_f64() * 1000.0
        ),
    )
    .await;
    svc.stop().await;
}

async fn task_abort_is_worker_lost() {
    let svc = start(Opts::default()).await;
    let flow = flow(&svc);
    let mut aborted = Vec::new();
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let uuid = svc.publish("f.abort", vec![]).await;
        let call = svc.wait_call(&uuid, LIMIT).await;
        assert_lost(&call, "SIGABRT");
        svc.wait_pool_size(WORKERS, call.pid.map(u64::from), LIMIT)
            .await;
        times.push(format!("{:.0}", t.elapsed().as_secs_f64() * 1000.0));
        aborted.push(uuid);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = flow.stop().await;
    finish(
        &svc,
        "task abort()",
        sent,
        &aborted,
        format!(
            "3 aborts, each worker_lost with SIGABRT; publish to pool back to size (ms): {}",
            times.join(", ")
        ),
    )
    .await;
    svc.stop().await;
}

async fn memory_hog_hits_the_worker_memory_limit() {
    let svc = start(Opts {
        pool: "max_worker_memory_mb = 64".into(),
        ..Opts::default()
    })
    .await;
    let flow = flow(&svc);
    let t = Instant::now();
    let hog = svc.publish("f.eat", vec![json!(1024)]).await;
    let call = svc.wait_call(&hog, LIMIT).await;
    let ended = t.elapsed();
    assert_lost(&call, "max_worker_rss 64.0 MB");
    let worker = call.pid.unwrap();
    svc.wait_pool_size(WORKERS, Some(u64::from(worker)), LIMIT)
        .await;
    assert!(!alive(worker), "the greedy worker {worker} is still there");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = flow.stop().await;
    let (rss, _) = svc.rss_kb();
    assert!(
        rss < 100 * 1024,
        "the service itself grew: RSS {rss} kB; log:\n{}",
        svc.log_tail()
    );
    finish(
        &svc,
        "memory hog (limit 64 MB)",
        sent,
        &[hog],
        format!(
            "worker_lost {:.0} ms after publish: {:?}",
            ended.as_secs_f64() * 1000.0,
            call.error.unwrap_or_default()
        ),
    )
    .await;
    svc.stop().await;
}

async fn fork_bomb_hits_the_worker_process_limit() {
    let svc = start(Opts {
        pool: "max_worker_processes = 16".into(),
        ..Opts::default()
    })
    .await;
    let flow = flow(&svc);
    let pids_file = svc.dir.join("bomb.pids");
    let t = Instant::now();
    let bomb = svc
        .publish(
            "f.fork_bomb",
            vec![json!(500), json!(pids_file.display().to_string())],
        )
        .await;
    let call = svc.wait_call(&bomb, LIMIT).await;
    let ended = t.elapsed();
    assert_lost(&call, "max_worker_processes 16");
    let worker = call.pid.unwrap();
    let shells: Vec<u32> = std::fs::read_to_string(&pids_file)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(
        shells.len() >= 5,
        "the task started only {} shells: {:?}",
        shells.len(),
        call
    );
    // Every process it started (the shells and their `sleep`s, all in the worker's process
    // group) is gone.
    let gone = Instant::now();
    loop {
        let left: Vec<u32> = shells.iter().copied().filter(|p| alive(*p)).collect();
        let group = group_members(worker);
        if left.is_empty() && group.is_empty() {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(5),
            "processes of the fork bomb survive its worker {worker}: shells {left:?}, group {group:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    svc.wait_pool_size(WORKERS, Some(u64::from(worker)), LIMIT)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = flow.stop().await;
    finish(
        &svc,
        "fork bomb (limit 16 processes)",
        sent,
        &[bomb],
        format!(
            "worker_lost {:.0} ms after publish, {} shells (x3 processes) started before the kill, \
             all gone: {:?}",
            ended.as_secs_f64() * 1000.0,
            shells.len(),
            call.error.unwrap_or_default()
        ),
    )
    .await;
    svc.stop().await;
}
