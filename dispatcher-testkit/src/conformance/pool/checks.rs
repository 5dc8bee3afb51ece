//! The pool checks, one function each; [`super::PoolCheck::run_within`] picks one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dispatcher_core::pool::{CallKey, Dispatched, Pool, WorkerState};
use dispatcher_core::{Outcome, Task, WorkerStatus};
use serde_json::{json, Value};

use super::driver::{summary, Driver, Finish};
use super::tasks::{fail, noop, panics, sleep, slow};
use super::{SHUTDOWN_GRACE, SLOW_TIMEOUT_SECONDS};

/// How long a check listens after the last expected event for extra ones (duplicates).
const QUIET: Duration = Duration::from_millis(300);

/// How long the jobs that keep a worker busy sleep.
const BUSY_SECONDS: f64 = 1.5;

/// What a job must end with.
#[derive(Debug, Clone)]
enum Expect {
    /// `ok` with this result (`null` may also come as no result).
    Ok(Value),
    /// `error` with an error containing this.
    Error(String),
    /// `panic` with an error containing this.
    Panic(String),
}

impl Expect {
    fn check(&self, what: &str, got: &Finish) -> Result<(), String> {
        let (outcome, text) = match self {
            Expect::Ok(want) => {
                let result = got.result.clone().unwrap_or(Value::Null);
                if got.outcome == Outcome::Ok && same_value(&result, want) {
                    return Ok(());
                }
                (Outcome::Ok, format!("result {want}"))
            }
            Expect::Error(m) | Expect::Panic(m) => {
                let outcome = if matches!(self, Expect::Error(_)) {
                    Outcome::Error
                } else {
                    Outcome::Panic
                };
                if got.outcome == outcome && got.error.as_deref().is_some_and(|e| e.contains(m)) {
                    return Ok(());
                }
                (outcome, format!("an error containing {m:?}"))
            }
        };
        Err(format!(
            "{what} ended `{}` with result {} and error {:?}; expected `{outcome}` with {text}",
            got.outcome,
            got.result
                .as_ref()
                .map_or_else(|| "none".to_owned(), Value::to_string),
            got.error
        ))
    }
}

/// Equal JSON values, numbers within a rounding error.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        _ => a == b,
    }
}

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A burst larger than the pool, every outcome but timeout and cancel.
pub(super) async fn outcomes<P: Pool>(d: &mut Driver<P>) -> Result<(), String> {
    let n = d.size() * 3 + 4;
    let mut expected: Vec<(CallKey, Expect)> = Vec::with_capacity(n);
    for i in 0..n {
        let (job, expect) = match i % 4 {
            0 => {
                let s = 0.001 * (i % 20) as f64;
                (
                    d.job(sleep::descriptor(), vec![json!(s)]),
                    Expect::Ok(json!(s)),
                )
            }
            1 => {
                let m = format!("conformance failure {i}");
                (d.job(fail::descriptor(), vec![json!(m)]), Expect::Error(m))
            }
            2 => {
                let m = format!("conformance panic {i}");
                (
                    d.job(panics::descriptor(), vec![json!(m)]),
                    Expect::Panic(m),
                )
            }
            _ => (d.job(noop::descriptor(), vec![]), Expect::Ok(Value::Null)),
        };
        expected.push((job.key, expect));
        d.submit(job)?;
    }
    let keys: Vec<CallKey> = expected.iter().map(|(k, _)| *k).collect();
    d.wait_all(
        &keys,
        &format!("a burst of {n} jobs on {} workers", d.size()),
    )
    .await?;
    d.quiet_until(Instant::now() + QUIET).await?;
    for (key, expect) in &expected {
        if let Some(f) = d.finished(*key) {
            expect.check(&d.describe(*key), f)?;
        }
    }
    Ok(())
}

