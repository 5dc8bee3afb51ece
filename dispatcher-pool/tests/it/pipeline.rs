//! Jobs queued behind a running one while the service's queue is deep: each runs exactly once,
//! never waits while a worker is free, and survives whatever ends the job before it.
//!
//! These drive the pool as the service does (`try_dispatch`, `set_backlog`, events from the
//! channel and `poll_events`), so each test decides exactly which job is queued where. A job that
//! must run once is `p.mark`, which appends its worker's pid to a file: a job run twice leaves two
//! lines.

use std::future::poll_fn;
use std::path::PathBuf;
use std::task::Poll;
use std::time::{Duration, Instant};

use dispatcher_core::pool::{CallKey, Dispatched, Job, Pool, PoolEvent};
use dispatcher_core::{Call, Outcome, Task};
use dispatcher_pool::ProcessPool;
use dispatcher_testkit::TestService;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::support::{alive, config, service, WAIT};
use crate::tasks::{brief, mark, noop, pid, sleep, slow};

/// A pool driven by hand, and every event it reported, in order.
struct Driver {
    pool: ProcessPool,
    rx: mpsc::Receiver<PoolEvent>,
    seen: Vec<PoolEvent>,
}

impl Driver {
    async fn start(workers: usize) -> Driver {
        let mut pool = ProcessPool::with_config(config(workers, workers));
        let (tx, rx) = mpsc::channel(256);
        pool.start(tx).await.unwrap();
        Driver {
            pool,
            rx,
            seen: Vec::new(),
        }
    }

    /// Dispatches `job`, which must be taken now.
    fn dispatch(&mut self, job: Job) -> Dispatched {
        let key = job.key;
        match self.pool.try_dispatch(job) {
            Ok(d) => d,
            Err(_) => panic!("job {key} was not taken"),
        }
    }

    /// Reads events until `done` holds for what was seen, or fails after [`WAIT`].
    async fn until(&mut self, what: &str, done: impl Fn(&[PoolEvent]) -> bool) {
        let deadline = Instant::now() + WAIT;
        let mut batch = Vec::new();
        while !done(&self.seen) {
            assert!(
                Instant::now() < deadline,
                "never saw {what}; events: {:?}",
                self.seen
            );
            let (rx, pool) = (&mut self.rx, &mut self.pool);
            let step = poll_fn(|cx| {
                if let Poll::Ready(Some(ev)) = rx.poll_recv(cx) {
                    batch.push(ev);
                    return Poll::Ready(());
                }
                pool.poll_events(cx, &mut batch)
            });
            let _ = tokio::time::timeout(Duration::from_millis(50), step).await;
            self.seen.append(&mut batch);
        }
    }

    async fn finished(&mut self, key: CallKey) -> (Outcome, Option<Value>, Option<String>) {
        self.until(&format!("the end of job {key}"), |seen| {
            finished_of(seen, key).is_some()
        })
        .await;
        finished_of(&self.seen, key).unwrap()
    }

    /// Where job `key` was reported started, if it was.
    fn started(&self, key: CallKey) -> Option<u32> {
        self.seen.iter().find_map(|e| match e {
            PoolEvent::Started {
                key: k, worker_id, ..
            } if *k == key => Some(*worker_id),
            _ => None,
        })
    }

    fn finishes_of(&self, key: CallKey) -> usize {
        self.seen
            .iter()
            .filter(|e| matches!(e, PoolEvent::Finished { key: k, .. } if *k == key))
            .count()
    }
}

fn finished_of(
    seen: &[PoolEvent],
    key: CallKey,
) -> Option<(Outcome, Option<Value>, Option<String>)> {
    seen.iter().find_map(|e| match e {
        PoolEvent::Finished {
            key: k,
            outcome,
            result,
            error,
            ..
        } if *k == key => Some((*outcome, result.clone(), error.clone())),
        _ => None,
    })
}

fn job(key: CallKey, task: &'static dispatcher_core::TaskDescriptor, args: Vec<Value>) -> Job {
    Job {
        key,
        uuid: format!("pipeline-{key}"),
        task,
        args,
        attempt: 1,
    }
}

