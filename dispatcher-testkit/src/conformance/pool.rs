//! A conformance suite for [`Pool`] implementations: what the service relies on.
//!
//! Give it a `make` function that builds a fresh, not yet started pool each time it is called
//! (`Fn() -> P` with `P: Pool`, e.g. `Box<dyn Pool>`). The pool must have a fixed number of
//! workers, at least one (two or more exercise more: a pool that scales keeps `min = max`). Each
//! check starts its own pool with an events channel and drives it through the [`Pool`] trait
//! alone, as the service does: jobs given back by `try_dispatch` wait in a queue that is tried
//! again after every `Finished` or `Ready` event, and events are read from both the channel and
//! [`Pool::poll_events`]. Every wait is bounded ([`EVENT_WAIT`] for any one event, by default,
//! and [`POOL_CHECK_TIMEOUT`] in all); a failure names the check and what the pool did wrong.
//!
//! What a pool must do (one [`PoolCheck`] each):
//!
//! * report exactly one `Finished` per accepted job, with its key and the right outcome (`ok`
//!   with the task's result, `error` and `panic` with the message), for a burst of jobs larger
//!   than the pool, and report workers becoming free so that given-back jobs run;
//! * give a job back from `try_dispatch` (`Err(job)`, arguments intact) while every worker is
//!   busy;
//! * end a job whose task declares a `timeout` and runs longer, as `timeout`, exactly once, and
//!   keep working;
//! * `cancel` a running job (true, then exactly one `canceled`), refuse unknown and finished
//!   keys (false), and keep working;
//! * report its workers in `workers()`, a busy one with its task and uuid;
//! * at `shutdown(grace)`, let jobs that end within the grace finish and report the ones still
//!   running after it as `canceled`, exactly once, and return.
//!
//! The checks run the suite's own tasks ([`tasks`]). A pool that runs tasks in other processes
//! must find them there: the process pool's workers are the test binary started again, so that
//! binary's `main` calls `dispatcher_pool::run_if_worker(&registry)` first with a registry holding
//! [`registry()`] (or [`with_tasks`] added to its own).
//!
//! One test per check with [`pool_conformance!`](crate::pool_conformance):
//!
//! ```
//! use dispatcher_runtime::InProcessPool;
//! use dispatcher_testkit::pool_conformance;
//!
//! pool_conformance!(in_process_pool, || InProcessPool::new(2));
//! # fn main() {}
//! ```
//!
//! or the whole suite as one call with [`run_pool_conformance`], or one check with
//! [`PoolCheck::run`] (a `Result`, for harnesses of their own).

use std::future::Future;
use std::time::{Duration, Instant};

use dispatcher_core::{Pool, TaskRegistry};

use super::{fail_at, run_blocking};
use crate::error::TestkitError;

mod checks;
mod driver;

/// Longest wait for any one pool event (or for `try_dispatch` to accept a job), by default.
pub const EVENT_WAIT: Duration = Duration::from_secs(10);

/// Longest any one check may take in all (at least six times the event wait).
pub const POOL_CHECK_TIMEOUT: Duration = Duration::from_secs(90);

/// Longest `Pool::start` may take, and then its workers to report idle.
pub const START_WAIT: Duration = Duration::from_secs(20);

/// How much longer than its grace `shutdown` may take to return.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);

/// The grace the shutdown check gives.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The `timeout` of [`tasks::slow()`], in seconds.
pub const SLOW_TIMEOUT_SECONDS: f64 = 0.5;

/// The suite's tasks. Their names start with `conformance.pool.`.
pub mod tasks {
    use std::time::Duration;

    use dispatcher_core::task;

    /// Does nothing (result `null`).
    #[task(name = "conformance.pool.noop")]
    pub fn noop() {}

    /// Sleeps `seconds`, then returns them.
    #[task(name = "conformance.pool.sleep")]
    pub fn sleep(seconds: f64) -> f64 {
        std::thread::sleep(Duration::from_secs_f64(seconds.max(0.0)));
        seconds
    }

