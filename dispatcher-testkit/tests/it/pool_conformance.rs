//! The pool conformance suite on `BlockingPool`, a pool written in this test crate; and broken
//! pools, which the suite must catch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use dispatcher_core::pool::{CallKey, Dispatched, Job, Pool, PoolEvent, PoolEvents};
use dispatcher_core::{Outcome, Result, WorkerState, WorkerStatus};
use dispatcher_testkit::conformance::pool::{
    registry, run_pool_check_blocking, run_pool_conformance, PoolCheck,
};
use dispatcher_testkit::{pool_conformance, TestkitError};
use tokio::sync::mpsc;

use crate::custom_pool::BlockingPool;
use crate::panic_site::panic_site;

pool_conformance!(custom_blocking_pool, || BlockingPool::new(2));

pool_conformance!(custom_blocking_pool_boxed, || {
    Box::new(BlockingPool::new(3)) as Box<dyn Pool>
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_as_one_call_on_a_pool_of_one() {
    run_pool_conformance(|| BlockingPool::new(1)).await;
}

#[test]
fn check_names_are_unique_and_the_registry_holds_the_suites_tasks() {
    let names: std::collections::HashSet<_> = PoolCheck::ALL.iter().map(|c| c.name()).collect();
    assert_eq!(names.len(), PoolCheck::ALL.len());
    use dispatcher_core::Registry;
    let r = registry();
    assert!(r.check().is_ok());
    assert_eq!(
        r.names(),
        [
            "conformance.pool.fail",
            "conformance.pool.noop",
            "conformance.pool.panic",
            "conformance.pool.sleep",
            "conformance.pool.slow",
        ]
    );
}

// ----- broken pools -----

/// Wraps a correct pool and misbehaves in one way.
struct Broken {
    inner: BlockingPool,
    fault: Fault,
    /// For `StaleWorkers`: report the inner pool's workers until a job was dispatched.
    dispatched: Arc<AtomicBool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Reports every `Finished` twice.
    DoubleFinish,
    /// Never reports a canceled job.
    LosesCanceled,
    /// Never reports a timed-out job.
    LosesTimeouts,
    /// Reports panics as errors.
    PanicAsError,
    /// Accepts a job when every worker is busy (and loses it).
    Overbooks,
    /// Gives jobs back without their arguments.
    MangledGiveBack,
    /// `workers()` reports every worker idle, always.
    StaleWorkers,
    /// `shutdown` ignores its grace.
    ImpatientShutdown,
}

impl Broken {
    fn make(fault: Fault) -> impl Fn() -> Broken {
        move || Broken {
            inner: BlockingPool::new(2),
            fault,
            dispatched: Arc::new(AtomicBool::new(false)),
        }
    }
}

#[async_trait]
impl Pool for Broken {
    async fn start(&mut self, events: PoolEvents) -> Result<()> {
        let (tx, mut rx) = mpsc::channel::<PoolEvent>(256);
        let fault = self.fault;
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let mut ev = ev;
                if let PoolEvent::Finished { outcome, .. } = &mut ev {
                    match (fault, *outcome) {
                        (Fault::LosesCanceled, Outcome::Canceled)
                        | (Fault::LosesTimeouts, Outcome::Timeout) => continue,
                        (Fault::PanicAsError, Outcome::Panic) => *outcome = Outcome::Error,
                        (Fault::DoubleFinish, _) => {
                            let _ = events.send(ev.clone()).await;
                        }
                        _ => {}
                    }
                }
                if events.send(ev).await.is_err() {
                    break;
                }
            }
        });
        self.inner.start(tx).await
    }

    fn try_dispatch(&mut self, job: Job) -> std::result::Result<Dispatched, Job> {
        self.dispatched.store(true, Ordering::SeqCst);
        match (self.fault, self.inner.try_dispatch(job)) {
            (Fault::Overbooks, Err(_lost)) => Ok(Dispatched::running(0, std::process::id())),
            (Fault::MangledGiveBack, Err(mut back)) => {
                back.args.clear();
                Err(back)
            }
            (_, r) => r,
        }
    }

    fn cancel(&mut self, key: CallKey) -> bool {
        self.inner.cancel(key)
    }

    fn workers(&self) -> Vec<WorkerStatus> {
        let mut workers = self.inner.workers();
        if self.fault == Fault::StaleWorkers && self.dispatched.load(Ordering::SeqCst) {
            for w in &mut workers {
                w.status = WorkerState::Ready;
                w.current_task = None;
                w.current_task_uuid = None;
            }
        }
        workers
    }

    fn poll_events(&mut self, cx: &mut Context<'_>, events: &mut Vec<PoolEvent>) -> Poll<()> {
        self.inner.poll_events(cx, events)
    }

    async fn shutdown(&mut self, grace: Duration) {
        let grace = match self.fault {
            Fault::ImpatientShutdown => Duration::ZERO,
            _ => grace,
        };
        self.inner.shutdown(grace).await
    }
}

