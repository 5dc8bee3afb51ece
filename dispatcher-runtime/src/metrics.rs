//! Metrics through the `metrics` facade: the service records, the application chooses the
//! exporter (e.g. `dispatcher-server`'s Prometheus endpoint). Without an exporter installed the
//! calls do nothing. Every metric is described ([`describe`], the `# HELP` line) and registered
//! when a service starts, so each appears from the first scrape (counters at 0).
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `dispatcher_received_total` | counter | | messages taken in (tasks, control, rejected payloads) |
//! | `dispatcher_control_total` | counter | | control commands answered |
//! | `dispatcher_dispatched_total` | counter | | Calls handed to a worker |
//! | `dispatcher_finished_total` | counter | `outcome`, `task` | Calls finished, by outcome (`discarded` and `rejected` included) and task |
//! | `dispatcher_rejected_total` | counter | `reason` | messages rejected, by [`RejectReason`] (`unknown_task`, `bad_arguments`, `malformed`, ...) |
//! | `dispatcher_call_run_seconds` | histogram | `task` | start to end of Calls that ran |
//! | `dispatcher_call_wait_seconds` | histogram | | receipt to start |
//! | `dispatcher_waiting` | gauge | | Calls delayed, blocked or queued |
//! | `dispatcher_queue_depth` | gauge | | Calls queued for a worker |
//! | `dispatcher_running` | gauge | | Calls running |
//! | `dispatcher_workers` | gauge | `status` | workers by status: `starting`, `idle`, `busy`, `stopping` |
//! | `dispatcher_partial_chunked_messages` | gauge | | chunked payloads being assembled |
//!
//! The `task` label is bounded: its values are the names the service's registry had when it
//! started, and [`OTHER_TASK`] for everything else (an unknown task name, a payload that could not
//! be read as far as a task name).

use std::collections::HashMap;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};

use dispatcher_core::{Call, Outcome, Registry, RejectReason, WorkerStatus};

/// The `task` label of a Call whose task name is not registered (an unknown task, a payload that
/// could not be read as far as a task name).
pub const OTHER_TASK: &str = "_other";

/// Every metric this crate records: name and `# HELP` text.
pub const DESCRIPTIONS: [(&str, &str); 12] = [
    (
        "dispatcher_received_total",
        "Messages taken in: tasks, control commands, rejected payloads.",
    ),
    ("dispatcher_control_total", "Control commands answered."),
    ("dispatcher_dispatched_total", "Calls handed to a worker."),
    (
        "dispatcher_finished_total",
        "Calls finished, by outcome and task (task _other: not a registered task name).",
    ),
    ("dispatcher_rejected_total", "Messages rejected, by reason."),
    (
        "dispatcher_call_run_seconds",
        "Seconds from start to end of Calls that ran, by task.",
    ),
    (
        "dispatcher_call_wait_seconds",
        "Seconds from receipt to start of Calls that ran.",
    ),
    (
        "dispatcher_waiting",
        "Calls delayed, blocked by a duplicate or queued for a worker.",
    ),
    ("dispatcher_queue_depth", "Calls queued for a worker."),
    ("dispatcher_running", "Calls running."),
    (
        "dispatcher_workers",
        "Workers by status (starting, idle, busy, stopping).",
    ),
    (
        "dispatcher_partial_chunked_messages",
        "Chunked payloads being assembled.",
    ),
];

/// Describes every metric of [`DESCRIPTIONS`] to the installed recorder (the `# HELP` lines).
/// A service does it when it starts; call it again after installing a recorder later.
pub fn describe() {
    for (name, help) in DESCRIPTIONS {
        if name.ends_with("_seconds") {
            describe_histogram!(name, Unit::Seconds, help);
        } else if name.ends_with("_total") {
            describe_counter!(name, Unit::Count, help);
        } else {
            describe_gauge!(name, help);
        }
    }
}

/// The `status` label values of `dispatcher_workers`.
const WORKER_LABELS: [&str; 4] = ["starting", "idle", "busy", "stopping"];

/// A worker's `status` label: `busy` while it runs a Call, `idle` when ready without one.
fn worker_label(w: &WorkerStatus) -> &'static str {
    use dispatcher_core::WorkerState as S;
    match w.status {
        S::Initialized | S::Spawned | S::Starting => "starting",
        S::Ready if w.is_busy() => "busy",
        S::Ready => "idle",
        _ => "stopping",
    }
}

/// One task's handles: a counter per outcome (in the order of `Outcome::ALL`) and the run-time
/// histogram.
struct TaskMetrics {
    finished: Vec<Counter>,
    run: Histogram,
}

