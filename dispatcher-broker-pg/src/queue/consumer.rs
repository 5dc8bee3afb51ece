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
use std::time::{Duration, Instant};

use dispatcher_core::broker::{Incoming, Subscription};
use dispatcher_core::delivery::{ConsumerInfo, Delivery, Settle, Settlement};
use dispatcher_core::time::sleep_until;
use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};
use tokio_postgres::{Client, Statement};

use super::{bounded, connect, PgQueueConfig};
use crate::error::{Error, Result};
use crate::quote_ident;

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
        tokio::spawn(keeper(shared.clone()));
    }
    let capacity = shared.workers.load(Ordering::Relaxed) + shared.config.max_prefetch + 64;
    let (tx, rx) = mpsc::channel(capacity.max(128));
    let mut claimer = Claimer::new(shared, queues).await?;
    tokio::spawn(async move { claimer.run(wake, tx).await });
    let stream = super::stream::Claimed(rx);
    Ok(stream.boxed())
}

struct ClaimConn {
    client: Client,
    claim: Statement,
    rescue: Statement,
    sweep: Statement,
    orphan: Statement,
}

/// What a claim round did.
struct Round {
    /// Messages handed out.
    got: usize,
    /// Every queue ran out of available jobs (the claim statements say so in a last row
    /// without a claim).
    dry: bool,
    /// When dry: when the next future job is due.
    due: Option<Instant>,
}

struct Claimer {
    shared: Arc<Shared>,
    queues: Vec<String>,
    conn: Option<ClaimConn>,
    owner: i64,
    rate: f64,
    sampled: (Instant, u64),
}

impl Claimer {
    async fn new(shared: Arc<Shared>, queues: Vec<String>) -> Result<Self> {
        let mut c = Claimer {
            shared,
            queues,
            conn: None,
            owner: 0,
            rate: 0.0,
            sampled: (Instant::now(), 0),
        };
        // Fail the subscribe when the database is not there at all.
        c.connect().await?;
        Ok(c)
    }

