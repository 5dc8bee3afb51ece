//! Metrics through the `metrics` facade: the service records, the application chooses the
//! exporter (e.g. `dispatcher-server`'s Prometheus endpoint). Without an exporter installed the
//! calls do nothing.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `dispatcher_received_total` | counter | | messages taken in (tasks, control, rejected payloads) |
//! | `dispatcher_control_total` | counter | | control commands answered |
//! | `dispatcher_dispatched_total` | counter | | Calls handed to a worker |
//! | `dispatcher_finished_total` | counter | `outcome` | Calls finished, by outcome (`discarded` and `rejected` included) |
//! | `dispatcher_rejected_total` | counter | `reason` | messages rejected, by [`RejectReason`] (`unknown_task`, `bad_arguments`, `malformed`, ...) |
//! | `dispatcher_call_run_seconds` | histogram | | start to end of Calls that ran |
//! | `dispatcher_call_wait_seconds` | histogram | | receipt to start |
//! | `dispatcher_waiting` | gauge | | Calls delayed, blocked or queued |
//! | `dispatcher_queue_depth` | gauge | | Calls queued for a worker |
//! | `dispatcher_running` | gauge | | Calls running |
//! | `dispatcher_workers` | gauge | `status` | workers by status: `starting`, `idle`, `busy`, `stopping` |
//! | `dispatcher_partial_chunked_messages` | gauge | | chunked payloads being assembled |

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use dispatcher_core::{Call, Outcome, RejectReason, WorkerStatus};

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

/// Handles registered once per service.
pub(crate) struct ServiceMetrics {
    received: Counter,
    control: Counter,
    dispatched: Counter,
    finished: Vec<Counter>,
    rejected: Vec<Counter>,
    run: Histogram,
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
    finished: [u64; 8],
    rejected: [u64; RejectReason::ALL.len()],
}

/// Counter values to export (the service's own counts).
pub(crate) struct Counts<'a> {
    pub received: u64,
    pub control: u64,
    pub dispatched: u64,
    pub finished: &'a [u64; 8],
    pub rejected: &'a [u64; RejectReason::ALL.len()],
}

impl ServiceMetrics {
    pub(crate) fn new() -> Self {
        ServiceMetrics {
            received: counter!("dispatcher_received_total"),
            control: counter!("dispatcher_control_total"),
            dispatched: counter!("dispatcher_dispatched_total"),
            finished: Outcome::ALL
                .iter()
                .map(|o| counter!("dispatcher_finished_total", "outcome" => o.as_str()))
                .collect(),
            rejected: RejectReason::ALL
                .iter()
                .map(|r| counter!("dispatcher_rejected_total", "reason" => r.as_str()))
                .collect(),
            run: histogram!("dispatcher_call_run_seconds"),
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

    /// Records a finished Call's durations.
    pub(crate) fn call_finished(&self, call: &Call) {
        if let Some(ms) = call.run_ms {
            self.run.record(ms / 1000.0);
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
        for (i, n) in c.finished.iter().enumerate() {
            if let Some(counter) = self.finished.get(i) {
                counter.increment(n - e.finished[i]);
            }
        }
        for (i, n) in c.rejected.iter().enumerate() {
            if let Some(counter) = self.rejected.get(i) {
                counter.increment(n - e.rejected[i]);
            }
        }
        e.rejected = *c.rejected;
        e.received = c.received;
        e.control = c.control;
        e.dispatched = c.dispatched;
        e.finished = *c.finished;
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
