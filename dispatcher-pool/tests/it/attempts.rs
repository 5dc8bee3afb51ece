//! The attempt number crosses to the worker process: a job's `attempt` is what the task's context
//! reports there.

use std::future::poll_fn;
use std::task::Poll;
use std::time::{Duration, Instant};

use dispatcher_core::pool::{CallKey, Job, Pool, PoolEvent};
use dispatcher_core::{Outcome, Task};
use dispatcher_pool::ProcessPool;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::support::{config, WAIT};
use crate::tasks::attempt_number;

/// Waits for the `Finished` of `key`, reading events from both the channel and `poll_events`, as
/// the service does; returns its outcome and result.
async fn finished(
    pool: &mut ProcessPool,
    events: &mut mpsc::Receiver<PoolEvent>,
    key: CallKey,
) -> (Outcome, Option<Value>) {
    let deadline = Instant::now() + WAIT;
    let mut batch = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "job {key} never finished");
        let step = poll_fn(|cx| {
            if let Poll::Ready(ev) = events.poll_recv(cx) {
                batch.extend(ev);
                return Poll::Ready(());
            }
            pool.poll_events(cx, &mut batch)
        });
        let _ = tokio::time::timeout(Duration::from_millis(100), step).await;
        for ev in batch.drain(..) {
            if let PoolEvent::Finished {
                key: k,
                outcome,
                result,
                ..
            } = ev
            {
                assert_eq!(k, key, "a Finished for a job never sent");
                return (outcome, result);
            }
        }
    }
}

/// Hands `job` to the pool, waiting for its worker to be idle, and returns how it ended.
async fn run(
    pool: &mut ProcessPool,
    events: &mut mpsc::Receiver<PoolEvent>,
    mut job: Job,
) -> (Outcome, Option<Value>) {
    let key = job.key;
    let deadline = Instant::now() + WAIT;
    loop {
        match pool.try_dispatch(job) {
            Ok(_) => return finished(pool, events, key).await,
            Err(back) => {
                assert!(Instant::now() < deadline, "no worker took job {key}");
                job = back;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

fn job(key: CallKey, attempt: u32) -> Job {
    Job {
        key,
        uuid: format!("attempt-{key}"),
        task: attempt_number::descriptor(),
        args: Vec::new(),
        attempt,
    }
}

pub async fn attempt_reaches_the_worker_process() {
    let mut pool = ProcessPool::with_config(config(1, 1));
    let (tx, mut events) = mpsc::channel(64);
    pool.start(tx).await.unwrap();
    assert_eq!(
        run(&mut pool, &mut events, job(1, 3)).await,
        (Outcome::Ok, Some(json!(3)))
    );
    assert_eq!(
        run(&mut pool, &mut events, job(2, 1)).await,
        (Outcome::Ok, Some(json!(1)))
    );
    pool.shutdown(Duration::from_secs(1)).await;
}