    async fn connect(&mut self) -> Result<()> {
        let config = &self.shared.config;
        let s = quote_ident(&config.schema);
        let client = connect(&config.pg, "queue claims").await?;
        let prep = |sql: String| {
            let client = &client;
            async move {
                client.prepare(&sql).await.map_err(|source| Error::Query {
                    what: format!("prepare {sql}"),
                    source,
                })
            }
        };
        // Claims are at-least-once already: an asynchronous commit that a crash undoes only
        // makes the jobs available again.
        client
            .batch_execute("SET synchronous_commit = off")
            .await
            .map_err(|source| Error::Query {
                what: "set synchronous_commit".into(),
                source,
            })?;
        let conn = ClaimConn {
            claim: prep(format!("SELECT * FROM {s}.claim($1, $2, $3, $4, $5, $6)")).await?,
            rescue: prep(format!("SELECT * FROM {s}.rescue($1, $2, $3)")).await?,
            sweep: prep(format!("SELECT id FROM {s}.claims WHERE owner = $1")).await?,
            orphan: prep(format!(
                "UPDATE {s}.claims SET owner = -1 WHERE id = ANY($1) AND owner = $2"
            ))
            .await?,
            client,
        };
        if self.owner == 0 {
            let row = bounded(
                "register the consumer",
                config.statement_timeout,
                conn.client.query_one(
                    &format!(
                        "INSERT INTO {s}.owners (node, lease_until)
                         VALUES ($1, now() + make_interval(secs => $2)) RETURNING id"
                    ),
                    &[&config.node, &config.lease.as_secs_f64()],
                ),
            )
            .await?;
            self.owner = row.get(0);
            lock(&self.shared.owners).push(self.owner);
            tracing::info!(owner = self.owner, queues = ?self.queues, "consuming the durable queue");
        }
        self.conn = Some(conn);
        self.shared.connected.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn run(&mut self, mut wake: Subscription, tx: mpsc::Sender<Incoming>) {
        let config = self.shared.config.clone();
        let mut backoff = config.pg.reconnect_min;
        let mut next_poll = Instant::now();
        let mut next_sweep = Instant::now() + config.lease / 3;
        let mut wake_open = true;
        loop {
            if tx.is_closed() || self.shared.is_closed() {
                break;
            }
            if self.conn.is_none() {
                if let Err(e) = self.connect().await {
                    self.shared.connected.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, retry_in = ?backoff, "durable queue: cannot connect to claim jobs");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(config.pg.reconnect_max);
                    continue;
                }
            }
            self.sample_rate();
            let now = Instant::now();
            let target = self.shared.target(self.rate);
            let credit = self.credit();
            let mut next_due = None;
            let mut full = false;
            let mut more = false;
            let mut got = 0;
            if credit > 0 {
                let rescue = now >= next_poll;
                let began = Instant::now();
                match self.claim_round(credit, rescue, &tx).await {
                    Ok(round) => {
                        tracing::trace!(
                            took_us = began.elapsed().as_micros() as u64,
                            at = dispatcher_core::call::now_epoch(),
                            credit,
                            got = round.got,
                            dry = round.dry,
                            in_flight = self.shared.in_flight(),
                            rate = self.rate,
                            "claim round"
                        );
                        backoff = config.pg.reconnect_min;
                        got = round.got;
                        full = round.got >= credit;
                        // Rows another claimer held, not a want of jobs: look again.
                        more = !full && !round.dry;
                        next_due = round.due;
                    }
                    Err(e) => {
                        self.drop_conn(&e);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(config.pg.reconnect_max);
                        continue;
                    }
                }
            }
            if now >= next_poll {
                next_poll = now + config.poll_interval;
            }
            if now >= next_sweep {
                next_sweep = now + config.lease / 3;
                if let Err(e) = self.sweep().await {
                    self.drop_conn(&e);
                    continue;
                }
            }
            if more {
                if got == 0 {
                    // Every row it wanted was locked: give their claimer a moment.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                continue;
            }
            if full {
                // There may be more: claim again once half the target is free (one round trip
                // for many messages, not one per completion), or at the next poll.
                let low = (target / 2).max(1);
                let mut stop = false;
                while self.credit() < low && Instant::now() < next_poll {
                    tokio::select! {
                        biased;
                        _ = tx.closed() => stop = true,
                        _ = self.shared.stop.notified() => stop = true,
                        _ = self.shared.credit.notified() => {}
                        m = wake.next(), if wake_open => {
                            if m.is_none() {
                                tracing::warn!("durable queue: the wake-up subscription ended; polling only");
                                wake_open = false;
                            }
                        }
                        _ = sleep_until(Some(next_poll)) => {}
                    }
                    if stop {
                        break;
                    }
                }
                if stop {
                    break;
                }
                continue;
            }
            let blocked = credit == 0;
            tokio::select! {
                biased;
                _ = tx.closed() => break,
                _ = self.shared.stop.notified() => break,
                m = wake.next(), if wake_open => {
                    if m.is_none() {
                        tracing::warn!("durable queue: the wake-up subscription ended; polling only");
                        wake_open = false;
                    } else {
                        tracing::trace!(at = dispatcher_core::call::now_epoch(), "woken");
                    }
                }
                _ = self.shared.credit.notified(), if blocked => {}
                _ = sleep_until(Some(next_poll)) => {}
                _ = sleep_until(next_due), if next_due.is_some() => {}
            }
        }
        lock(&self.shared.owners).retain(|o| *o != self.owner || self.has_claims());
        tracing::debug!(owner = self.owner, "claim loop ended");
    }

    /// Messages this loop may claim now: its target less what is handed out.
    fn credit(&self) -> usize {
        self.shared
            .target(self.rate)
            .saturating_sub(self.shared.in_flight())
    }

    fn has_claims(&self) -> bool {
        lock(&self.shared.claims)
            .values()
            .any(|(o, _)| *o == self.owner)
    }

    fn drop_conn(&mut self, e: &Error) {
        tracing::warn!(error = %e, owner = self.owner, "durable queue: claim connection given up; reconnecting");
        self.conn = None;
        self.shared.connected.store(false, Ordering::Relaxed);
    }

    fn sample_rate(&mut self) {
        let (at, n) = self.sampled;
        let dt = at.elapsed().as_secs_f64();
        if dt >= 0.02 {
            let now_n = self.shared.settled.load(Ordering::Relaxed);
            let r = now_n.saturating_sub(n) as f64 / dt;
            self.rate = 0.5 * self.rate + 0.5 * r;
            self.sampled = (Instant::now(), now_n);
        }
    }

    /// Claims up to `credit` messages, then rescues expired claims (when `rescue`).
    async fn claim_round(
        &mut self,
        credit: usize,
        rescue: bool,
        tx: &mpsc::Sender<Incoming>,
    ) -> Result<Round> {
        let timeout = self.shared.config.statement_timeout;
        let mut got = 0;
        let limits = lock(&self.shared.limits).clone();
        let limited: Vec<String> = limits.iter().map(|(t, _)| t.clone()).collect();
        let none: Option<String> = None;
        let no_limit: Option<i32> = None;
        let queues = self.queues.clone();
        let mut dry = true;
        let mut due: Option<f64> = None;
        for queue in &queues {
            let want = credit.saturating_sub(got) as i32;
            if want > 0 {
                let Some(conn) = self.conn.as_ref() else {
                    return Err(Error::Closed);
                };
                let rows = bounded(
                    "claim jobs",
                    timeout,
                    conn.client.query(
                        &conn.claim,
                        &[queue, &want, &self.owner, &limited, &none, &no_limit],
                    ),
                )
                .await?;
                let (n, ran_dry) = self.deliver_rows(rows, queue, tx).await;
                match ran_dry {
                    Some(next) => {
                        due = match (due, next) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        }
                    }
                    None => dry = false,
                }
                got += n;
            } else {
                dry = false;
            }
            for (task, limit) in &limits {
                let want = credit.saturating_sub(got) as i32;
                if want <= 0 {
                    break;
                }
                let Some(conn) = self.conn.as_ref() else {
                    return Err(Error::Closed);
                };
                let task = Some(task.clone());
                let limit = Some(i32::try_from(*limit).unwrap_or(i32::MAX));
                let rows = bounded(
                    "claim jobs of a limited task",
                    timeout,
                    conn.client.query(
                        &conn.claim,
                        &[
                            queue,
                            &want,
                            &self.owner,
                            &Vec::<String>::new(),
                            &task,
                            &limit,
                        ],
                    ),
                )
                .await?;
                got += self.deliver_rows(rows, queue, tx).await.0;
            }
        }
        if rescue {
            // After the claims: a fresh job does not wait behind the rescue's round trip.
            got += self.rescue(credit.saturating_sub(got), tx).await?;
        }
        let due = if dry && got < credit {
            due.and_then(|s| Duration::try_from_secs_f64(s.max(0.0)).ok())
                .map(|d| Instant::now() + d)
        } else {
            None
        };
        Ok(Round { got, dry, due })
    }

