//! The claim loop: claims sized by credit, rescues, the sweep of lost claims.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher_core::broker::{Incoming, Subscription};
use dispatcher_core::delivery::{Delivery, Settle, Settlement};
use dispatcher_core::time::sleep_until;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{Client, Statement};

use super::super::{bounded, connect};
use super::{lock, Shared, PER_CLAIM};
use crate::error::{Error, Result};
use crate::quote_ident;

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

pub(super) struct Claimer {
    shared: Arc<Shared>,
    queues: Vec<String>,
    conn: Option<ClaimConn>,
    owner: i64,
    rate: f64,
    sampled: (Instant, u64),
}

impl Claimer {
    pub(super) async fn new(shared: Arc<Shared>, queues: Vec<String>) -> Result<Self> {
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

    pub(super) async fn run(&mut self, mut wake: Subscription, tx: mpsc::Sender<Incoming>) {
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