/// Runs `check` on a pool with `fault`, which must fail it; returns the error text.
async fn failure(check: PoolCheck, fault: Fault) -> String {
    let make = Broken::make(fault);
    match check.run_within(&make, Duration::from_secs(3)).await {
        Ok(()) => panic!(
            "check {} passed on a pool with fault {fault:?}",
            check.name()
        ),
        Err(e @ TestkitError::PoolConformance { .. }) => e.to_string(),
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_finished_for_one_job_fail_outcomes() {
    let e = failure(PoolCheck::Outcomes, Fault::DoubleFinish).await;
    assert!(
        e.contains("pool conformance check `outcomes` failed")
            && e.contains("reported a second Finished for job")
            && e.contains("exactly one Finished per accepted job"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_canceled_job_fails_cancel_and_shutdown() {
    let e = failure(PoolCheck::Cancel, Fault::LosesCanceled).await;
    assert!(
        e.contains("`cancel` failed")
            && e.contains("cancel(1001) returned true, but job 1001")
            && e.contains("conformance.pool.sleep [1.5]) got no Finished within 3s"),
        "{e}"
    );
    let e = failure(PoolCheck::Shutdown, Fault::LosesCanceled).await;
    assert!(
        e.contains("`shutdown` failed") && e.contains("got no Finished"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_timeout_fails_timeout() {
    let e = failure(PoolCheck::Timeout, Fault::LosesTimeouts).await;
    assert!(
        e.contains("`timeout` failed")
            && e.contains("declares a timeout of 0.5s and sleeps 2s")
            && e.contains("conformance.pool.slow [2.0]) got no Finished"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_reported_as_error_fails_outcomes() {
    let e = failure(PoolCheck::Outcomes, Fault::PanicAsError).await;
    assert!(
        e.contains("conformance.pool.panic")
            && e.contains("ended `error`")
            && e.contains("expected `panic` with an error containing \"conformance panic"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_a_job_while_every_worker_is_busy_fails_gives_back() {
    let e = failure(PoolCheck::GivesBack, Fault::Overbooks).await;
    assert!(
        e.contains("`gives_back` failed")
            && e.contains("while all 2 workers were busy")
            && e.contains("must give the job back"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_given_back_without_its_arguments_fails() {
    let e = failure(PoolCheck::GivesBack, Fault::MangledGiveBack).await;
    assert!(e.contains("back changed: args [0.0125] became []"), "{e}");
    let e = failure(PoolCheck::Outcomes, Fault::MangledGiveBack).await;
    assert!(e.contains("back changed"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_never_show_their_job_fail_workers() {
    let e = failure(PoolCheck::Workers, Fault::StaleWorkers).await;
    assert!(
        e.contains("`workers` failed") && e.contains("but reports status Ready, current_task None"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_without_grace_fails_shutdown() {
    let e = failure(PoolCheck::Shutdown, Fault::ImpatientShutdown).await;
    assert!(e.contains("`shutdown` failed"), "{e}");
    assert!(
        e.contains("returned after") || e.contains("which ends within the grace"),
        "{e}"
    );
}

#[test]
fn a_failing_check_is_reported_at_the_callers_line() {
    let line = line!() + 2;
    let site = panic_site(|| {
        run_pool_check_blocking(PoolCheck::Outcomes, async {
            Broken::make(Fault::DoubleFinish)
        })
    });
    assert_eq!(site.file, file!(), "{site:?}");
    assert_eq!(site.line, line, "{site:?}");
    assert!(
        site.message
            .contains("pool conformance check `outcomes` failed"),
        "{site:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_pool_conformance_panics_naming_the_failed_checks_and_the_caller() {
    let line = line!() + 2;
    let outcome = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
        run_pool_conformance(Broken::make(Fault::PanicAsError)),
    ))
    .await;
    let payload = outcome.expect_err("the suite must fail on a pool that mislabels panics");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        msg.contains("pool conformance: 1 of 6 checks failed"),
        "{msg}"
    );
    assert!(msg.contains("`outcomes` failed"), "{msg}");
    assert!(
        msg.contains(&format!("conformance suite called at {}:{line}:", file!())),
        "{msg}"
    );
}
