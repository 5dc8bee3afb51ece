//! Gathering the cluster: one round of control commands per tick on every configured channel
//! (and the queue's tables when configured), merged into an immutable [`Snapshot`] that every
//! page and live stream reads. However many browsers are open, the services see one round per
//! tick; with nobody looking, the ticks slow down.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dispatcher_broker_pg::queue::{self, FailedJob, QueueStats, ScheduledJob};
use dispatcher_core::control::{
    request_with, MainReply, MetricsReply, Reply, RequestOptions, TaskPolicy, WorkersReply,
};
use dispatcher_core::{Broker, Call, Outcome};
use serde_json::{json, Map, Value};
use tokio::sync::{watch, Notify};

use crate::DashboardConfig;

/// Seconds of throughput and latency kept for the charts.
pub(crate) const WINDOW_S: f64 = 900.0;
/// Calls kept across nodes, newest first.
pub(crate) const CALLS_KEPT: usize = 5_000;
/// Calls asked of each service per tick (the newest).
const HISTORY_PER_TICK: usize = 200;
/// Events kept.
const EVENTS_KEPT: usize = 200;
/// A node that stopped answering is shown (as not answering) this long.
const NODE_GONE_AFTER_S: f64 = 60.0;
/// Failed and scheduled jobs listed.
const JOBS_LISTED: i64 = 50;

/// Seconds since the Unix epoch.
pub(crate) fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One service as last seen.
#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    pub id: String,
    pub channel: String,
    /// When it last answered (epoch s).
    pub seen_at: f64,
    /// It answered in the latest round.
    pub answering: bool,
    pub main: MainReply,
    pub workers: WorkersReply,
    pub metrics: MetricsReply,
}

impl Node {
    /// Calls that ended badly (error, panic, timeout, worker lost).
    pub fn failed_total(&self) -> u64 {
        failed_of(&self.metrics.finished)
    }

    /// Every finished Call.
    pub fn finished_total(&self) -> u64 {
        self.metrics.finished.values().sum()
    }
}

fn failed_of(finished: &BTreeMap<String, u64>) -> u64 {
    ["error", "panic", "timeout", "worker_lost"]
        .iter()
        .filter_map(|k| finished.get(*k))
        .sum()
}

/// One point of the charts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sample {
    /// Epoch seconds.
    pub t: f64,
    pub received_ps: f64,
    pub finished_ps: f64,
    pub failed_ps: f64,
    /// Publish → start of the Calls first seen in this round.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Something that happened to the cluster.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub at: f64,
    pub node: String,
    pub kind: &'static str,
    pub text: String,
}

/// The durable queue's tables.
#[derive(Debug, Clone, Default)]
pub(crate) struct Jobs {
    pub stats: Option<QueueStats>,
    pub failed: Vec<FailedJob>,
    pub scheduled: Vec<ScheduledJob>,
    /// Why the last read failed.
    pub error: Option<String>,
}

/// The cluster at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// Epoch seconds; 0 before the first round.
    pub at: f64,
    /// Rounds so far.
    pub round: u64,
    pub nodes: Vec<Node>,
    /// Finished Calls across nodes, newest first.
    pub calls: Vec<Arc<Call>>,
    /// Oldest first.
    pub series: Vec<Sample>,
    /// Newest first.
    pub events: Vec<Event>,
    pub tasks: BTreeMap<String, TaskPolicy>,
    /// `None` when the dashboard has no queue configured.
    pub jobs: Option<Jobs>,
    /// What went wrong in the last round.
    pub problems: Vec<String>,
}

impl Snapshot {
    /// The Call with this uuid, if kept.
    pub fn call(&self, uuid: &str) -> Option<&Arc<Call>> {
        self.calls.iter().find(|c| c.uuid == uuid)
    }

    /// Totals across answering nodes: received, finished, failed.
    pub fn totals(&self) -> (u64, u64, u64) {
        self.nodes.iter().fold((0, 0, 0), |(r, f, x), n| {
            (
                r + n.metrics.received,
                f + n.finished_total(),
                x + n.failed_total(),
            )
        })
    }

    /// The running Call with this uuid: its node and worker.
    pub fn running(&self, uuid: &str) -> Option<(&Node, &dispatcher_core::WorkerStatus)> {
        self.nodes.iter().find_map(|n| {
            n.workers
                .values()
                .find(|w| w.current_task_uuid.as_deref() == Some(uuid))
                .map(|w| (n, w))
        })
    }
}

