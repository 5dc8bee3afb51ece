//! Consuming: a claim loop per subscription, and one keeper task per queue that writes
//! settlements in batches, renews the leases and cleans up.
//!
//! Bounds: a claim loop holds at most `workers + max_prefetch` (+63 for a rescued claim)
//! messages unsettled; its channel to the service has room for all of them, so a send never
//! waits for long. Settlements wait in a buffer bounded the same way (one per message handed
//! out) until the keeper writes them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dispatcher_core::broker::Subscription;
use dispatcher_core::delivery::{ConsumerInfo, Settle, Settlement};
use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};

mod claimer;
mod keeper;

use super::PgQueueConfig;
use crate::error::Result;

/// Messages per claim row (bits of `claims.done`).
const PER_CLAIM: u64 = 64;

#[derive(Debug, Default)]
struct Counters {
    claimed: AtomicU64,
    rescued: AtomicU64,
    completed: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    canceled: AtomicU64,
    released: AtomicU64,
    orphans: AtomicU64,
    settle_errors: AtomicU64,
}

/// What the claim loops and the keeper share; also the [`Settle`] every delivery reports to.
#[derive(Debug)]
pub(crate) struct Shared {
    config: PgQueueConfig,
    workers: AtomicUsize,
    limits: Mutex<Vec<(String, u32)>>,
    in_flight: AtomicUsize,
    settled: AtomicU64,
    /// Settlements not written yet: (delivery id, settlement).
    buf: Mutex<Vec<(u64, Settlement)>>,
    flush: Notify,
    credit: Notify,
    /// Claims handed out and not entirely written back: claim id → (owner, messages left).
    claims: Mutex<HashMap<i64, (i64, u32)>>,
    /// Owner ids of this process: claim loops running, or claims left to write back.
    owners: Mutex<Vec<i64>>,
    keeper: AtomicBool,
    connected: AtomicBool,
    /// Set when the queue object is dropped: the tasks end.
    closed: AtomicBool,
    stop: Notify,
    counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn new(config: PgQueueConfig) -> Arc<Self> {
        Arc::new(Shared {
            config,
            workers: AtomicUsize::new(4),
            limits: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            settled: AtomicU64::new(0),
            buf: Mutex::new(Vec::new()),
            flush: Notify::new(),
            credit: Notify::new(),
            claims: Mutex::new(HashMap::new()),
            owners: Mutex::new(Vec::new()),
            keeper: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            stop: Notify::new(),
            counters: Counters::default(),
        })
    }

    pub(crate) fn set_info(&self, info: &ConsumerInfo) {
        self.workers.store(info.workers.max(1), Ordering::Relaxed);
        *lock(&self.limits) = info.concurrency.clone();
    }

    /// Ends the claim loops and the keeper (after one last write of settlements).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
        self.flush.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// How many messages to hold: the workers, plus what they complete within the horizon at
    /// `rate` per second (at least one per worker, at most `max_prefetch`).
    fn target(&self, rate: f64) -> usize {
        let workers = self.workers.load(Ordering::Relaxed);
        let ahead = (rate * self.config.prefetch_horizon.as_secs_f64()).ceil() as usize;
        workers + ahead.clamp(workers, self.config.max_prefetch.max(workers))
    }

    pub(crate) fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let c = &self.counters;
        let mut m = serde_json::Map::new();
        let n = |a: &AtomicU64| serde_json::Value::from(a.load(Ordering::Relaxed));
        m.insert("in_flight".into(), self.in_flight().into());
        m.insert("claimed".into(), n(&c.claimed));
        m.insert("rescued".into(), n(&c.rescued));
        m.insert("completed".into(), n(&c.completed));
        m.insert("retried".into(), n(&c.retried));
        m.insert("failed".into(), n(&c.failed));
        m.insert("canceled".into(), n(&c.canceled));
        m.insert("released".into(), n(&c.released));
        m.insert("orphaned_claims".into(), n(&c.orphans));
        m.insert("settle_errors".into(), n(&c.settle_errors));
        m.insert(
            "owners".into(),
            serde_json::Value::from(lock(&self.owners).clone()),
        );
        m.insert(
            "database_connected".into(),
            self.connected.load(Ordering::Relaxed).into(),
        );
        m
    }
}

impl Settle for Shared {
    fn settle(&self, id: u64, settlement: Settlement) {
        lock(&self.buf).push((id, settlement));
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.settled.fetch_add(1, Ordering::Relaxed);
        self.flush.notify_one();
        self.credit.notify_one();
    }
}

/// Starts consuming `queues`: the keeper (once per queue object) and a claim loop feeding the
/// returned subscription.
pub(crate) async fn start(
    shared: Arc<Shared>,
    queues: Vec<String>,
    wake: Subscription,
) -> Result<Subscription> {
    if !shared.keeper.swap(true, Ordering::SeqCst) {
        tokio::spawn(keeper::keeper(shared.clone()));
    }
    let capacity = shared.workers.load(Ordering::Relaxed) + shared.config.max_prefetch + 64;
    let (tx, rx) = mpsc::channel(capacity.max(128));
    let mut claimer = claimer::Claimer::new(shared, queues).await?;
    tokio::spawn(async move { claimer.run(wake, tx).await });
    let stream = super::stream::Claimed(rx);
    Ok(stream.boxed())
}
