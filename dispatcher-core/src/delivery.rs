//! Durable deliveries: how a broker that keeps jobs learns how each one ended.
//!
//! A fire-and-forget broker (NOTIFY, the memory broker, most custom ones) hands the service
//! payloads and forgets them: its [`Incoming`](crate::Incoming) carries no [`Delivery`] and
//! nothing here concerns it. A durable broker attaches a [`Delivery`] to every payload it hands
//! out; the service then reports exactly one [`Settlement`] for it when the Call ends (whatever
//! the way: finished, failed, rejected, discarded, canceled, or given back at shutdown), and the
//! broker deletes, retries or fails the job accordingly.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use dispatcher_core::delivery::{Delivery, Settle, Settlement};
//!
//! #[derive(Default)]
//! struct Log(Mutex<Vec<(u64, Settlement)>>);
//! impl Settle for Log {
//!     fn settle(&self, id: u64, settlement: Settlement) {
//!         if let Ok(mut log) = self.0.lock() {
//!             log.push((id, settlement));
//!         }
//!     }
//! }
//!
//! let log = Arc::new(Log::default());
//! let delivery = Delivery::new(7, 2, log.clone());
//! assert_eq!(delivery.attempt(), 2);
//! delivery.settle(Settlement::Complete);
//! assert_eq!(log.0.lock().unwrap().as_slice(), &[(7, Settlement::Complete)]);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How a durably delivered Call ended, as the service reports it to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settlement {
    /// Done (`ok`, or `discarded` by the task's duplicate policy): the job is removed.
    Complete,
    /// Failed with attempts left: run it again, no earlier than `after` from now.
    Retry {
        /// Backoff before the next attempt.
        after: Duration,
        /// What went wrong in this attempt (kept with the job).
        error: String,
    },
    /// Failed for good: attempts exhausted, or rejected (unknown task, bad arguments). Kept as
    /// failed, with `error`, for inspection and a manual retry.
    Fail {
        /// What went wrong in the last attempt.
        error: String,
    },
    /// Canceled (by an operator or the Call's own deadline policy): kept, not retried.
    Cancel {
        /// Why.
        reason: String,
    },
    /// Not run to an end because the service is stopping: give the job back as it was, without
    /// counting the attempt.
    Release,
}

impl Settlement {
    /// A short lowercase name (`complete`, `retry`, `fail`, `cancel`, `release`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Settlement::Complete => "complete",
            Settlement::Retry { .. } => "retry",
            Settlement::Fail { .. } => "fail",
            Settlement::Cancel { .. } => "cancel",
            Settlement::Release => "release",
        }
    }
}

/// Receives settlements; a durable broker implements it (usually on a small shared handle that
/// batches them for its database).
///
/// `settle` is called on the service's loop: it must not block. Buffer the settlement and write
/// it from a task of your own; the number outstanding is bounded by what the broker handed out.
pub trait Settle: Send + Sync + 'static {
    /// Records that delivery `id` ended as `settlement`. Called exactly once per delivery.
    fn settle(&self, id: u64, settlement: Settlement);
}

/// A handle a durable broker attaches to one payload it handed out (see the module docs).
#[derive(Clone)]
pub struct Delivery {
    id: u64,
    attempt: u32,
    max_attempts: Option<u32>,
    to: Arc<dyn Settle>,
}

impl Delivery {
    /// Delivery `id` (the broker's own number), on `attempt` (1 for the first run), settled to
    /// `to`.
    pub fn new(id: u64, attempt: u32, to: Arc<dyn Settle>) -> Self {
        Delivery {
            id,
            attempt,
            max_attempts: None,
            to,
        }
    }

    /// The same delivery, whose job allows `max` attempts in all (overriding the task's
    /// `max_attempts`).
    pub fn with_max_attempts(mut self, max: u32) -> Self {
        self.max_attempts = Some(max);
        self
    }

    /// The job's own attempt limit, when it has one.
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The broker's number for this delivery.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Which attempt this is: 1 for the first run, 2 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Reports how the Call ended. Consumes the handle: one settlement per delivery.
    pub fn settle(self, settlement: Settlement) {
        self.to.settle(self.id, settlement);
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Delivery {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && Arc::ptr_eq(&self.to, &other.to)
    }
}

/// What a service tells its brokers about itself when it starts consuming
/// ([`Broker::consumer`](crate::Broker::consumer)); durable brokers size their claims by it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerInfo {
    /// Worker slots of the service's pool.
    pub workers: usize,
    /// Tasks with a cluster-wide concurrency limit (`#[task(concurrency = N)]`), with N.
    pub concurrency: Vec<(String, u32)>,
}

impl ConsumerInfo {
    /// A consumer with `workers` slots and no concurrency limits.
    pub fn new(workers: usize) -> Self {
        ConsumerInfo {
            workers,
            concurrency: Vec::new(),
        }
    }
}