/// State shared by the collector, the web handlers and the actions.
pub(crate) struct Shared {
    pub config: DashboardConfig,
    pub auth: crate::auth::Auth,
    pub broker: Arc<dyn Broker>,
    pub snapshot: watch::Sender<Arc<Snapshot>>,
    /// When a page or a live stream last asked.
    pub last_view: Mutex<Instant>,
    /// Wakes the collector for a round now (after an action).
    pub poke: Notify,
    /// True once the dashboard is dropped.
    pub stop: watch::Receiver<bool>,
    /// The connection for the queue's tables.
    pub jobs_client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

impl Shared {
    /// Someone is looking: rounds run at the full rate.
    pub fn viewed(&self) {
        *self.last_view.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn is_viewed(&self) -> bool {
        self.last_view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
            < self.config.viewer_timeout
    }

    /// Sends a control command on every channel and returns the replies (one per service and
    /// channel).
    pub async fn ask(
        &self,
        command: &str,
        data: Map<String, Value>,
    ) -> (Vec<(String, Reply)>, Vec<String>) {
        let options = RequestOptions::new(self.config.control_timeout)
            .quiet(Some(self.config.quiet_window))
            .signing(self.config.signing.clone());
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for channel in &self.config.channels {
            match request_with(&*self.broker, channel, command, data.clone(), &options).await {
                Ok(replies) => out.extend(
                    replies
                        .into_iter()
                        .map(|v| (channel.clone(), Reply::from_value(v))),
                ),
                Err(e) => problems.push(format!("`{command}` on {channel}: {e}")),
            }
        }
        (out, problems)
    }

    /// The queue's connection, opened when missing.
    async fn jobs_client(
        &self,
        slot: &mut Option<tokio_postgres::Client>,
    ) -> Result<(), dispatcher_broker_pg::Error> {
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            *slot = Some(queue::open_client(&self.config.pg).await?);
        }
        Ok(())
    }

    /// Makes failed jobs available again; returns their ids.
    pub async fn retry_job(&self, id: i64) -> Result<Vec<i64>, String> {
        let schema = self.config.queue_schema.as_deref().ok_or("no queue")?;
        let mut slot = self.jobs_client.lock().await;
        self.jobs_client(&mut slot)
            .await
            .map_err(|e| e.to_string())?;
        let client = slot.as_ref().ok_or("no connection")?;
        queue::retry_jobs(client, schema, queue::KeptJobs::Ids(&[id]))
            .await
            .map_err(|e| e.to_string())
    }

    /// Deletes failed jobs; returns their ids.
    pub async fn discard_job(&self, id: i64) -> Result<Vec<i64>, String> {
        let schema = self.config.queue_schema.as_deref().ok_or("no queue")?;
        let mut slot = self.jobs_client.lock().await;
        self.jobs_client(&mut slot)
            .await
            .map_err(|e| e.to_string())?;
        let client = slot.as_ref().ok_or("no connection")?;
        queue::discard_jobs(client, schema, queue::KeptJobs::Ids(&[id]))
            .await
            .map_err(|e| e.to_string())
    }