    /// Takes over up to `credit / 64` (at least one) claims whose lease expired, and hands
    /// their unsettled messages out.
    async fn rescue(&mut self, credit: usize, tx: &mpsc::Sender<Incoming>) -> Result<usize> {
        let timeout = self.shared.config.statement_timeout;
        let mut got = 0;
        // Claims may be small (a job or a few of a batch): take more until the credit is used,
        // so a large takeover does not trickle at one claim per poll.
        for _ in 0..32 {
            let left = credit.saturating_sub(got);
            if left == 0 && got > 0 {
                break;
            }
            let most = (left / PER_CLAIM as usize).max(1) as i32;
            let Some(conn) = self.conn.as_ref() else {
                return Err(Error::Closed);
            };
            let rows = bounded(
                "rescue expired claims",
                timeout,
                conn.client
                    .query(&conn.rescue, &[&self.owner, &most, &self.queues]),
            )
            .await?;
            if rows.is_empty() {
                break;
            }
            got += self.deliver_rescued(rows, tx).await;
        }
        Ok(got)
    }

    async fn deliver_rescued(
        &mut self,
        rows: Vec<tokio_postgres::Row>,
        tx: &mpsc::Sender<Incoming>,
    ) -> usize {
        let mut got = 0;
        for row in rows {
            let (claim, queue, attempt, done): (i64, String, i32, i64) =
                (row.get(0), row.get(1), row.get(3), row.get(4));
            let max: Option<i32> = row.get(5);
            let messages: Vec<String> = row.get(6);
            let n = self
                .deliver(claim, &queue, attempt, max, done, messages, tx)
                .await;
            tracing::warn!(
                claim,
                queue,
                attempt,
                messages = n,
                "took over jobs whose lease expired"
            );
            self.shared
                .counters
                .rescued
                .fetch_add(n as u64, Ordering::Relaxed);
            metrics::counter!("dispatcher_queue_rescued_total").increment(n as u64);
            got += n;
        }
        got
    }

