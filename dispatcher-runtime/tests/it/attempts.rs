//! The attempt number reaches the running task: a job's `attempt` is what the task's context
//! reports, and a Call published without one is a first run.

use std::time::Duration;

use dispatcher_core::pool::{Job, Pool, PoolEvent};
use dispatcher_core::{Outcome, Task};
use dispatcher_runtime::InProcessPool;
use dispatcher_testkit::expect::{assert_history, call};
use serde_json::json;
use tokio::sync::mpsc;

use crate::tasks::attempt_number;
use crate::{service, WAIT};

/// Runs `job` on `pool` (started, idle) and returns its `Finished` outcome and result.
async fn run(
    pool: &mut InProcessPool,
    events: &mut mpsc::Receiver<PoolEvent>,
    job: Job,
) -> (Outcome, Option<serde_json::Value>) {
    let key = job.key;
    if let Err(job) = pool.try_dispatch(job) {
        panic!("the idle pool refused job {}", job.key);
    }
    loop {
        let ev = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("the job finishes in time")
            .expect("the events channel stays open");
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

fn job(key: u64, attempt: u32) -> Job {
    Job {
        key,
        uuid: format!("attempt-{key}"),
        task: attempt_number::descriptor(),
        args: Vec::new(),
        attempt,
    }
}

#[tokio::test]
async fn in_process_pool_gives_the_task_its_attempt() {
    let mut pool = InProcessPool::new(1);
    let (tx, mut events) = mpsc::channel(16);
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

#[tokio::test]
async fn a_published_call_runs_as_attempt_one() {
    let svc = service(1).await;
    let uuid = svc
        .publisher()
        .publish(attempt_number::call())
        .await
        .unwrap()
        .uuid()
        .to_owned();
    let calls = svc.wait_for_calls(1, WAIT).await.unwrap();
    assert_history(&calls).has_exactly(1, call().uuid(&uuid).outcome(Outcome::Ok));
    assert_eq!(calls[0].result, Some(json!(1)));
    svc.shutdown().await;
}