/// A fresh file for `p.mark` to append to.
fn mark_file(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "dispatcher-pool-{name}-{}-{}",
        std::process::id(),
        dispatcher_core::call::new_uuid()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

fn mark_job(key: CallKey, path: &std::path::Path) -> Job {
    job(
        key,
        mark::descriptor(),
        vec![json!(path.display().to_string())],
    )
}

/// The pids `p.mark` wrote, one per run.
fn marks(path: &std::path::Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

pub async fn a_queued_job_moves_to_a_worker_that_falls_idle() {
    let mut d = Driver::start(2).await;
    let file = mark_file("moves");
    // Calls wait in the service's queue: busy workers get a job queued behind theirs.
    d.pool.set_backlog(10);
    let short = d.dispatch(job(1, sleep::descriptor(), vec![json!(0.2)]));
    let long = d.dispatch(job(2, sleep::descriptor(), vec![json!(3.0)]));
    assert_ne!(short.worker_id, long.worker_id);
    // No worker is free, yet the job is taken: queued behind the job that started last.
    let queued = d.dispatch(mark_job(3, &file));
    assert_eq!(queued.worker_id, long.worker_id);
    // The service's queue ran dry.
    d.pool.set_backlog(0);
    let (outcome, result, _) = d.finished(3).await;
    assert_eq!(outcome, Outcome::Ok);
    // It ran on the worker that fell idle, while the long job still ran.
    assert_eq!(result, Some(json!(short.pid)));
    assert_eq!(d.started(3), Some(short.worker_id));
    assert_eq!(d.finishes_of(2), 0, "the long job is still running");
    // The long job's worker, once done, skips the job taken back, and goes on working.
    let (outcome, result, _) = d.finished(2).await;
    assert_eq!((outcome, result), (Outcome::Ok, Some(json!(long.pid))));
    let a = d.dispatch(job(4, pid::descriptor(), vec![]));
    let b = d.dispatch(job(5, pid::descriptor(), vec![]));
    assert_ne!(a.worker_id, b.worker_id, "one job on each idle worker");
    assert_eq!(d.finished(4).await.0, Outcome::Ok);
    assert_eq!(d.finished(5).await.0, Outcome::Ok);
    assert_eq!(marks(&file), vec![short.pid], "ran exactly once");
    assert_eq!(d.finishes_of(3), 1);
    d.pool.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_file(&file);
}

pub async fn queued_jobs_run_in_order_once_their_worker_reports_the_job_before() {
    let mut d = Driver::start(1).await;
    let file = mark_file("after");
    d.pool.set_backlog(10);
    let first = d.dispatch(job(1, sleep::descriptor(), vec![json!(0.2)]));
    for key in [2, 3] {
        assert_eq!(d.dispatch(mark_job(key, &file)).worker_id, first.worker_id);
    }
    // Two jobs queued per worker at most.
    assert!(d
        .pool
        .try_dispatch(job(4, noop::descriptor(), vec![]))
        .is_err());
    assert_eq!(d.finished(1).await.0, Outcome::Ok);
    for key in [2, 3] {
        let (outcome, result, _) = d.finished(key).await;
        assert_eq!((outcome, result), (Outcome::Ok, Some(json!(first.pid))));
        assert_eq!(d.started(key), Some(first.worker_id));
    }
    let order: Vec<CallKey> = d
        .seen
        .iter()
        .filter_map(|e| match e {
            PoolEvent::Finished { key, .. } => Some(*key),
            _ => None,
        })
        .collect();
    assert_eq!(order, vec![1, 2, 3]);
    assert_eq!(marks(&file), vec![first.pid, first.pid]);
    d.pool.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_file(&file);
}

pub async fn a_queued_job_survives_the_timeout_of_the_job_before_it() {
    let mut d = Driver::start(1).await;
    let file = mark_file("timeout");
    d.pool.set_backlog(10);
    let first = d.dispatch(job(1, slow::descriptor(), vec![]));
    d.dispatch(mark_job(2, &file));
    d.dispatch(mark_job(3, &file));
    let (outcome, _, error) = d.finished(1).await;
    assert_eq!(outcome, Outcome::Timeout, "{error:?}");
    // Taken back before the worker was ended; run by its replacement, in order.
    for key in [2, 3] {
        let (outcome, _, error) = d.finished(key).await;
        assert_eq!(outcome, Outcome::Ok, "{error:?}");
        assert_ne!(d.started(key), Some(first.worker_id));
    }
    let ran_on = marks(&file);
    assert_eq!(ran_on.len(), 2, "each ran exactly once: {ran_on:?}");
    assert!(
        ran_on.iter().all(|pid| *pid != first.pid),
        "not on the worker that was ended"
    );
    assert_eq!(finished_of(&d.seen, 2).unwrap().1, Some(json!(ran_on[0])));
    d.pool.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_file(&file);
}

pub async fn a_queued_job_survives_its_workers_death() {
    let mut d = Driver::start(1).await;
    let file = mark_file("death");
    d.pool.set_backlog(10);
    let first = d.dispatch(job(1, sleep::descriptor(), vec![json!(30.0)]));
    d.dispatch(mark_job(2, &file));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(d.finished(1).await.0, Outcome::WorkerLost);
    let (outcome, result, error) = d.finished(2).await;
    assert_eq!(outcome, Outcome::Ok, "{error:?}");
    let ran_on = marks(&file);
    assert_eq!(ran_on.len(), 1, "ran exactly once: {ran_on:?}");
    assert_ne!(ran_on[0], first.pid);
    assert_eq!(result, Some(json!(ran_on[0])));
    d.pool.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_file(&file);
}

pub async fn a_canceled_queued_job_never_runs_and_spares_the_worker() {
    let mut d = Driver::start(1).await;
    let file = mark_file("cancel");
    d.pool.set_backlog(10);
    let first = d.dispatch(job(1, sleep::descriptor(), vec![json!(0.5)]));
    let second = d.dispatch(mark_job(2, &file));
    // The service learns which of them has not started.
    assert!(!first.queued && second.queued, "{first:?} {second:?}");
    assert_eq!(second.worker_id, first.worker_id);
    assert!(d.pool.cancel(2));
    let (outcome, _, error) = d.finished(2).await;
    assert_eq!(outcome, Outcome::Canceled);
    assert!(error.unwrap_or_default().contains("canceled"));
    // The running job and its worker are untouched.
    let (outcome, result, _) = d.finished(1).await;
    assert_eq!((outcome, result), (Outcome::Ok, Some(json!(first.pid))));
    d.dispatch(job(3, pid::descriptor(), vec![]));
    assert_eq!(d.finished(3).await.1, Some(json!(first.pid)));
    assert!(marks(&file).is_empty(), "the canceled job never ran");
    assert_eq!(d.finishes_of(2), 1);
    d.pool.shutdown(Duration::from_secs(1)).await;
}

/// The running job's timeout comes after the worker finished it and started the job queued
/// behind it, before the pool read either: the job is over, so its worker is not ended, and the
/// queued job runs once, on it.
pub async fn a_timeout_after_the_worker_moved_on_ends_nothing() {
    let mut d = Driver::start(1).await;
    let file = mark_file("moved-on");
    d.pool.set_backlog(10);
    let first = d.dispatch(job(1, brief::descriptor(), vec![json!(0.05)]));
    assert!(d.dispatch(mark_job(2, &file)).queued);
    // Nothing is read from the worker until well after the first job's 0.3 s timeout.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (outcome, result, error) = d.finished(1).await;
    assert_eq!(
        (outcome, result),
        (Outcome::Ok, Some(json!(first.pid))),
        "{error:?}"
    );
    assert_eq!(d.finished(2).await.0, Outcome::Ok);
    assert_eq!(marks(&file), vec![first.pid]);
    d.dispatch(job(3, pid::descriptor(), vec![]));
    assert_eq!(
        d.finished(3).await.1,
        Some(json!(first.pid)),
        "the same worker"
    );
    d.pool.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_file(&file);
}

/// A cancel of a queued job that the worker has already started (the pool has not read that
/// yet) cannot take it back: the job ends `canceled` as a running one does, with its worker.
pub async fn a_cancel_after_the_worker_started_the_queued_job_ends_it() {
    let mut d = Driver::start(1).await;
    d.pool.set_backlog(10);
    let first = d.dispatch(job(1, sleep::descriptor(), vec![json!(0.05)]));
    assert!(
        d.dispatch(job(2, sleep::descriptor(), vec![json!(30.0)]))
            .queued
    );
    // The worker ends the first job and starts the second; nothing is read meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(d.pool.cancel(2));
    let (outcome, result, _) = d.finished(1).await;
    assert_eq!((outcome, result), (Outcome::Ok, Some(json!(first.pid))));
    let (outcome, _, error) = d.finished(2).await;
    assert_eq!(outcome, Outcome::Canceled, "{error:?}");
    assert_eq!(d.started(2), Some(first.worker_id));
    let t = Instant::now();
    while alive(first.pid) {
        assert!(t.elapsed() < WAIT, "worker {} was not ended", first.pid);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.pool.shutdown(Duration::from_secs(1)).await;
}

pub async fn shutdown_cancels_a_queued_job_that_never_started() {
    let mut d = Driver::start(1).await;
    let file = mark_file("shutdown");
    d.pool.set_backlog(10);
    d.dispatch(job(1, sleep::descriptor(), vec![json!(30.0)]));
    d.dispatch(mark_job(2, &file));
    d.pool.shutdown(Duration::from_millis(200)).await;
    d.until("both ends", |seen| {
        finished_of(seen, 1).is_some() && finished_of(seen, 2).is_some()
    })
    .await;
    let (outcome, _, error) = finished_of(&d.seen, 2).unwrap();
    assert_eq!(outcome, Outcome::Canceled);
    assert!(
        error
            .as_deref()
            .unwrap_or_default()
            .contains("still queued"),
        "{error:?}"
    );
    assert_eq!(finished_of(&d.seen, 1).unwrap().0, Outcome::Canceled);
    assert!(marks(&file).is_empty());
}

/// Through a service: with many Calls waiting, jobs are queued behind running ones, and each
/// Call's start is when its worker got to it, so the Calls of one worker never overlap.
pub async fn calls_of_one_worker_never_overlap() {
    let svc: TestService = service(ProcessPool::with_config(config(2, 2))).await;
    let p = svc.publisher();
    let n = 400;
    for _ in 0..n {
        p.publish(noop::call()).await.unwrap();
    }
    let calls: Vec<Call> = svc.wait_for_calls(n, WAIT).await.unwrap();
    assert!(calls.iter().all(|c| c.outcome == Some(Outcome::Ok)));
    for worker in [0u32, 1] {
        let mut mine: Vec<&Call> = calls
            .iter()
            .filter(|c| c.worker_id == Some(worker))
            .collect();
        mine.sort_by(|a, b| a.started_at.unwrap().total_cmp(&b.started_at.unwrap()));
        for pair in mine.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                b.started_at.unwrap() >= a.finished_at.unwrap(),
                "worker {worker} started {} at {:?} before {} finished at {:?}",
                b.uuid,
                b.started_at,
                a.uuid,
                a.finished_at
            );
        }
    }
    svc.shutdown().await;
}

/// Two jobs queued behind a long one: a worker that falls idle takes them both, the last first
/// (the one that would have waited longest), while the long one still runs.
pub async fn a_worker_falling_idle_takes_every_job_queued_behind_a_long_one() {
    let mut d = Driver::start(2).await;
    let file = mark_file("both");
    d.pool.set_backlog(10);
    let short = d.dispatch(job(1, sleep::descriptor(), vec![json!(0.2)]));
    let long = d.dispatch(job(2, sleep::descriptor(), vec![json!(3.0)]));
    // Queued on the worker with the fewest, then the one whose job started last: 3 and 5 behind
    // the long job, 4 and 6 behind the short one.
    let placed: Vec<u32> = (3..=6)
        .map(|key| d.dispatch(mark_job(key, &file)).worker_id)
        .collect();
    assert_eq!(
        placed,
        vec![
            long.worker_id,
            short.worker_id,
            long.worker_id,
            short.worker_id
        ]
    );
    d.pool.set_backlog(0);
    for key in [4, 6, 5, 3] {
        let (outcome, result, _) = d.finished(key).await;
        assert_eq!(
            (outcome, result),
            (Outcome::Ok, Some(json!(short.pid))),
            "job {key}"
        );
    }
    assert_eq!(d.finishes_of(2), 0, "the long job is still running");
    let order: Vec<CallKey> = d
        .seen
        .iter()
        .filter_map(|e| match e {
            PoolEvent::Finished { key, .. } if *key >= 3 => Some(*key),
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        vec![4, 6, 5, 3],
        "the last queued job is taken first"
    );
    // The long job's worker skips both once done, and goes on working.
    assert_eq!(d.finished(2).await.0, Outcome::Ok);
    let a = d.dispatch(job(7, pid::descriptor(), vec![]));
    let b = d.dispatch(job(8, pid::descriptor(), vec![]));
    assert_ne!(a.worker_id, b.worker_id);
    d.finished(7).await;
    d.finished(8).await;
    assert_eq!(marks(&file), vec![short.pid; 4], "each ran exactly once");
    d.pool.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_file(&file);
}
