//! Conformance suites: what the service relies on from a [`Broker`](dispatcher_core::Broker)
//! ([`broker`]) and from a [`Pool`](dispatcher_core::Pool) ([`pool`]).
//!
//! Both suites work the same way:
//!
//! * one check per property the service relies on ([`Check`] for brokers,
//!   [`pool::PoolCheck`] for pools), each run on fresh instances built by a `make` function
//!   the caller gives;
//! * every wait is bounded: a check that the implementation under test leaves hanging fails
//!   with a message saying what it waited for, it never hangs the test;
//! * a failed check is a [`TestkitError`](crate::TestkitError) naming the check and what the
//!   implementation did wrong;
//! * the whole suite runs as one call ([`run_broker_conformance`],
//!   [`pool::run_pool_conformance`]) or as one `#[test]` per check
//!   ([`broker_conformance!`](crate::broker_conformance),
//!   [`pool_conformance!`](crate::pool_conformance)). Failures are reported at the caller's
//!   line: the panicking entry points are `#[track_caller]`.
//!
//! The broker suite's items are re-exported here, so `conformance::run_broker_conformance`,
//! `conformance::Check` and `conformance::run_check_blocking` work as they did before the pool
//! suite came.

use std::future::Future;
use std::panic::Location;
use std::time::Duration;

pub mod broker;
pub mod pool;

pub use broker::{
    run_broker_conformance, run_check_blocking, Check, CHECK_TIMEOUT, LARGE_PAYLOAD_BYTES,
    MESSAGE_WAIT, ORDERING_MESSAGES, SELF_CHECK_BOUND,
};

/// `s` quoted, cut to 80 characters (with its length in bytes when cut).
pub(crate) fn preview(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        return format!("{s:?}");
    }
    let cut: String = s.chars().take(MAX).collect();
    format!("{cut:?}… ({} bytes)", s.len())
}

/// Awaits a call of the implementation under test, within `wait`; `what` names it for the error.
pub(crate) async fn bounded<T, E: std::fmt::Display>(
    wait: Duration,
    what: impl FnOnce() -> String,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(wait, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{} failed: {e}", what())),
        Err(_) => Err(format!("{} did not return within {wait:?}", what())),
    }
}

/// Runs one check for a blocking entry point, on a runtime of its own (multi-threaded, two
/// workers, timers and I/O on), and fails at the caller's line when it fails. `what` names the
/// suite in the message when no runtime can be built.
#[track_caller]
pub(crate) fn run_blocking<E: std::fmt::Display>(
    what: &str,
    check: impl Future<Output = Result<(), E>>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(format!(
            "could not build a tokio runtime for the {what} conformance check: {e}"
        )),
    };
    if let Err(e) = runtime.block_on(check) {
        fail(e.to_string());
    }
}

/// Fails a conformance run: panics with `message`, at the caller's location (every function
/// between the test and here is `#[track_caller]`).
#[track_caller]
pub(crate) fn fail(message: String) -> ! {
    panic!("{message}")
}

/// Fails a conformance run that an async entry point ran: the panic's own location is in the
/// testkit (an async function cannot pass its caller's on), so the message names `caller`.
#[track_caller]
pub(crate) fn fail_at(caller: &'static Location<'static>, message: String) -> ! {
    panic!("{message}\n(conformance suite called at {caller})")
}
