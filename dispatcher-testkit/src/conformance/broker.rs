//! A conformance suite for [`Broker`] implementations: what the service relies on.
//!
//! Give it a `make` function that returns a fresh broker instance connected to the same bus or
//! database each time it is called; the checks publish through one instance and subscribe through
//! others. Every check uses channels of its own (a uuid suffix), waits at most
//! [`MESSAGE_WAIT`] for any one message or broker call and [`CHECK_TIMEOUT`] in all, and fails
//! with a message naming the check and what the broker did wrong; it never hangs.
//!
//! What a broker must do (one [`Check`] each):
//!
//! * deliver a payload published after `subscribe` returned, unchanged, with its channel;
//! * keep channels apart (no cross-talk), and deliver a channel's payloads to every subscription
//!   of it (broadcast, like NOTIFY);
//! * carry a 100 KB message sent with [`dispatcher_core::broker::send`] (as chunks under
//!   [`Broker::max_payload`] when it has a limit);
//! * keep the order of the payloads one publisher sends on one channel, also while another
//!   publisher sends on the same channel;
//! * deliver all of a `publish_batch`, in order;
//! * `subscribe_and_publish`: send a request once, and deliver the answer that another instance
//!   publishes on the reply channel as soon as it sees the request;
//! * answer `self_check` in time.
//!
//! Delivery of payloads published *before* a subscription was made is not checked either way.
//!
//! Run it as one test with [`run_broker_conformance`], or as one test per check with
//! [`broker_conformance!`](crate::broker_conformance). Everything here is also reachable as
//! `dispatcher_testkit::conformance::...` (e.g. `conformance::run_broker_conformance`,
//! `conformance::Check`).
//!
//!
//! ```
//! use std::sync::Arc;
//! use dispatcher_core::Broker;
//! use dispatcher_testkit::conformance::run_broker_conformance;
//! use dispatcher_testkit::MemoryBroker;
//!
//! # #[tokio::main]
//! # async fn main() {
//! let bus = MemoryBroker::new();
//! run_broker_conformance(move || {
//!     let broker = bus.clone();
//!     async move { Arc::new(broker) as Arc<dyn Broker> }
//! })
//! .await;
//! # }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher_core::{Broker, Incoming, Subscription};
use futures_util::StreamExt;

use super::{bounded, fail_at, preview, run_blocking};
use crate::error::TestkitError;

mod checks;

/// Longest wait for any one message, by default.
pub const MESSAGE_WAIT: Duration = Duration::from_secs(5);

/// Longest any one check may take in all.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// The bound given to [`Broker::self_check`].
pub const SELF_CHECK_BOUND: Duration = Duration::from_secs(5);

/// Messages of the ordering check (per publisher: one sends all of them, then two send half each
/// at the same time).
pub const ORDERING_MESSAGES: usize = 1000;

/// Requests of the request check.
pub const REQUESTS: usize = 20;

/// Size of the argument of the large-payload check.
pub const LARGE_PAYLOAD_BYTES: usize = 100 * 1024;

/// One conformance check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Check {
    /// A payload published after `subscribe` returned arrives unchanged (quotes, backslashes,
    /// newlines, non-ASCII) with its channel.
    RoundTrip,
    /// A subscription gets the payloads of its channels and no others.
    Channels,
    /// Two subscriptions of one channel both get every payload, in order.
    Broadcast,
    /// A 100 KB message sent with [`dispatcher_core::broker::send`] arrives whole (as chunks
    /// under [`Broker::max_payload`], reassembled with
    /// [`Assembler`](dispatcher_core::chunk::Assembler)).
    LargePayload,
    /// [`ORDERING_MESSAGES`] payloads from one publisher arrive in order; so do those of two
    /// publishers sending on one channel at the same time.
    Ordering,
    /// `publish_batch` delivers every payload, in order per channel; an empty batch is fine.
    Batch,
    /// `self_check` succeeds within [`SELF_CHECK_BOUND`].
    SelfCheck,
    /// `subscribe_and_publish` sends each of [`REQUESTS`] requests once, unchanged, and the
    /// answer another instance publishes on the reply channel the moment it reads the request
    /// arrives (the subscription was in effect before the request could be read).
    Request,
}

impl Check {
    /// Every check, in the order [`run_broker_conformance`] runs them.
    pub const ALL: [Check; 8] = [
        Check::RoundTrip,
        Check::Channels,
        Check::Broadcast,
        Check::LargePayload,
        Check::Ordering,
        Check::Batch,
        Check::SelfCheck,
        Check::Request,
    ];

    /// The check's name (`round_trip`, `channels`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Check::RoundTrip => "round_trip",
            Check::Channels => "channels",
            Check::Broadcast => "broadcast",
            Check::LargePayload => "large_payload",
            Check::Ordering => "ordering",
            Check::Batch => "batch",
            Check::SelfCheck => "self_check",
            Check::Request => "request",
        }
    }

    /// Runs the check with the default [`MESSAGE_WAIT`].
    pub async fn run<F, Fut>(self, make: &F) -> Result<(), TestkitError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Arc<dyn Broker>>,
    {
        self.run_within(make, MESSAGE_WAIT).await
    }

    /// Runs the check, waiting at most `wait` for any one message or broker call.
    pub async fn run_within<F, Fut>(self, make: &F, wait: Duration) -> Result<(), TestkitError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Arc<dyn Broker>>,
    {
        let limit = CHECK_TIMEOUT.max(wait.saturating_mul(4));
        let started = Instant::now();
        let body = async {
            match self {
                Check::RoundTrip => checks::round_trip(make, wait).await,
                Check::Channels => checks::channels(make, wait).await,
                Check::Broadcast => checks::broadcast(make, wait).await,
                Check::LargePayload => checks::large_payload(make, wait).await,
                Check::Ordering => checks::ordering(make, wait).await,
                Check::Batch => checks::batch(make, wait).await,
                Check::SelfCheck => checks::self_check(make).await,
                Check::Request => checks::request(make, wait).await,
            }
        };
        let result = match tokio::time::timeout(limit, body).await {
            Ok(r) => r,
            Err(_) => Err(format!("did not finish within {limit:?}")),
        };
        match result {
            Ok(()) => {
                tracing::debug!(check = self.name(), elapsed = ?started.elapsed(), "conformance check passed");
                Ok(())
            }
            Err(problem) => Err(TestkitError::Conformance {
                check: self.name(),
                problem,
            }),
        }
    }
}