    /// Fails with `message` (outcome `error`).
    #[task(name = "conformance.pool.fail")]
    pub fn fail(message: String) -> Result<(), String> {
        Err(message)
    }

    /// Panics with `message` (outcome `panic`).
    #[task(name = "conformance.pool.panic")]
    pub fn panics(message: String) {
        panic!("{message}");
    }

    /// Sleeps `seconds` under a timeout of [`super::SLOW_TIMEOUT_SECONDS`] (outcome `timeout`
    /// when longer).
    #[task(name = "conformance.pool.slow", timeout = 0.5)]
    pub fn slow(seconds: f64) -> f64 {
        std::thread::sleep(Duration::from_secs_f64(seconds.max(0.0)));
        seconds
    }
}

/// A registry of the suite's tasks, for `dispatcher_pool::run_if_worker` in a test binary whose
/// workers run them.
pub fn registry() -> TaskRegistry {
    with_tasks(TaskRegistry::new())
}

/// `registry` with the suite's tasks added.
pub fn with_tasks(registry: TaskRegistry) -> TaskRegistry {
    registry
        .register::<tasks::noop>()
        .register::<tasks::sleep>()
        .register::<tasks::fail>()
        .register::<tasks::panics>()
        .register::<tasks::slow>()
}

/// One pool conformance check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PoolCheck {
    /// A burst of three times the pool's size plus four jobs (ok, error, panic, no-op) ends in
    /// exactly one `Finished` each, with the right outcome, result or message; jobs given back
    /// run after the pool reports a worker free.
    Outcomes,
    /// With every worker busy, `try_dispatch` gives the job back (`Err(job)`, intact); it runs
    /// once a worker is free.
    GivesBack,
    /// A task with a `timeout` that runs longer ends as `timeout` once; a later job runs `ok`.
    Timeout,
    /// `cancel` of a running job returns true and ends it as `canceled` once; of an unknown or
    /// finished key, false; a later job runs `ok`.
    Cancel,
    /// `workers()` reports the pool's workers (distinct ids, idle at first), and a busy one with
    /// its task, uuid and pid while it runs a job.
    Workers,
    /// `shutdown(grace)` lets a job that ends within the grace finish `ok`, reports one still
    /// running after it `canceled` (once), and returns.
    Shutdown,
}

impl PoolCheck {
    /// Every check, in the order [`run_pool_conformance`] runs them.
    pub const ALL: [PoolCheck; 6] = [
        PoolCheck::Outcomes,
        PoolCheck::GivesBack,
        PoolCheck::Timeout,
        PoolCheck::Cancel,
        PoolCheck::Workers,
        PoolCheck::Shutdown,
    ];

    /// The check's name (`outcomes`, `gives_back`, ...).
    pub fn name(self) -> &'static str {
        match self {
            PoolCheck::Outcomes => "outcomes",
            PoolCheck::GivesBack => "gives_back",
            PoolCheck::Timeout => "timeout",
            PoolCheck::Cancel => "cancel",
            PoolCheck::Workers => "workers",
            PoolCheck::Shutdown => "shutdown",
        }
    }

    /// Runs the check on a pool `make` builds, with the default [`EVENT_WAIT`].
    pub async fn run<F, P>(self, make: &F) -> Result<(), TestkitError>
    where
        F: Fn() -> P,
        P: Pool,
    {
        self.run_within(make, EVENT_WAIT).await
    }

    /// Runs the check, waiting at most `wait` for any one event.
    pub async fn run_within<F, P>(self, make: &F, wait: Duration) -> Result<(), TestkitError>
    where
        F: Fn() -> P,
        P: Pool,
    {
        let limit = POOL_CHECK_TIMEOUT.max(wait.saturating_mul(6));
        let started = Instant::now();
        let body = async {
            let mut driver = driver::Driver::start(make(), wait).await?;
            let result = match self {
                PoolCheck::Outcomes => checks::outcomes(&mut driver).await,
                PoolCheck::GivesBack => checks::gives_back(&mut driver).await,
                PoolCheck::Timeout => checks::timeout(&mut driver).await,
                PoolCheck::Cancel => checks::cancel(&mut driver).await,
                PoolCheck::Workers => checks::workers(&mut driver).await,
                PoolCheck::Shutdown => checks::shutdown(&mut driver).await,
            };
            // The check's own failure comes first; then what the pool did while shutting down.
            let finished = driver.finish().await;
            result.and(finished)
        };
        let result = match tokio::time::timeout(limit, body).await {
            Ok(r) => r,
            Err(_) => Err(format!("did not finish within {limit:?}")),
        };
        match result {
            Ok(()) => {
                tracing::debug!(check = self.name(), elapsed = ?started.elapsed(), "pool conformance check passed");
                Ok(())
            }
            Err(problem) => Err(TestkitError::PoolConformance {
                check: self.name(),
                problem,
            }),
        }
    }
}