/// Every worker busy: the next job comes back, then runs once one is free.
pub(super) async fn gives_back<P: Pool>(d: &mut Driver<P>) -> Result<(), String> {
    let n = d.size();
    let mut busy: Vec<(CallKey, Dispatched)> = Vec::new();
    let started = Instant::now();
    for i in 0..n {
        let job = d.job(sleep::descriptor(), vec![json!(BUSY_SECONDS)]);
        let key = job.key;
        match d.try_dispatch(job)? {
            Ok(at) => {
                if let Some((other, _)) = busy.iter().find(|(_, b)| b.worker_id == at.worker_id) {
                    return Err(format!(
                        "try_dispatch put {} on worker {}, which was already running {}",
                        d.describe(key),
                        at.worker_id,
                        d.describe(*other)
                    ));
                }
                busy.push((key, at));
            }
            Err(_) => {
                return Err(format!(
                    "try_dispatch gave back job {} of {n} although workers() reported {n} idle \
                     workers",
                    i + 1
                ))
            }
        }
    }
    let extra = d.job(sleep::descriptor(), vec![json!(0.0125)]);
    let extra_key = extra.key;
    match d.try_dispatch(extra)? {
        Ok(at) => {
            let ago = started.elapsed();
            return Err(if ago < seconds(BUSY_SECONDS) {
                format!(
                    "try_dispatch accepted {} (on worker {}) while all {n} workers were busy with \
                     jobs dispatched {ago:?} earlier that sleep {BUSY_SECONDS}s; a pool must give \
                     the job back (Err(job)) when no worker is free",
                    d.describe(extra_key),
                    at.worker_id
                )
            } else {
                format!(
                    "inconclusive: dispatching {n} jobs took {ago:?}, longer than they sleep \
                     ({BUSY_SECONDS}s)"
                )
            });
        }
        Err(back) => d.submit(back)?,
    }
    let mut keys: Vec<CallKey> = busy.iter().map(|(k, _)| *k).collect();
    keys.push(extra_key);
    d.wait_all(&keys, "the given-back job and the jobs it waited for")
        .await?;
    for key in keys {
        let want = if key == extra_key {
            0.0125
        } else {
            BUSY_SECONDS
        };
        if let Some(f) = d.finished(key) {
            Expect::Ok(json!(want)).check(&d.describe(key), f)?;
        }
    }
    Ok(())
}

/// Submits a no-op and waits for it to end `ok`: the pool still works.
async fn still_works<P: Pool>(d: &mut Driver<P>, after: &str) -> Result<(), String> {
    let job = d.job(noop::descriptor(), vec![]);
    let key = job.key;
    d.submit(job)?;
    let f = d.wait_finished(key).await.map_err(|e| {
        format!("the pool no longer works after {after}: a later no-op job failed to run: {e}")
    })?;
    Expect::Ok(Value::Null).check(&format!("a later no-op job (after {after})"), &f)
}

/// A task over its timeout ends `timeout`, once.
pub(super) async fn timeout<P: Pool>(d: &mut Driver<P>) -> Result<(), String> {
    let declared = slow::descriptor().config().timeout;
    if declared != Some(seconds(SLOW_TIMEOUT_SECONDS)) {
        return Err(format!(
            "the suite's task {} declares timeout {declared:?}, expected {SLOW_TIMEOUT_SECONDS}s",
            slow::NAME
        ));
    }
    let runs = 2.0;
    let job = d.job(slow::descriptor(), vec![json!(runs)]);
    let key = job.key;
    let t0 = Instant::now();
    d.dispatch_now(job).await?;
    let f = d.wait_finished(key).await.map_err(|e| {
        format!(
            "the task declares a timeout of {SLOW_TIMEOUT_SECONDS}s and sleeps {runs}s, but {e}"
        )
    })?;
    if f.outcome != Outcome::Timeout {
        return Err(format!(
            "{} (declared timeout = {SLOW_TIMEOUT_SECONDS}, sleeps {runs}s) ended `{}` after \
             {:?} with error {:?}; expected `timeout`",
            d.describe(key),
            f.outcome,
            f.after,
            f.error
        ));
    }
    if f.after < seconds(SLOW_TIMEOUT_SECONDS * 0.8) {
        return Err(format!(
            "{} was reported `timeout` after {:?}, before its timeout of {SLOW_TIMEOUT_SECONDS}s",
            d.describe(key),
            f.after
        ));
    }
    still_works(d, "a timeout").await?;
    // Until the timed-out task would have ended on its own: nothing more about it.
    d.quiet_until(t0 + seconds(runs) + QUIET).await
}

