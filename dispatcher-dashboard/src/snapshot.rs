//! What the pages read: the cluster at one moment, as the last round of the collector saw it.

use std::collections::BTreeMap;
use std::sync::Arc;

use dispatcher_broker_pg::queue::{FailedJob, QueueStats, ScheduledJob};
use dispatcher_core::control::{MainReply, MetricsReply, TaskPolicy, WorkersReply};
use dispatcher_core::Call;

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

#[cfg(test)]
mod tests {
    use super::*;

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