    async fn read_jobs(&self, schema: &str) -> Jobs {
        let mut slot = self.jobs_client.lock().await;
        let read = async {
            self.jobs_client(&mut slot).await?;
            let Some(client) = slot.as_ref() else {
                return Err(dispatcher_broker_pg::Error::Closed);
            };
            let stats = queue::stats(client, schema).await?;
            let failed = queue::failed(client, schema, None, JOBS_LISTED).await?;
            let scheduled = queue::scheduled(client, schema, None, JOBS_LISTED).await?;
            Ok::<_, dispatcher_broker_pg::Error>(Jobs {
                stats: Some(stats),
                failed,
                scheduled,
                error: None,
            })
        };
        match tokio::time::timeout(self.config.control_timeout, read).await {
            Ok(Ok(j)) => j,
            Ok(Err(e)) => {
                *slot = None;
                Jobs {
                    error: Some(e.to_string()),
                    ..Jobs::default()
                }
            }
            Err(_) => {
                *slot = None;
                Jobs {
                    error: Some(format!(
                        "the queue's tables did not answer within {:?}",
                        self.config.control_timeout
                    )),
                    ..Jobs::default()
                }
            }
        }
    }
}

/// What the collector remembers between rounds.
#[derive(Default)]
struct Memory {
    nodes: BTreeMap<String, Node>,
    calls: VecDeque<Arc<Call>>,
    seen: HashSet<String>,
    series: VecDeque<Sample>,
    events: VecDeque<Event>,
    tasks: BTreeMap<String, TaskPolicy>,
    tasks_at: Option<Instant>,
    /// Per node: (epoch s, received, finished, failed) of the previous round.
    counters: HashMap<String, (f64, u64, u64, u64)>,
    round: u64,
}

impl Memory {
    fn event(&mut self, at: f64, node: &str, kind: &'static str, text: String) {
        tracing::debug!(node, kind, %text, "cluster event");
        self.events.push_front(Event {
            at,
            node: node.to_owned(),
            kind,
            text,
        });
        self.events.truncate(EVENTS_KEPT);
    }
}

/// Runs rounds until the dashboard is dropped.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut memory = Memory::default();
    loop {
        round(&shared, &mut memory).await;
        let wait = if shared.is_viewed() {
            shared.config.refresh
        } else {
            shared.config.idle_refresh
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.poke.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

async fn round(shared: &Shared, memory: &mut Memory) {
    let started = Instant::now();
    let history = json!({ "limit": HISTORY_PER_TICK });
    let history = history.as_object().cloned().unwrap_or_default();
    let ((mains, p1), (workers, p2), (metrics, p3), (histories, p4)) = tokio::join!(
        shared.ask("main", Map::new()),
        shared.ask("workers", Map::new()),
        shared.ask("metrics", Map::new()),
        shared.ask("history", history),
    );
    let mut problems: Vec<String> = [p1, p2, p3, p4].into_iter().flatten().collect();
    let at = now_epoch();
    memory.round += 1;

    let mut answered: HashSet<String> = HashSet::new();
    let mut channels: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (channel, r) in &mains {
        channels
            .entry(r.node_id.clone())
            .or_default()
            .push(channel.clone());
        if let Some(e) = r.error() {
            problems.push(format!("{}: `main`: {e}", r.node_id));
            continue;
        }
        match r.parse::<MainReply>() {
            Ok(main) => {
                let is_new = !memory.nodes.contains_key(&r.node_id);
                let node = memory.nodes.entry(r.node_id.clone()).or_default();
                node.id = r.node_id.clone();
                node.main = main;
                node.seen_at = at;
                if is_new {
                    let text = format!("answering (pid {})", node.main.pid);
                    memory.event(at, &r.node_id, "node", text);
                }
                answered.insert(r.node_id.clone());
            }
            Err(e) => problems.push(format!("{}: `main` reply unreadable: {e}", r.node_id)),
        }
    }
    for (_, r) in &workers {
        let Ok(w) = r.parse::<WorkersReply>() else {
            continue;
        };
        let Some(node) = memory.nodes.get(&r.node_id) else {
            continue;
        };
        let before: BTreeMap<u32, Option<u32>> = node
            .workers
            .values()
            .map(|w| (w.worker_id, w.pid))
            .collect();
        let after: BTreeMap<u32, Option<u32>> = w.values().map(|w| (w.worker_id, w.pid)).collect();
        let first = node.workers.is_empty() && node.metrics == MetricsReply::default();
        if !first {
            let id = r.node_id.clone();
            for (wid, pid) in &after {
                if !before.contains_key(wid) {
                    let pid = pid.map(|p| p.to_string()).unwrap_or("-".into());
                    memory.event(
                        at,
                        &id,
                        "worker",
                        format!("worker {wid} started (pid {pid})"),
                    );
                }
            }
            for (wid, pid) in &before {
                if !after.contains_key(wid) {
                    let pid = pid.map(|p| p.to_string()).unwrap_or("-".into());
                    memory.event(
                        at,
                        &id,
                        "worker",
                        format!("worker {wid} (pid {pid}) retired"),
                    );
                }
            }
        }
        if let Some(node) = memory.nodes.get_mut(&r.node_id) {
            node.workers = w;
        }
    }
    for (_, r) in &metrics {
        if let (Ok(m), Some(node)) = (r.parse::<MetricsReply>(), memory.nodes.get_mut(&r.node_id)) {
            node.metrics = m;
        }
    }
    for (id, list) in channels {
        if let Some(node) = memory.nodes.get_mut(&id) {
            node.channel = list.join(", ");
        }
    }

    // Calls first seen in this round: kept, and their latency sampled.
    let mut latencies = Vec::new();
    let mut fresh = Vec::new();
    for (_, r) in &histories {
        let Ok(h) = r.parse::<dispatcher_core::control::HistoryReply>() else {
            continue;
        };
        for call in h.calls {
            if memory.seen.contains(&seen_key(&call)) {
                continue;
            }
            if let (Some(start), Some(sent)) = (call.started_at, call.time_pub.or(call.received_at))
            {
                latencies.push(((start - sent) * 1000.0).max(0.0));
            }
            fresh.push(call);
        }
    }
    fresh.sort_by(|a, b| {
        a.finished_at
            .unwrap_or(0.0)
            .total_cmp(&b.finished_at.unwrap_or(0.0))
    });
    for call in fresh {
        if call.outcome == Some(Outcome::WorkerLost) {
            let text = format!("worker lost running {} ({})", call.task, call.uuid);
            memory.event(at, call.node_id.as_str(), "lost", text);
        }
        memory.seen.insert(seen_key(&call));
        memory.calls.push_front(Arc::new(call));
    }
    while memory.calls.len() > CALLS_KEPT {
        if let Some(old) = memory.calls.pop_back() {
            memory.seen.remove(&seen_key(&old));
        }
    }

    // Nodes that did not answer.
    let mut gone = Vec::new();
    for (id, node) in memory.nodes.iter_mut() {
        let was = node.answering;
        node.answering = answered.contains(id);
        if was && !node.answering {
            gone.push((id.clone(), "node", "stopped answering".to_string()));
        }
    }
    for (id, kind, text) in gone {
        memory.event(at, &id, kind, text);
    }
    memory
        .nodes
        .retain(|_, n| n.answering || at - n.seen_at < NODE_GONE_AFTER_S);

    // Rates from counter deltas (a counter that went down is a restarted service).
    let mut sample = Sample {
        t: at,
        ..Sample::default()
    };
    let mut have_rate = false;
    for (id, node) in &memory.nodes {
        if !node.answering {
            continue;
        }
        let now = (
            at,
            node.metrics.received,
            node.finished_total(),
            node.failed_total(),
        );
        if let Some(prev) = memory.counters.get(id) {
            let dt = (now.0 - prev.0).max(1e-3);
            let d = |new: u64, old: u64| if new >= old { new - old } else { new } as f64;
            sample.received_ps += d(now.1, prev.1) / dt;
            sample.finished_ps += d(now.2, prev.2) / dt;
            sample.failed_ps += d(now.3, prev.3) / dt;
            have_rate = true;
        }
        memory.counters.insert(id.clone(), now);
    }
    memory
        .counters
        .retain(|id, _| memory.nodes.contains_key(id));
    if !latencies.is_empty() {
        latencies.sort_by(f64::total_cmp);
        sample.p50_ms = Some(percentile(&latencies, 0.50));
        sample.p99_ms = Some(percentile(&latencies, 0.99));
    }
    if have_rate || sample.p50_ms.is_some() {
        memory.series.push_back(sample);
    }
    while memory.series.front().is_some_and(|s| at - s.t > WINDOW_S) {
        memory.series.pop_front();
    }

    // The registry: at start, when a node appears, and every 30 s.
    let new_node = answered.iter().any(|id| {
        memory.nodes.get(id).is_some_and(|n| {
            n.main
                .registered_tasks
                .iter()
                .any(|t| !memory.tasks.contains_key(t))
        })
    });
    if memory
        .tasks_at
        .is_none_or(|t| t.elapsed() > Duration::from_secs(30))
        || new_node
    {
        let (replies, p) = shared.ask("tasks", Map::new()).await;
        problems.extend(p);
        for (_, r) in replies {
            if r.error().is_some() {
                continue; // a service without the command (dispatcherd)
            }
            if let Ok(t) = r.parse::<BTreeMap<String, TaskPolicy>>() {
                memory.tasks.extend(t);
            }
        }
        memory.tasks_at = Some(Instant::now());
    }

    let jobs = match &shared.config.queue_schema {
        Some(schema) => Some(shared.read_jobs(schema).await),
        None => None,
    };
    if answered.is_empty() {
        problems.push(format!(
            "no service answered on {}",
            shared.config.channels.join(", ")
        ));
    }
    let snapshot = Snapshot {
        at,
        round: memory.round,
        nodes: memory.nodes.values().cloned().collect(),
        calls: memory.calls.iter().cloned().collect(),
        series: memory.series.iter().copied().collect(),
        events: memory.events.iter().cloned().collect(),
        tasks: memory.tasks.clone(),
        jobs,
        problems,
    };
    tracing::trace!(took = ?started.elapsed(), nodes = snapshot.nodes.len(), "dashboard round");
    shared.snapshot.send_replace(Arc::new(snapshot));
}

/// A Call's identity in the store: a durable job runs under one uuid once per attempt (and again
/// when retried), so its uuid alone is not enough.
fn seen_key(c: &Call) -> String {
    format!(
        "{}|{}|{}",
        c.uuid,
        c.attempt.unwrap_or(0),
        c.finished_at.unwrap_or(0.0).to_bits()
    )
}

/// The `q` quantile of sorted values (nearest rank).
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn failed_counts_only_bad_outcomes() {
        let mut f = BTreeMap::new();
        f.insert("ok".to_string(), 10);
        f.insert("error".to_string(), 2);
        f.insert("timeout".to_string(), 1);
        f.insert("canceled".to_string(), 5);
        assert_eq!(failed_of(&f), 3);
    }
}