/// Runs every [`PoolCheck`], each on a fresh pool from `make`, and panics, listing each failed
/// check and why, when any failed.
///
/// The panic message names the line that called this function (`called at file:line:col`); for
/// failures reported at the test's own line, use [`pool_conformance!`](crate::pool_conformance)
/// or [`run_pool_check_blocking`].
#[track_caller]
pub fn run_pool_conformance<F, P>(make: F) -> impl Future<Output = ()>
where
    F: Fn() -> P,
    P: Pool,
{
    let caller = std::panic::Location::caller();
    async move {
        let mut failures = Vec::new();
        for check in PoolCheck::ALL {
            if let Err(e) = check.run(&make).await {
                failures.push(e.to_string());
            }
        }
        if !failures.is_empty() {
            fail_at(
                caller,
                format!(
                    "pool conformance: {} of {} checks failed:\n  - {}",
                    failures.len(),
                    PoolCheck::ALL.len(),
                    failures.join("\n  - ")
                ),
            );
        }
    }
}

/// Runs one check on a fresh multi-threaded tokio runtime and panics when it fails, at the
/// caller's line; what [`pool_conformance!`](crate::pool_conformance) generates tests with.
///
/// `setup` runs on that runtime first and returns the `make` function.
#[track_caller]
pub fn run_pool_check_blocking<S, F, P>(check: PoolCheck, setup: S)
where
    S: Future<Output = F>,
    F: Fn() -> P,
    P: Pool,
{
    run_blocking("pool", async {
        let make = setup.await;
        check.run(&make).await
    });
}

/// Generates one `#[test]` per [`PoolCheck`](crate::conformance::pool::PoolCheck) in a module
/// named `$module`.
///
/// The second argument is an expression, evaluated afresh in each test (on its own tokio
/// runtime, so it may `.await`), that yields the `make` function: `Fn() -> P` with `P: Pool`,
/// each call building a new pool. Names from the enclosing module are in scope (`use super::*`).
/// A failing check is reported at the macro's line.
///
/// ```
/// use dispatcher_core::Pool;
/// use dispatcher_runtime::InProcessPool;
/// use dispatcher_testkit::pool_conformance;
///
/// pool_conformance!(boxed_in_process_pool, || {
///     Box::new(InProcessPool::new(3)) as Box<dyn Pool>
/// });
/// # fn main() {}
/// ```
///
/// A test binary without libtest's harness (such as one that is its own worker program) runs
/// the checks with [`PoolCheck::ALL`] and [`PoolCheck::run`] instead.
#[macro_export]
macro_rules! pool_conformance {
    ($module:ident, $make:expr $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $crate::pool_conformance!(@test $make; outcomes => Outcomes);
            $crate::pool_conformance!(@test $make; gives_back => GivesBack);
            $crate::pool_conformance!(@test $make; timeout => Timeout);
            $crate::pool_conformance!(@test $make; cancel => Cancel);
            $crate::pool_conformance!(@test $make; workers => Workers);
            $crate::pool_conformance!(@test $make; shutdown => Shutdown);
        }
    };
    (@test $make:expr; $name:ident => $check:ident) => {
        #[test]
        fn $name() {
            $crate::conformance::pool::run_pool_check_blocking(
                $crate::conformance::pool::PoolCheck::$check,
                async { $make },
            );
        }
    };
}
