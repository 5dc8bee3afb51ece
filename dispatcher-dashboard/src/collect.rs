//! Gathering the cluster: one round of control commands per tick on every configured channel
//! (and the queue's tables when configured), merged into an immutable [`Snapshot`] that every
//! page and live stream reads. However many browsers are open, the services see one round per
//! tick; with nobody looking, the ticks slow down.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dispatcher_core::control::{MainReply, MetricsReply, TaskPolicy, WorkersReply};
use dispatcher_core::{Call, Outcome};
use serde_json::{json, Map};
use tokio::sync::watch;

use crate::shared::Shared;
use crate::snapshot::{Event, Node, Sample, Snapshot};

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

/// Seconds since the Unix epoch.
pub(crate) fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
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
            // A retried job's later attempts wait for their backoff by design: not latency.
            let first = call.attempt.unwrap_or(1) <= 1;
            if let (true, Some(start), Some(sent)) =
                (first, call.started_at, call.time_pub.or(call.received_at))
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
}