/// `cancel`: true and one `canceled` for a running job; false for others.
pub(super) async fn cancel<P: Pool>(d: &mut Driver<P>) -> Result<(), String> {
    let unknown: CallKey = 987_654_321;
    if d.pool.cancel(unknown) {
        return Err(format!(
            "cancel({unknown}) of a key the pool was never given returned true"
        ));
    }
    let job = d.job(sleep::descriptor(), vec![json!(BUSY_SECONDS)]);
    let key = job.key;
    let t0 = Instant::now();
    d.dispatch_now(job).await?;
    // Let it start running.
    d.quiet_until(Instant::now() + Duration::from_millis(100))
        .await?;
    if !d.pool.cancel(key) {
        return Err(format!(
            "cancel({key}) of running {} returned false",
            d.describe(key)
        ));
    }
    let f = d
        .wait_finished(key)
        .await
        .map_err(|e| format!("cancel({key}) returned true, but {e}"))?;
    if f.outcome != Outcome::Canceled {
        return Err(format!(
            "the canceled {} ended `{}` after {:?} with error {:?}; expected `canceled`",
            d.describe(key),
            f.outcome,
            f.after,
            f.error
        ));
    }
    if d.pool.cancel(key) {
        return Err(format!(
            "cancel({key}) returned true again after the pool reported {} canceled",
            d.describe(key)
        ));
    }
    still_works(d, "a cancel").await?;
    let done = d.job(noop::descriptor(), vec![]);
    let done_key = done.key;
    d.submit(done)?;
    d.wait_finished(done_key).await?;
    if d.pool.cancel(done_key) {
        return Err(format!(
            "cancel({done_key}) of {}, which had finished, returned true",
            d.describe(done_key)
        ));
    }
    // Until the canceled task would have ended on its own: nothing more about it.
    d.quiet_until(t0 + seconds(BUSY_SECONDS) + QUIET).await
}

/// `workers()`: the workers, then busy ones with their job.
pub(super) async fn workers<P: Pool>(d: &mut Driver<P>) -> Result<(), String> {
    let n = d.size();
    let before = d.pool.workers();
    let mut ids: Vec<u32> = before.iter().map(|w| w.worker_id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != before.len() {
        return Err(format!(
            "workers() reports a worker id twice: {}",
            summary(&before)
        ));
    }
    if let Some(w) = before
        .iter()
        .find(|w| w.current_task.is_some() || w.current_task_uuid.is_some())
    {
        return Err(format!(
            "worker {} reports a current task while the pool runs nothing: {}",
            w.worker_id,
            summary(&before)
        ));
    }
    let mut running: Vec<(CallKey, String, Dispatched)> = Vec::new();
    for _ in 0..n.min(2) {
        let job = d.job(sleep::descriptor(), vec![json!(1.0)]);
        let (key, uuid) = (job.key, job.uuid.clone());
        let at = d.dispatch_now(job).await?;
        running.push((key, uuid, at));
        check_busy(&d.pool.workers(), n, &running)?;
    }
    let keys: Vec<CallKey> = running.iter().map(|(k, _, _)| *k).collect();
    d.wait_all(&keys, "the jobs of the workers check").await?;
    // The workers are free again (within a short bound: the pool may update them after its
    // Finished went out).
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = d.pool.workers();
        let problem = if now.len() != n {
            Some(format!("it reports {} workers, {n} before", now.len()))
        } else if let Some(w) = now.iter().find(|w| w.is_busy()) {
            Some(format!("worker {} is still busy", w.worker_id))
        } else {
            let finished: u64 = now.iter().map(|w| w.finished_count).sum();
            (finished < keys.len() as u64).then(|| {
                format!(
                    "its workers' finished_count adds up to {finished}, after {} jobs",
                    keys.len()
                )
            })
        };
        match problem {
            None => return Ok(()),
            Some(p) if Instant::now() >= deadline => {
                return Err(format!(
                    "after every job ended, workers() is wrong: {p}: {}",
                    summary(&now)
                ))
            }
            Some(_) => {
                d.quiet_until(Instant::now() + Duration::from_millis(20))
                    .await?
            }
        }
    }
}

