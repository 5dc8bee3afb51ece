//! The [`Pool`] trait: where dispatched Calls run.

use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::call::Outcome;
use crate::error::Result;
use crate::message::TaskMessage;
use crate::task::TaskDescriptor;

/// The service's key for a Call in flight (unique within one service run).
pub type CallKey = u64;

/// A Call handed to a pool: only what a worker needs to run it.
#[derive(Debug, Clone)]
pub struct Job {
    /// The service's key, echoed in [`PoolEvent::Finished`].
    pub key: CallKey,
    /// The Call's uuid (given to the task's context).
    pub uuid: String,
    /// The task.
    pub task: &'static TaskDescriptor,
    /// Bound arguments, one per parameter.
    pub args: Vec<Value>,
    /// Which run of the Call this is (given to the task's context): 1 for a first run, more when
    /// a durable queue runs the Call again after a failed attempt.
    pub attempt: u32,
}

/// Where a dispatched job went: [`Dispatched::running`] or [`Dispatched::queued`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dispatched {
    /// The worker running it, or whose running job it waits behind.
    pub worker_id: u32,
    /// The worker's process id.
    pub pid: u32,
    /// The job waits behind the worker's running one: it has not started, and the pool reports
    /// [`PoolEvent::Started`] when it does (or finishes it as it would a running job: canceled,
    /// lost with its worker, ...).
    pub queued: bool,
}

impl Dispatched {
    /// The job started on worker `worker_id` (process `pid`).
    pub fn running(worker_id: u32, pid: u32) -> Self {
        Dispatched {
            worker_id,
            pid,
            queued: false,
        }
    }

    /// The job waits behind the running job of worker `worker_id` (process `pid`); the pool
    /// reports [`PoolEvent::Started`] when it starts.
    pub fn queued(worker_id: u32, pid: u32) -> Self {
        Dispatched {
            worker_id,
            pid,
            queued: true,
        }
    }
}

/// What a pool reports to the service.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PoolEvent {
    /// A job ended. Exactly one is sent for every job the pool accepted.
    Finished {
        /// The job's key.
        key: CallKey,
        /// How it ended.
        outcome: Outcome,
        /// The task's result, for `ok`.
        result: Option<Value>,
        /// Error text for every other outcome.
        error: Option<String>,
        /// When it ended, epoch seconds.
        at: f64,
    },
    /// A job started later than it was dispatched, or on another worker than
    /// [`Pool::try_dispatch`] said: a pool that hands a busy worker its next job while the queue is
    /// deep reports when (and where) that job actually started. The Call's start time, worker
    /// and pid become these.
    Started {
        /// The job's key.
        key: CallKey,
        /// The worker running it.
        worker_id: u32,
        /// The worker's process id.
        pid: u32,
        /// When it started, epoch seconds.
        at: f64,
    },
    /// Workers became free other than by finishing a job (started, scaled up, replaced): the
    /// service tries its queue again.
    Ready,
    /// A running task submitted another task through its context.
    Submit {
        /// The submitting Call's uuid.
        parent_uuid: String,
        /// The submitted message.
        message: TaskMessage,
    },
}

/// The sending side the service gives a pool for its events. Bounded: when the service lags,
/// senders wait.
pub type PoolEvents = mpsc::Sender<PoolEvent>;

/// A worker's state, in dispatcherd's words. A worker running a Call is `ready` with a
/// `current_task` (as in dispatcherd); see [`WorkerStatus::is_busy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkerState {
    /// Known, not started yet.
    Initialized,
    /// Its process was started.
    Spawned,
    /// Starting up (connecting).
    Starting,
    /// Ready for a job, or running one (see `current_task`).
    Ready,
    /// Being stopped or replaced.
    Stopping,
    /// Its process ended.
    Exited,
    /// It failed.
    Error,
    /// Retired (recycled or scaled down).
    Retired,
    /// A word this version does not know (from another implementation).
    #[serde(other)]
    Unknown,
}

impl WorkerState {
    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Initialized => "initialized",
            WorkerState::Spawned => "spawned",
            WorkerState::Starting => "starting",
            WorkerState::Ready => "ready",
            WorkerState::Stopping => "stopping",
            WorkerState::Exited => "exited",
            WorkerState::Error => "error",
            WorkerState::Retired => "retired",
            WorkerState::Unknown => "unknown",
        }
    }
}

/// A worker as the `workers` control command reports it (dispatcherd's fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Worker id, unique within the pool.
    pub worker_id: u32,
    /// Process id (the service's own for in-process pools; none before it started).
    pub pid: Option<u32>,
    /// State.
    pub status: WorkerState,
    /// Jobs finished by this worker.
    #[serde(default)]
    pub finished_count: u64,
    /// Task name of the running job.
    #[serde(default)]
    pub current_task: Option<String>,
    /// Uuid of the running job.
    #[serde(default)]
    pub current_task_uuid: Option<String>,
    /// Whether the running job is being canceled.
    #[serde(default)]
    pub active_cancel: bool,
    /// Seconds since the worker started.
    #[serde(default)]
    pub age: f64,
    /// When the running job started on it, epoch seconds (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_task_started_at: Option<f64>,
    /// Resident memory, in KiB, when the pool measures it (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_kb: Option<u64>,
}