impl TaskMetrics {
    fn new(task: &str) -> Self {
        let task = task.to_owned();
        TaskMetrics {
            finished: Outcome::ALL
                .iter()
                .map(|o| {
                    counter!("dispatcher_finished_total", "outcome" => o.as_str(), "task" => task.clone())
                })
                .collect(),
            run: histogram!("dispatcher_call_run_seconds", "task" => task),
        }
    }
}

/// Handles registered once per service.
pub(crate) struct ServiceMetrics {
    received: Counter,
    control: Counter,
    dispatched: Counter,
    rejected: Vec<Counter>,
    /// One entry per registered task, then one for [`OTHER_TASK`].
    tasks: Vec<TaskMetrics>,
    task_index: HashMap<&'static str, usize>,
    wait: Histogram,
    waiting: Gauge,
    queue_depth: Gauge,
    running: Gauge,
    partial: Gauge,
    /// One gauge per [`WORKER_LABELS`] entry.
    workers: Vec<Gauge>,
    exported: Exported,
}

#[derive(Default)]
struct Exported {
    received: u64,
    control: u64,
    dispatched: u64,
    rejected: [u64; RejectReason::ALL.len()],
}

/// Counter values to export (the service's own counts).
pub(crate) struct Counts<'a> {
    pub received: u64,
    pub control: u64,
    pub dispatched: u64,
    pub rejected: &'a [u64; RejectReason::ALL.len()],
}

impl ServiceMetrics {
    /// Describes and registers every metric; the `task` label takes the names `registry` has.
    pub(crate) fn new(registry: &dyn Registry) -> Self {
        describe();
        let mut names = registry.names();
        names.sort_unstable();
        names.dedup();
        let mut tasks: Vec<TaskMetrics> = names.iter().map(|n| TaskMetrics::new(n)).collect();
        tasks.push(TaskMetrics::new(OTHER_TASK));
        ServiceMetrics {
            received: counter!("dispatcher_received_total"),
            control: counter!("dispatcher_control_total"),
            dispatched: counter!("dispatcher_dispatched_total"),
            rejected: RejectReason::ALL
                .iter()
                .map(|r| counter!("dispatcher_rejected_total", "reason" => r.as_str()))
                .collect(),
            task_index: names.into_iter().enumerate().map(|(i, n)| (n, i)).collect(),
            tasks,
            wait: histogram!("dispatcher_call_wait_seconds"),
            waiting: gauge!("dispatcher_waiting"),
            queue_depth: gauge!("dispatcher_queue_depth"),
            running: gauge!("dispatcher_running"),
            partial: gauge!("dispatcher_partial_chunked_messages"),
            workers: WORKER_LABELS
                .iter()
                .map(|name| gauge!("dispatcher_workers", "status" => *name))
                .collect(),
            exported: Exported::default(),
        }
    }

    /// Counts a finished Call by outcome and task, and records its durations.
    pub(crate) fn call_finished(&self, call: &Call) {
        let i = self
            .task_index
            .get(call.task.as_str())
            .copied()
            .unwrap_or(self.tasks.len() - 1);
        let Some(task) = self.tasks.get(i) else {
            return;
        };
        if let Some(counter) = call.outcome.and_then(|o| task.finished.get(o as usize)) {
            counter.increment(1);
        }
        if let Some(ms) = call.run_ms {
            task.run.record(ms / 1000.0);
        }
        if let Some(ms) = call.wait_ms {
            self.wait.record(ms / 1000.0);
        }
    }

    /// Adds what the counts grew by since the last call.
    pub(crate) fn sync(&mut self, c: Counts<'_>) {
        let e = &mut self.exported;
        self.received.increment(c.received - e.received);
        self.control.increment(c.control - e.control);
        self.dispatched.increment(c.dispatched - e.dispatched);
        for (i, n) in c.rejected.iter().enumerate() {
            if let Some(counter) = self.rejected.get(i) {
                counter.increment(n - e.rejected[i]);
            }
        }
        e.rejected = *c.rejected;
        e.received = c.received;
        e.control = c.control;
        e.dispatched = c.dispatched;
    }

    /// Sets the gauges.
    pub(crate) fn gauges(
        &self,
        waiting: usize,
        queue_depth: usize,
        running: usize,
        partial: usize,
        workers: &[WorkerStatus],
    ) {
        self.waiting.set(waiting as f64);
        self.queue_depth.set(queue_depth as f64);
        self.running.set(running as f64);
        self.partial.set(partial as f64);
        for (label, g) in WORKER_LABELS.iter().zip(&self.workers) {
            g.set(workers.iter().filter(|w| worker_label(w) == *label).count() as f64);
        }
    }
}