/// `workers` has `n` workers, the ones running the jobs busy with them, no other busy.
fn check_busy(
    workers: &[WorkerStatus],
    n: usize,
    running: &[(CallKey, String, Dispatched)],
) -> Result<(), String> {
    let wrong = |what: String| Err(format!("{what}; workers() reports: {}", summary(workers)));
    if workers.len() != n {
        return wrong(format!(
            "with {} jobs running, workers() reports {} workers instead of {n}",
            running.len(),
            workers.len()
        ));
    }
    let by_id: HashMap<u32, &WorkerStatus> = workers.iter().map(|w| (w.worker_id, w)).collect();
    for (key, uuid, at) in running {
        let Some(w) = by_id.get(&at.worker_id) else {
            return wrong(format!(
                "try_dispatch put job {key} on worker {}, which workers() does not list",
                at.worker_id
            ));
        };
        if w.status != WorkerState::Ready
            || w.current_task.as_deref() != Some(sleep::NAME)
            || w.current_task_uuid.as_deref() != Some(uuid.as_str())
        {
            return wrong(format!(
                "worker {} runs job {key} ({}, uuid {uuid}) but reports status {:?}, \
                 current_task {:?}, current_task_uuid {:?}",
                at.worker_id,
                sleep::NAME,
                w.status,
                w.current_task,
                w.current_task_uuid
            ));
        }
        if w.pid != Some(at.pid) {
            return wrong(format!(
                "try_dispatch said job {key} went to pid {}, workers() says worker {} is pid {:?}",
                at.pid, at.worker_id, w.pid
            ));
        }
    }
    let busy = workers.iter().filter(|w| w.is_busy()).count();
    if busy != running.len() {
        return wrong(format!(
            "{busy} workers report busy with {} jobs running",
            running.len()
        ));
    }
    Ok(())
}

/// `shutdown(grace)`: a short job finishes, a long one is `canceled` once, shutdown returns.
pub(super) async fn shutdown<P: Pool>(d: &mut Driver<P>) -> Result<(), String> {
    let long_seconds = 2.0;
    let short = if d.size() >= 2 {
        let job = d.job(sleep::descriptor(), vec![json!(0.1)]);
        let key = job.key;
        d.dispatch_now(job).await?;
        Some(key)
    } else {
        None
    };
    let job = d.job(sleep::descriptor(), vec![json!(long_seconds)]);
    let long = job.key;
    let t0 = Instant::now();
    d.dispatch_now(job).await?;
    d.quiet_until(Instant::now() + Duration::from_millis(50))
        .await?;
    let took = d.shutdown(SHUTDOWN_GRACE).await?;
    let f = d
        .wait_finished(long)
        .await
        .map_err(|e| format!("after shutdown({SHUTDOWN_GRACE:?}) returned in {took:?}: {e}"))?;
    if f.outcome != Outcome::Canceled {
        return Err(format!(
            "{} was still running after the grace of shutdown({SHUTDOWN_GRACE:?}) and ended `{}` \
             with error {:?}; expected `canceled`",
            d.describe(long),
            f.outcome,
            f.error
        ));
    }
    if took < SHUTDOWN_GRACE.mul_f64(0.8) {
        return Err(format!(
            "shutdown({SHUTDOWN_GRACE:?}) returned after {took:?} while {} was still running: \
             running jobs get the grace",
            d.describe(long)
        ));
    }
    if let Some(key) = short {
        let f = d.wait_finished(key).await?;
        Expect::Ok(json!(0.1)).check(
            &format!(
                "{}, which ends within the grace of shutdown({SHUTDOWN_GRACE:?}),",
                d.describe(key)
            ),
            &f,
        )?;
    }
    // Until the long job would have ended on its own: nothing more about it.
    d.quiet_until(t0 + seconds(long_seconds) + QUIET).await
}