    /// Hands out the claims of a claim statement's rows; returns how many messages, and, when
    /// the statement ran out of jobs (its last row has no claim), the seconds until the next
    /// future job is due (`None` inside: there is none).
    async fn deliver_rows(
        &mut self,
        rows: Vec<tokio_postgres::Row>,
        queue: &str,
        tx: &mpsc::Sender<Incoming>,
    ) -> (usize, Option<Option<f64>>) {
        let mut got = 0;
        let mut dry = None;
        for row in rows {
            let Some(claim) = row.get::<_, Option<i64>>(0) else {
                dry = Some(row.get::<_, Option<f64>>(6));
                continue;
            };
            let attempt: i32 = row.get(3);
            let max: Option<i32> = row.get(4);
            let messages: Vec<String> = row.get(5);
            got += self
                .deliver(claim, queue, attempt, max, 0, messages, tx)
                .await;
        }
        self.shared
            .counters
            .claimed
            .fetch_add(got as u64, Ordering::Relaxed);
        metrics::counter!("dispatcher_queue_claimed_total").increment(got as u64);
        (got, dry)
    }

    /// Hands out the messages of one claim whose bits in `done` are clear.
    #[allow(clippy::too_many_arguments)]
    async fn deliver(
        &mut self,
        claim: i64,
        queue: &str,
        attempt: i32,
        max: Option<i32>,
        done: i64,
        messages: Vec<String>,
        tx: &mpsc::Sender<Incoming>,
    ) -> usize {
        let todo: Vec<(usize, String)> = messages
            .into_iter()
            .enumerate()
            .filter(|(i, _)| done & (1i64 << i) == 0)
            .collect();
        let n = todo.len();
        if n == 0 {
            return 0;
        }
        lock(&self.shared.claims).insert(claim, (self.owner, n as u32));
        self.shared.in_flight.fetch_add(n, Ordering::Relaxed);
        let settle: Arc<dyn Settle> = self.shared.clone();
        let attempt = u32::try_from(attempt).unwrap_or(1).max(1);
        for (i, message) in todo {
            let id = claim as u64 * PER_CLAIM + i as u64;
            let mut d = Delivery::new(id, attempt, settle.clone());
            if let Some(m) = max.and_then(|m| u32::try_from(m).ok()) {
                d = d.with_max_attempts(m);
            }
            let incoming = Incoming::new(queue, message).with_delivery(d);
            if let Err(mpsc::error::SendError(back)) = tx.send(incoming).await {
                // The service stopped reading: give the job back untouched.
                if let Some(d) = back.delivery {
                    d.settle(Settlement::Release);
                }
            }
        }
        n
    }