/// Runs every [`Check`] and panics, listing each failed check and why, when any failed.
///
/// `make` returns a fresh broker instance connected to the same bus or database each time.
///
/// The panic message names the line that called this function (`called at file:line:col`):
/// an async function cannot pass its caller's location to the panic itself. For failures
/// reported at the test's own line, use [`broker_conformance!`](crate::broker_conformance) or
/// [`run_check_blocking`].
#[track_caller]
pub fn run_broker_conformance<F, Fut>(make: F) -> impl Future<Output = ()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let caller = std::panic::Location::caller();
    async move {
        let mut failures = Vec::new();
        for check in Check::ALL {
            if let Err(e) = check.run(&make).await {
                failures.push(e.to_string());
            }
        }
        if !failures.is_empty() {
            fail_at(
                caller,
                format!(
                    "broker conformance: {} of {} checks failed:\n  - {}",
                    failures.len(),
                    Check::ALL.len(),
                    failures.join("\n  - ")
                ),
            );
        }
    }
}

/// Runs one check on a fresh multi-threaded tokio runtime and panics when it fails; what
/// [`broker_conformance!`](crate::broker_conformance) generates tests with.
///
/// `setup` runs on that runtime first and returns the `make` function. A failure is reported at
/// the caller's line (the test, or the `broker_conformance!` invocation).
#[track_caller]
pub fn run_check_blocking<S, F, Fut>(check: Check, setup: S)
where
    S: Future<Output = F>,
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    run_blocking("broker", async {
        let make = setup.await;
        check.run(&make).await
    });
}

/// Generates one `#[test]` per conformance [`Check`](crate::conformance::Check) in a module named
/// `$module`.
///
/// The second argument is an expression, evaluated afresh in each test (on its own tokio
/// runtime, so it may `.await`), that yields the `make` function: `Fn() -> impl Future<Output =
/// Arc<dyn Broker>>`, each call returning a new instance on one shared bus. Names from the
/// enclosing module are in scope (`use super::*`).
///
/// ```
/// use std::sync::Arc;
/// use dispatcher_core::Broker;
/// use dispatcher_testkit::{broker_conformance, MemoryBroker};
///
/// broker_conformance!(memory_broker_conformance, {
///     let bus = MemoryBroker::new();
///     move || {
///         let broker = bus.clone();
///         async move { Arc::new(broker) as Arc<dyn Broker> }
///     }
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! broker_conformance {
    ($module:ident, $make:expr $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $crate::broker_conformance!(@test $make; round_trip => RoundTrip);
            $crate::broker_conformance!(@test $make; channels => Channels);
            $crate::broker_conformance!(@test $make; broadcast => Broadcast);
            $crate::broker_conformance!(@test $make; large_payload => LargePayload);
            $crate::broker_conformance!(@test $make; ordering => Ordering);
            $crate::broker_conformance!(@test $make; batch => Batch);
            $crate::broker_conformance!(@test $make; self_check => SelfCheck);
            $crate::broker_conformance!(@test $make; request => Request);
        }
    };
    (@test $make:expr; $name:ident => $check:ident) => {
        #[test]
        fn $name() {
            $crate::conformance::run_check_blocking(
                $crate::conformance::Check::$check,
                async { $make },
            );
        }
    };
}

// ----- helpers -----

/// A fresh channel name: `conf_<tag>_<uuid>`, at most 63 bytes.
fn channel_name(tag: &str) -> String {
    let mut name = format!("conf_{tag}_{}", uuid::Uuid::new_v4().simple());
    name.truncate(dispatcher_core::broker::MAX_CHANNEL_LEN);
    name
}

async fn subscribe(
    broker: &dyn Broker,
    channels: &[String],
    wait: Duration,
) -> Result<Subscription, String> {
    bounded(
        wait,
        || format!("subscribe to {channels:?}"),
        broker.subscribe(channels),
    )
    .await
}

async fn publish(
    broker: &dyn Broker,
    channel: &str,
    payload: &str,
    wait: Duration,
) -> Result<(), String> {
    bounded(
        wait,
        || format!("publish on {channel}"),
        broker.publish(channel, payload),
    )
    .await
}

/// The next message, within `wait`; `what` names it for the error.
async fn next(
    sub: &mut Subscription,
    wait: Duration,
    what: impl FnOnce() -> String,
) -> Result<Incoming, String> {
    match tokio::time::timeout(wait, sub.next()).await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(format!(
            "the subscription ended while waiting for {}",
            what()
        )),
        Err(_) => Err(format!(
            "timed out after {wait:?} waiting for {} (lost or never sent)",
            what()
        )),
    }
}

/// Fails when anything arrives within a short quiet period.
async fn expect_quiet(sub: &mut Subscription, label: &str) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
        Ok(Some(m)) => Err(format!(
            "{label} received an unexpected extra payload {} on channel {} (cross-talk or duplicate)",
            preview(&m.payload),
            m.channel
        )),
        _ => Ok(()),
    }
}
