//! [`JobRunner`]: the task next to a node's service that claims jobs (on a wake-up and on a
//! sweep), runs each as a Call, renews the leases and records the outcomes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dispatcher::core::Subscription;
use dispatcher::{Broker, CallFilter, Outcome, ServiceHandle};
use futures_util::{FutureExt, StreamExt};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::super::{Error, Reconnecting, Result};
use super::{claim, extend_leases, record_outcome, state_for, WAKE_CHANNEL};

/// How a [`JobRunner`] works. [`JobRunnerConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct JobRunnerConfig {
    /// The database holding `dispatcher_jobs` (a URL or a `key=value` string; no TLS).
    pub database_url: String,
    /// This node's name, written to `claimed_by`. Must be unique in the cluster.
    pub node_id: String,
    /// How long a claim lasts without renewal. A dead node's jobs run elsewhere after this.
    /// Default 30 s.
    pub lease: Duration,
    /// How often to claim without a wake-up. Default 2 s.
    pub sweep_every: Duration,
    /// Most jobs this node runs at once (claims take no more). Default 16.
    pub max_in_flight: usize,
    /// How often running jobs' Calls are looked for in the service's history. Default 20 ms.
    pub poll_every: Duration,
}

impl JobRunnerConfig {
    /// The defaults for `node_id` on `database_url`.
    pub fn new(database_url: impl Into<String>, node_id: impl Into<String>) -> Self {
        JobRunnerConfig {
            database_url: database_url.into(),
            node_id: node_id.into(),
            lease: Duration::from_secs(30),
            sweep_every: Duration::from_secs(2),
            max_in_flight: 16,
            poll_every: Duration::from_millis(20),
        }
    }

    fn check(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Invalid(format!("JobRunnerConfig: {what}")));
        if self.node_id.is_empty() {
            return bad("node_id is empty");
        }
        if self.lease < Duration::from_millis(30) {
            return bad("lease must be at least 30 ms");
        }
        if self.sweep_every.is_zero() || self.poll_every.is_zero() {
            return bad("sweep_every and poll_every must be above zero");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight must be at least 1");
        }
        Ok(())
    }
}

/// Counters of a [`JobRunner`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobRunnerStats {
    /// Claims made (rows taken).
    pub claimed: u64,
    /// Jobs recorded `done`.
    pub done: u64,
    /// Jobs recorded `failed`.
    pub failed: u64,
    /// Jobs put back to `pending` (canceled Calls, a service that stopped).
    pub released: u64,
    /// Jobs whose claim this node had lost when it came to record them.
    pub lost: u64,
    /// Claim rounds run (wake-ups, sweeps, freed capacity).
    pub claim_rounds: u64,
    /// Notifications heard on [`WAKE_CHANNEL`].
    pub wakeups: u64,
}

#[derive(Debug, Default)]
struct Counters {
    claimed: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    released: AtomicU64,
    lost: AtomicU64,
    claim_rounds: AtomicU64,
    wakeups: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> JobRunnerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        JobRunnerStats {
            claimed: get(&self.claimed),
            done: get(&self.done),
            failed: get(&self.failed),
            released: get(&self.released),
            lost: get(&self.lost),
            claim_rounds: get(&self.claim_rounds),
            wakeups: get(&self.wakeups),
        }
    }
}

/// Runs jobs from `dispatcher_jobs` on one node's service; see the module docs.
///
/// ```no_run
/// # async fn demo(
/// #     broker: std::sync::Arc<dyn dispatcher::core::Broker>,
/// #     service: std::sync::Arc<dispatcher::runtime::ServiceHandle>,
/// # ) -> dispatcher_examples::cookbook::Result<()> {
/// use std::time::Duration;
/// use dispatcher_examples::cookbook::exactly_once::{JobRunner, JobRunnerConfig};
///
/// let config = JobRunnerConfig::new("postgres://postgres@127.0.0.1/postgres", "node-a");
/// let runner = JobRunner::start(config, Some(broker), service).await?;
/// // ... later
/// runner.shutdown(Duration::from_secs(10)).await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct JobRunner {
    stop: watch::Sender<Option<Duration>>,
    join: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