    /// Claims of this owner that nothing here knows about (a claim statement that committed
    /// after its connection was given up) go to owner -1, so that a rescue runs them.
    async fn sweep(&mut self) -> Result<()> {
        let timeout = self.shared.config.statement_timeout;
        let Some(conn) = self.conn.as_ref() else {
            return Ok(());
        };
        let rows = bounded(
            "look for lost claims",
            timeout,
            conn.client.query(&conn.sweep, &[&self.owner]),
        )
        .await?;
        let lost: Vec<i64> = {
            let known = lock(&self.shared.claims);
            rows.iter()
                .map(|r| r.get::<_, i64>(0))
                .filter(|id| !known.contains_key(id))
                .collect()
        };
        if lost.is_empty() {
            return Ok(());
        }
        let n = bounded(
            "hand over lost claims",
            timeout,
            conn.client.execute(&conn.orphan, &[&lost, &self.owner]),
        )
        .await?;
        tracing::warn!(
            claims = n,
            owner = self.owner,
            "claims this service lost track of are handed over for rescue"
        );
        self.shared.counters.orphans.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

/// Settlements of one owner, as the settle function's arrays.
#[derive(Debug, Default)]
struct Batch {
    /// Claims with messages left to settle after this batch, and the bits it settles.
    ids: Vec<i64>,
    masks: Vec<i64>,
    /// Claims whose last messages this batch settles: deleted, with no update before.
    complete: Vec<i64>,
    back_claims: Vec<i64>,
    back_idx: Vec<i32>,
    back_state: Vec<&'static str>,
    back_delay_ms: Vec<i64>,
    back_error: Vec<Option<String>>,
    back_counted: Vec<bool>,
    /// Messages per claim in this batch, and their bits.
    per_claim: HashMap<i64, (u32, i64)>,
}

struct KeeperConn {
    client: Client,
    settle: Statement,
    renew: Statement,
}

/// Writes settlements, renews leases, prunes, samples the depth.
async fn keeper(shared: Arc<Shared>) {
    let config = shared.config.clone();
    let mut conn: Option<KeeperConn> = None;
    let mut renew = tokio::time::interval(config.lease / 3);
    let mut maintain = tokio::time::interval(Duration::from_secs(30));
    let mut sample = tokio::time::interval(config.stats_interval);
    for t in [&mut renew, &mut maintain, &mut sample] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let mut backoff = config.pg.reconnect_min;
    let mut pending: Vec<(u64, Settlement)> = Vec::new();
    loop {
        if shared.is_closed() {
            // One last write of what is buffered, then stop (the leases lapse).
            pending.append(&mut lock(&shared.buf));
            if let Some(c) = conn.as_ref() {
                if let Err(e) = flush(&shared, c, &mut pending).await {
                    tracing::warn!(error = %e, unwritten = pending.len(), "durable queue closed with settlements unwritten; their jobs run again after the lease");
                }
                if let Err(e) = release_leases(&shared, c).await {
                    tracing::debug!(error = %e, "durable queue closed; its leases lapse on their own");
                }
            }
            return;
        }
        if conn.is_none() {
            match keeper_connect(&config).await {
                Ok(c) => {
                    conn = Some(c);
                    backoff = config.pg.reconnect_min;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "durable queue: cannot connect to write settlements");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(config.pg.reconnect_max);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_ref() else { continue };
        // The timers first: under a steady flow a settlement arrives during every flush, so
        // the flush branch is always ready and would starve the lease renewal (the service
        // would lose its own claims while running them).
        let result = tokio::select! {
            biased;
            _ = renew.tick() => renew_leases(&shared, c).await,
            _ = maintain.tick() => maintenance(&shared, c).await,
            _ = sample.tick() => gauges(&config, &c.client).await,
            _ = shared.flush.notified() => {
                tokio::time::sleep(config.settle_delay).await;
                pending.append(&mut lock(&shared.buf));
                flush(&shared, c, &mut pending).await
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, unwritten = pending.len(), "durable queue: keeper connection given up; reconnecting");
            conn = None;
            if !pending.is_empty() {
                // Come back to them after reconnecting.
                shared.flush.notify_one();
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(config.pg.reconnect_max);
        }
    }
}

async fn keeper_connect(config: &PgQueueConfig) -> Result<KeeperConn> {
    let s = quote_ident(&config.schema);
    let client = connect(&config.pg, "queue settlements").await?;
    client
        .batch_execute("SET synchronous_commit = off")
        .await
        .map_err(|source| Error::Query {
            what: "set synchronous_commit".into(),
            source,
        })?;
    let settle = client
        .prepare(&format!(
            "SELECT {s}.settle($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .await
        .map_err(|source| Error::Query {
            what: "prepare settle".into(),
            source,
        })?;
    // An upsert: an owner row deleted while this service was frozen comes back.
    let renew = client
        .prepare(&format!(
            "INSERT INTO {s}.owners AS o (id, node, lease_until) OVERRIDING SYSTEM VALUE
             SELECT unnest($1::bigint[]), $2, now() + make_interval(secs => $3)
             ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until"
        ))
        .await
        .map_err(|source| Error::Query {
            what: "prepare lease renewal".into(),
            source,
        })?;
    Ok(KeeperConn {
        client,
        settle,
        renew,
    })
}

async fn flush(
    shared: &Shared,
    c: &KeeperConn,
    pending: &mut Vec<(u64, Settlement)>,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut by_owner: HashMap<i64, Batch> = HashMap::new();
    {
        let claims = lock(&shared.claims);
        for (id, s) in pending.iter() {
            let claim = (id / PER_CLAIM) as i64;
            let idx = (id % PER_CLAIM) as i32;
            let Some((owner, _)) = claims.get(&claim) else {
                tracing::error!(
                    claim,
                    "settlement for a claim this service does not hold; ignored"
                );
                continue;
            };
            let b = by_owner.entry(*owner).or_default();
            let entry = b.per_claim.entry(claim).or_default();
            entry.0 += 1;
            entry.1 |= 1i64 << idx;
            let back = match s {
                Settlement::Complete => None,
                Settlement::Retry { after, error } => Some((
                    "available",
                    after.as_millis().min(i64::MAX as u128) as i64,
                    Some(error.clone()),
                    true,
                )),
                Settlement::Fail { error } => Some(("failed", 0, Some(error.clone()), true)),
                Settlement::Cancel { reason } => Some(("canceled", 0, Some(reason.clone()), true)),
                Settlement::Release => Some(("available", 0, None, false)),
                // A settlement this build does not know: keep the job for a person to look at.
                _ => Some(("failed", 0, Some(format!("unknown settlement {s:?}")), true)),
            };
            if let Some((state, delay, error, counted)) = back {
                b.back_claims.push(claim);
                b.back_idx.push(idx);
                b.back_state.push(state);
                b.back_delay_ms.push(delay);
                b.back_error.push(error);
                b.back_counted.push(counted);
            }
        }
        // A claim whose every message handed out is settled now is deleted at once; others get
        // their bits (what a takeover after a crash must not run again).
        for b in by_owner.values_mut() {
            for (claim, (n, mask)) in &b.per_claim {
                let left = claims.get(claim).map_or(0, |c| c.1);
                if *n >= left {
                    b.complete.push(*claim);
                } else {
                    b.ids.push(*claim);
                    b.masks.push(*mask);
                }
            }
        }
    }
    for (owner, b) in &by_owner {
        bounded(
            "settle jobs",
            shared.config.statement_timeout,
            c.client.query_one(
                &c.settle,
                &[
                    owner,
                    &b.ids,
                    &b.masks,
                    &b.complete,
                    &b.back_claims,
                    &b.back_idx,
                    &b.back_state,
                    &b.back_delay_ms,
                    &b.back_error,
                    &b.back_counted,
                ],
            ),
        )
        .await?;
    }
    // Written: count them and forget the claims that are done.
    let counters = &shared.counters;
    for (_, s) in pending.drain(..) {
        let (counter, name) = match s {
            Settlement::Complete => (&counters.completed, "dispatcher_queue_completed_total"),
            Settlement::Retry { .. } => (&counters.retried, "dispatcher_queue_retries_total"),
            Settlement::Cancel { .. } => (&counters.canceled, "dispatcher_queue_canceled_total"),
            Settlement::Release => (&counters.released, "dispatcher_queue_released_total"),
            _ => (&counters.failed, "dispatcher_queue_failures_total"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(name).increment(1);
    }
    let mut claims = lock(&shared.claims);
    for b in by_owner.values() {
        for (claim, (n, _)) in &b.per_claim {
            if let Some(entry) = claims.get_mut(claim) {
                entry.1 = entry.1.saturating_sub(*n);
                if entry.1 == 0 {
                    claims.remove(claim);
                }
            }
        }
    }
    Ok(())
}

/// At close: owners with nothing held are removed, the others' leases end now, so that what they
/// still hold (handed out, never settled) runs elsewhere at once rather than after the lease.
async fn release_leases(shared: &Shared, c: &KeeperConn) -> Result<()> {
    let owners = std::mem::take(&mut *lock(&shared.owners));
    if owners.is_empty() {
        return Ok(());
    }
    let s = quote_ident(&shared.config.schema);
    bounded(
        "release leases",
        shared.config.statement_timeout,
        c.client.batch_execute(&format!(
            "DELETE FROM {s}.owners o WHERE o.id IN ({ids})
               AND NOT EXISTS (SELECT 1 FROM {s}.claims c WHERE c.owner = o.id);
             UPDATE {s}.owners SET lease_until = now() - interval '1 second'
              WHERE id IN ({ids});",
            ids = owners
                .iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    )
    .await
}

async fn renew_leases(shared: &Shared, c: &KeeperConn) -> Result<()> {
    let owners = lock(&shared.owners).clone();
    if owners.is_empty() {
        return Ok(());
    }
    bounded(
        "renew leases",
        shared.config.statement_timeout,
        c.client.execute(
            &c.renew,
            &[
                &owners,
                &shared.config.node,
                &shared.config.lease.as_secs_f64(),
            ],
        ),
    )
    .await?;
    Ok(())
}

/// Prunes kept jobs past the retention, owners long expired with nothing left, and job rows
/// whose every message is settled but whose delete was missed.
async fn maintenance(shared: &Shared, c: &KeeperConn) -> Result<()> {
    let config = &shared.config;
    let s = quote_ident(&config.schema);
    let timeout = config.statement_timeout;
    let pruned = tokio::time::timeout(
        timeout,
        super::ops::prune(&c.client, &config.schema, config.failed_retention),
    )
    .await
    .map_err(|_| Error::StatementTimeout {
        what: "prune kept jobs".into(),
        after: timeout,
    })??;
    let owners = bounded(
        "remove expired owners",
        timeout,
        c.client.execute(
            &format!(
                "DELETE FROM {s}.owners o WHERE o.lease_until < now() - interval '10 minutes'
                   AND NOT EXISTS (SELECT 1 FROM {s}.claims c WHERE c.owner = o.id)"
            ),
            &[],
        ),
    )
    .await?;
    let rows = bounded(
        "remove settled job rows",
        timeout,
        c.client.execute(
            &format!(
                "DELETE FROM {s}.jobs j WHERE j.state = 'running'
                   AND NOT EXISTS (SELECT 1 FROM {s}.claims c WHERE c.job_id = j.id)"
            ),
            &[],
        ),
    )
    .await?;
    if pruned + owners + rows > 0 {
        tracing::debug!(pruned, owners, rows, "durable queue maintenance");
    }
    Ok(())
}

async fn gauges(config: &PgQueueConfig, client: &Client) -> Result<()> {
    let stats = tokio::time::timeout(
        config.statement_timeout,
        super::ops::stats(client, &config.schema),
    )
    .await
    .map_err(|_| Error::StatementTimeout {
        what: "queue stats".into(),
        after: config.statement_timeout,
    })??;
    for q in &stats.queues {
        for (state, n) in [
            ("available", q.available),
            ("running", q.running),
            ("failed", q.failed),
            ("canceled", q.canceled),
        ] {
            metrics::gauge!("dispatcher_queue_jobs", "queue" => q.queue.clone(), "state" => state)
                .set(n as f64);
        }
        metrics::gauge!("dispatcher_queue_oldest_due_seconds", "queue" => q.queue.clone())
            .set(q.oldest_due_s);
    }
    metrics::gauge!("dispatcher_queue_expired_claims").set(stats.expired_claims as f64);
    Ok(())
}