impl WorkerStatus {
    /// A worker with nothing running and nothing counted.
    pub fn new(worker_id: u32, pid: Option<u32>, status: WorkerState) -> Self {
        WorkerStatus {
            worker_id,
            pid,
            status,
            finished_count: 0,
            current_task: None,
            current_task_uuid: None,
            active_cancel: false,
            age: 0.0,
            current_task_started_at: None,
            rss_kb: None,
        }
    }

    /// True while it runs a Call.
    pub fn is_busy(&self) -> bool {
        self.current_task.is_some() || self.current_task_uuid.is_some()
    }
}

/// Counts a pool keeps about its workers over its life, for the `main` control command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// The id the next worker started will get.
    pub next_worker_id: u32,
    /// Workers retired (recycled, scaled down, replaced after a timeout, a cancel or a death).
    pub retirement_count: u64,
}

impl PoolStats {
    /// Stats from these counts.
    pub fn new(next_worker_id: u32, retirement_count: u64) -> Self {
        PoolStats {
            next_worker_id,
            retirement_count,
        }
    }
}

/// Runs dispatched jobs.
///
/// The service owns the pool and calls it from one task. A pool reports every accepted job's end
/// as exactly one [`PoolEvent::Finished`] on the events channel it got in [`Pool::start`],
/// including jobs it canceled, timed out or lost.
#[async_trait]
pub trait Pool: Send + 'static {
    /// Starts the workers. Events go to `events`.
    async fn start(&mut self, events: PoolEvents) -> Result<()>;

    /// Hands a job to an idle worker, or gives it back when none can take it now. A pool may also
    /// take a job for a busy worker, to run when its running job ends (the process pool does while
    /// Calls wait, see [`Pool::set_backlog`]); it then reports the job's real start with
    /// [`PoolEvent::Started`].
    fn try_dispatch(&mut self, job: Job) -> std::result::Result<Dispatched, Job>;

    /// Ends the running job `key` (outcome `canceled`); false when it is not running here.
    fn cancel(&mut self, key: CallKey) -> bool;

    /// The workers now.
    fn workers(&self) -> Vec<WorkerStatus>;

    /// Counts over the pool's life. The default derives the next worker id from the workers
    /// now and counts no retirements.
    fn stats(&self) -> PoolStats {
        let next = self
            .workers()
            .iter()
            .map(|w| w.worker_id + 1)
            .max()
            .unwrap_or(0);
        PoolStats::new(next, 0)
    }

    /// Tells the pool how many Calls wait for a worker, after each round of dispatch (a hint for
    /// pools that scale, or that queue jobs behind running ones while Calls wait).
    fn set_backlog(&mut self, waiting: usize) {
        let _ = waiting;
    }

    /// Events the pool hands over in the service's own task, besides the events channel.
    ///
    /// The service loop polls this whenever it waits. A pool that reads its workers here (as
    /// the process pool reads their sockets) spares every Call a hop through another task and
    /// the events channel. Push the events to `events` and return `Ready(())` when there are
    /// any; otherwise register `cx`'s waker with the sources and return `Pending`. Events may
    /// come through either path; each job still ends in exactly one `Finished`.
    ///
    /// The default has no such sources: everything comes through the channel.
    fn poll_events(&mut self, cx: &mut Context<'_>, events: &mut Vec<PoolEvent>) -> Poll<()> {
        let _ = (cx, events);
        Poll::Pending
    }

    /// Stops every worker; jobs still running after `grace` are ended and reported `canceled`.
    async fn shutdown(&mut self, grace: Duration);
}

#[async_trait]
impl<P: Pool + ?Sized> Pool for Box<P> {
    async fn start(&mut self, events: PoolEvents) -> Result<()> {
        (**self).start(events).await
    }
    fn try_dispatch(&mut self, job: Job) -> std::result::Result<Dispatched, Job> {
        (**self).try_dispatch(job)
    }
    fn cancel(&mut self, key: CallKey) -> bool {
        (**self).cancel(key)
    }
    fn workers(&self) -> Vec<WorkerStatus> {
        (**self).workers()
    }
    fn stats(&self) -> PoolStats {
        (**self).stats()
    }
    fn set_backlog(&mut self, waiting: usize) {
        (**self).set_backlog(waiting)
    }
    fn poll_events(&mut self, cx: &mut Context<'_>, events: &mut Vec<PoolEvent>) -> Poll<()> {
        (**self).poll_events(cx, events)
    }
    async fn shutdown(&mut self, grace: Duration) {
        (**self).shutdown(grace).await
    }
}