impl JobRunner {
    /// Connects, LISTENs on [`WAKE_CHANNEL`] through `broker` (without one, only the sweep
    /// claims), claims what is already waiting and keeps running jobs on `service` until
    /// [`JobRunner::shutdown`]. The tables must exist ([`crate::cookbook::setup`]).
    pub async fn start(
        config: JobRunnerConfig,
        broker: Option<Arc<dyn Broker>>,
        service: Arc<ServiceHandle>,
    ) -> Result<JobRunner> {
        config.check()?;
        let client = super::super::connect(&config.database_url).await?;
        // LISTEN before the first claim: a row committed after that claim's snapshot wakes us.
        let wakes: Subscription = match broker {
            Some(b) => b
                .subscribe(&[WAKE_CHANNEL.to_owned()])
                .await
                .map_err(dispatcher::core::Error::from)?,
            None => futures_util::stream::pending().boxed(),
        };
        let (stop, stop_rx) = watch::channel(None);
        let counters = Arc::new(Counters::default());
        let run = Run {
            db: Reconnecting::new(config.database_url.clone(), Some(client)),
            config,
            service,
            counters: counters.clone(),
            in_flight: BTreeMap::new(),
            seen_finished: None,
            service_stopped: false,
            record_retry_at: None,
        };
        let join = tokio::spawn(run.run(wakes, stop_rx));
        Ok(JobRunner {
            stop,
            join: Mutex::new(Some(join)),
            counters,
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> JobRunnerStats {
        self.counters.snapshot()
    }

    /// Stops claiming, waits up to `grace` for the running jobs to end and records them, then
    /// stops. Jobs still running after `grace` are not touched: their leases expire and any node
    /// takes them again.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.stop.send(Some(grace));
        let join = self.join.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(j) = join {
            let _ = j.await;
        }
    }

    /// Stops at once, as a crash would: nothing more is recorded or renewed, so this node's
    /// running jobs go to other nodes when their leases expire.
    pub fn abort(&self) {
        if let Some(j) = self.join.lock().unwrap_or_else(|p| p.into_inner()).take() {
            j.abort();
        }
    }
}

impl Drop for JobRunner {
    fn drop(&mut self) {
        self.abort();
    }
}

/// A claimed job on its way through the local service.
#[derive(Debug)]
struct InFlight {
    attempt: i32,
    uuid: String,
    /// How its Call ended, once it has; kept until recorded.
    end: Option<End>,
}

#[derive(Debug)]
struct End {
    outcome: Outcome,
    result: Option<Value>,
    error: Option<String>,
}

struct Run {
    config: JobRunnerConfig,
    db: Reconnecting,
    service: Arc<ServiceHandle>,
    counters: Arc<Counters>,
    in_flight: BTreeMap<i64, InFlight>,
    /// The service's finished-Call count at the last history look-up.
    seen_finished: Option<u64>,
    /// The service refused a submission: it has stopped.
    service_stopped: bool,
    /// After a failed write of outcomes, the next try waits until then.
    record_retry_at: Option<Instant>,
}

impl Run {
    async fn run(mut self, mut wakes: Subscription, mut stop: watch::Receiver<Option<Duration>>) {
        let node = self.config.node_id.clone();
        tracing::info!(node = %node, "job runner started");
        let mut sweep = tokio::time::interval(self.config.sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renew = tokio::time::interval(self.config.lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut poll = tokio::time::interval(self.config.poll_every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Rows may be waiting (inserted while no node listened): claim at once.
        let mut wanted = true;
        let mut deadline: Option<Instant> = None;
        loop {
            let room = self.in_flight.len() < self.config.max_in_flight;
            if wanted && room && deadline.is_none() && !self.service_stopped {
                match self.claim_round().await {
                    // A full round: more may be waiting; claim again when there is room.
                    Ok(full) => wanted = full,
                    Err(e) => {
                        // Retried at the next wake-up or sweep.
                        tracing::warn!(node = %node, error = %e, "claiming jobs failed");
                        wanted = false;
                    }
                }
                if self.service_stopped && deadline.is_none() {
                    // Record what the stopped service reports, then stop.
                    deadline = Some(Instant::now() + Duration::from_secs(1));
                }
            }
            if let Some(d) = deadline {
                if self.in_flight.is_empty() || Instant::now() >= d {
                    break;
                }
            }
            tokio::select! {
                changed = stop.changed(), if deadline.is_none() => {
                    let grace = match changed {
                        Ok(()) => stop.borrow().unwrap_or_default(),
                        Err(_) => Duration::ZERO,
                    };
                    deadline = Some(Instant::now() + grace);
                }
                wake = wakes.next() => match wake {
                    Some(_) => {
                        let mut n = 1;
                        // Fold the wake-ups already queued into this one claim round.
                        while let Some(Some(_)) = wakes.next().now_or_never() {
                            n += 1;
                        }
                        Counters::bump(&self.counters.wakeups, n);
                        wanted = true;
                    }
                    None => {
                        tracing::warn!(node = %node, "the wake-up subscription ended; only the sweep claims now");
                        wakes = futures_util::stream::pending().boxed();
                    }
                },
                _ = sweep.tick() => wanted = true,
                _ = renew.tick() => self.renew().await,
                // A full claim round leaves `wanted` set: the next round runs once this frees room.
                _ = poll.tick(), if !self.in_flight.is_empty() => {
                    self.collect_finished();
                    self.record_finished().await;
                }
            }
        }
        if !self.in_flight.is_empty() {
            let ids: Vec<i64> = self.in_flight.keys().copied().collect();
            tracing::warn!(node = %node, jobs = ?ids, "job runner stopped with jobs running; they go to another node when their leases expire");
        }
        tracing::info!(node = %node, "job runner stopped");
    }

    /// Claims as many jobs as there is room for and submits them; true when the claim was full.
    async fn claim_round(&mut self) -> Result<bool> {
        let room = self
            .config
            .max_in_flight
            .saturating_sub(self.in_flight.len());
        Counters::bump(&self.counters.claim_rounds, 1);
        let jobs = {
            let client = self.db.get().await?;
            claim(client, &self.config.node_id, room, self.config.lease).await?
        };
        let full = jobs.len() == room;
        if !jobs.is_empty() {
            let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
            tracing::info!(node = %self.config.node_id, jobs = ?ids, "claimed jobs");
        }
        Counters::bump(&self.counters.claimed, jobs.len() as u64);
        for job in jobs {
            let uuid = job.call_uuid();
            let end = match job.message() {
                Ok(message) => match self.service.submit_message(message).await {
                    Ok(_) => None,
                    Err(e) => {
                        tracing::error!(node = %self.config.node_id, job = job.id, error = %e, "the service refused the job; releasing it");
                        self.service_stopped = true;
                        Some(End {
                            outcome: Outcome::Canceled,
                            result: None,
                            error: Some(e.to_string()),
                        })
                    }
                },
                Err(reason) => Some(End {
                    outcome: Outcome::Rejected,
                    result: None,
                    error: Some(format!("job {}: {reason}", job.id)),
                }),
            };
            self.in_flight.insert(
                job.id,
                InFlight {
                    attempt: job.attempt,
                    uuid,
                    end,
                },
            );
        }
        if self.in_flight.values().any(|j| j.end.is_some()) {
            self.record_finished().await;
        }
        Ok(full)
    }

    /// Looks up the Calls of running jobs in the service's history (only when more Calls have
    /// finished since the last look).
    fn collect_finished(&mut self) {
        let count = self.service.finished_count();
        if self.seen_finished == Some(count) {
            return;
        }
        self.seen_finished = Some(count);
        for job in self.in_flight.values_mut().filter(|j| j.end.is_none()) {
            let filter = CallFilter {
                uuid: Some(job.uuid.clone()),
                limit: Some(1),
                ..CallFilter::default()
            };
            if let Some(call) = self.service.history(&filter).pop() {
                if let Some(outcome) = call.outcome {
                    job.end = Some(End {
                        outcome,
                        result: call.result,
                        error: call.error,
                    });
                }
            }
        }
    }

    /// Writes the outcomes of ended jobs; a failed write is tried again half a second later
    /// (the lease is renewed meanwhile).
    async fn record_finished(&mut self) {
        if self.record_retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.record_retry_at = None;
        let ended: Vec<i64> = self
            .in_flight
            .iter()
            .filter(|(_, j)| j.end.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            let Some(job) = self.in_flight.get(&id) else {
                continue;
            };
            let Some(end) = &job.end else { continue };
            let node = &self.config.node_id;
            let written = match self.db.get().await {
                Ok(client) => {
                    record_outcome(
                        client,
                        node,
                        (id, job.attempt),
                        end.outcome,
                        end.result.as_ref(),
                        end.error.as_deref(),
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            match written {
                Ok(true) => {
                    let counter = match state_for(end.outcome) {
                        Some("done") => &self.counters.done,
                        Some(_) => &self.counters.failed,
                        None => &self.counters.released,
                    };
                    Counters::bump(counter, 1);
                    tracing::info!(node = %node, job = id, outcome = %end.outcome, "job finished");
                    self.in_flight.remove(&id);
                }
                Ok(false) => {
                    Counters::bump(&self.counters.lost, 1);
                    tracing::warn!(node = %node, job = id, outcome = %end.outcome, "job ended here after this node lost its claim (lease expired); the outcome is not recorded");
                    self.in_flight.remove(&id);
                }
                Err(e) => {
                    tracing::warn!(node = %node, job = id, error = %e, "recording the job's outcome failed; retrying");
                    self.record_retry_at = Some(Instant::now() + Duration::from_millis(500));
                    return;
                }
            }
        }
    }

    /// Renews the leases of every job this node holds.
    async fn renew(&mut self) {
        if self.in_flight.is_empty() {
            return;
        }
        let ids: Vec<i64> = self.in_flight.keys().copied().collect();
        let node = &self.config.node_id;
        let renewed = match self.db.get().await {
            Ok(client) => extend_leases(client, node, &ids, self.config.lease).await,
            Err(e) => Err(e),
        };
        match renewed {
            Ok(n) if n as usize == ids.len() => {}
            Ok(n) => {
                tracing::warn!(node = %node, held = n, running = ids.len(), "some running jobs were no longer held by this node")
            }
            Err(e) => tracing::warn!(node = %node, error = %e, "renewing leases failed"),
        }
    }
}
