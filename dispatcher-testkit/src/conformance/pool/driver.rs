//! Drives a pool through the [`Pool`] trait as the service does: a queue of jobs in front of
//! `try_dispatch`, tried again after every `Finished` or `Ready`; events read from both the
//! events channel and `poll_events`. Every event is checked as it arrives (a `Finished` for a job
//! the pool never accepted, or a second one for the same job, fails the check at once), and every
//! wait is bounded.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use dispatcher_core::pool::{CallKey, Dispatched, Job, Pool, PoolEvent, WorkerState};
use dispatcher_core::{Outcome, TaskDescriptor, WorkerStatus};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{SHUTDOWN_WAIT, START_WAIT};
use crate::conformance::bounded;

/// Capacity of the events channel given to [`Pool::start`].
const EVENT_CAPACITY: usize = 256;

/// A job the pool accepted.
#[derive(Debug)]
pub(super) struct Sent {
    pub(super) task: &'static str,
    pub(super) args: Vec<Value>,
    pub(super) at: Instant,
}

/// How an accepted job ended (its first `Finished`).
#[derive(Debug, Clone)]
pub(super) struct Finish {
    pub(super) outcome: Outcome,
    pub(super) result: Option<Value>,
    pub(super) error: Option<String>,
    /// From `try_dispatch` accepting it to the `Finished` reaching the driver.
    pub(super) after: Duration,
}

pub(super) struct Driver<P: Pool> {
    pub(super) pool: P,
    rx: mpsc::Receiver<PoolEvent>,
    rx_closed: bool,
    /// Events received but not handed to the check yet (several can come from one poll).
    inbox: VecDeque<PoolEvent>,
    /// Longest wait for any one event.
    pub(super) wait: Duration,
    next_key: CallKey,
    sent: HashMap<CallKey, Sent>,
    done: HashMap<CallKey, Finish>,
    /// Jobs given back by `try_dispatch`, tried again after every event (the service's queue).
    queue: VecDeque<Job>,
    size: usize,
    stopped: bool,
}

impl<P: Pool> Driver<P> {
    /// Starts `pool` and waits until `workers()` reports its workers, all idle.
    pub(super) async fn start(mut pool: P, wait: Duration) -> Result<Self, String> {
        let (tx, rx) = mpsc::channel(EVENT_CAPACITY);
        bounded(START_WAIT, || "Pool::start".to_owned(), pool.start(tx)).await?;
        let mut driver = Driver {
            pool,
            rx,
            rx_closed: false,
            inbox: VecDeque::new(),
            wait,
            next_key: 1000,
            sent: HashMap::new(),
            done: HashMap::new(),
            queue: VecDeque::new(),
            size: 0,
            stopped: false,
        };
        let deadline = Instant::now() + START_WAIT;
        loop {
            let workers = driver.pool.workers();
            if !workers.is_empty()
                && workers
                    .iter()
                    .all(|w| w.status == WorkerState::Ready && !w.is_busy())
            {
                driver.size = workers.len();
                return Ok(driver);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{START_WAIT:?} after Pool::start returned, workers() still did not report \
                     its workers all idle; it reports: {}",
                    summary(&workers)
                ));
            }
            if let Some(ev) = driver.receive(Duration::from_millis(20)).await {
                driver.inbox.push_back(ev);
            }
        }
    }

    /// How many workers the pool reported once started.
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// A new job of `task` with these arguments (one per parameter), a fresh key and uuid, and
    /// attempt 1.
    pub(super) fn job(&mut self, task: &'static TaskDescriptor, args: Vec<Value>) -> Job {
        self.next_key += 1;
        Job {
            key: self.next_key,
            uuid: uuid::Uuid::new_v4().to_string(),
            task,
            args,
            attempt: 1,
        }
    }

    /// `job` for messages: its key, task and arguments.
    pub(super) fn describe(&self, key: CallKey) -> String {
        let queued = self.queue.iter().find(|j| j.key == key);
        match (self.sent.get(&key), queued) {
            (Some(s), _) => format!("job {key} ({}{})", s.task, args_text(&s.args)),
            (None, Some(j)) => format!("job {key} ({}{})", j.task.name(), args_text(&j.args)),
            (None, None) => format!("job {key}"),
        }
    }

    /// The job's first `Finished`, if any came.
    pub(super) fn finished(&self, key: CallKey) -> Option<&Finish> {
        self.done.get(&key)
    }

    /// Calls `try_dispatch`, recording an accepted job and checking a given-back one is intact.
    pub(super) fn try_dispatch(&mut self, job: Job) -> Result<Result<Dispatched, Job>, String> {
        let (key, uuid, task, args) = (job.key, job.uuid.clone(), job.task, job.args.clone());
        match self.pool.try_dispatch(job) {
            Ok(d) => {
                self.sent.insert(
                    key,
                    Sent {
                        task: task.name(),
                        args,
                        at: Instant::now(),
                    },
                );
                Ok(Ok(d))
            }
            Err(back) => {
                let mut changed = Vec::new();
                if back.key != key {
                    changed.push(format!("key {key} became {}", back.key));
                }
                if back.uuid != uuid {
                    changed.push(format!("uuid {uuid} became {}", back.uuid));
                }
                if !std::ptr::eq(back.task, task) {
                    changed.push(format!("task {} became {}", task.name(), back.task.name()));
                }
                if back.args != args {
                    changed.push(format!(
                        "args {} became {}",
                        Value::Array(args),
                        Value::Array(back.args.clone())
                    ));
                }
                if !changed.is_empty() {
                    return Err(format!(
                        "try_dispatch gave job {key} ({}) back changed: {}; the job given back \
                         must be the one passed in, intact (the service dispatches it again)",
                        task.name(),
                        changed.join(", ")
                    ));
                }
                Ok(Err(back))
            }
        }
    }

    /// Dispatches `job` now, or after the events that free a worker (`Finished`, `Ready`),
    /// within the event wait.
    pub(super) async fn dispatch_now(&mut self, job: Job) -> Result<Dispatched, String> {
        let deadline = Instant::now() + self.wait;
        let key = job.key;
        let mut job = job;
        loop {
            match self.try_dispatch(job)? {
                Ok(d) => return Ok(d),
                Err(back) => job = back,
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.next_event(left).await?.is_none() {
                return Err(format!(
                    "try_dispatch kept giving job {key} ({}) back for {:?}, and no event said a \
                     worker became free; workers() reports: {}",
                    job.task.name(),
                    self.wait,
                    summary(&self.pool.workers())
                ));
            }
        }
    }

    /// Queues `job` and tries the queue, as the service does with a new Call.
    pub(super) fn submit(&mut self, job: Job) -> Result<(), String> {
        self.queue.push_back(job);
        self.dispatch_queue()
    }

    fn dispatch_queue(&mut self) -> Result<(), String> {
        if self.stopped {
            return Ok(());
        }
        while let Some(job) = self.queue.pop_front() {
            match self.try_dispatch(job)? {
                Ok(_) => {}
                Err(back) => {
                    self.queue.push_front(back);
                    break;
                }
            }
        }
        self.pool.set_backlog(self.queue.len());
        Ok(())
    }

    /// The next event, checked, within `wait`; `None` when none came.
    pub(super) async fn next_event(&mut self, wait: Duration) -> Result<Option<PoolEvent>, String> {
        let ev = match self.inbox.pop_front() {
            Some(ev) => Some(ev),
            None => self.receive(wait).await,
        };
        if let Some(ev) = &ev {
            self.observe(ev)?;
        }
        Ok(ev)
    }

    /// Reads the events channel and `poll_events`, whichever has something first, within `wait`.
    async fn receive(&mut self, wait: Duration) -> Option<PoolEvent> {
        let Driver {
            pool,
            rx,
            rx_closed,
            inbox,
            ..
        } = self;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut polled = Vec::new();
            let got = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    biased;
                    ev = rx.recv(), if !*rx_closed => match ev {
                        Some(ev) => vec![ev],
                        None => {
                            *rx_closed = true;
                            Vec::new()
                        }
                    },
                    () = std::future::poll_fn(|cx| pool.poll_events(cx, &mut polled)) => {
                        std::mem::take(&mut polled)
                    }
                }
            })
            .await;
            match got {
                Err(_) => return None,
                Ok(events) => {
                    let mut events = events.into_iter();
                    if let Some(first) = events.next() {
                        inbox.extend(events);
                        return Some(first);
                    }
                }
            }
        }
    }

    /// Checks one event and keeps the books; tries the queue after a `Finished` or `Ready`.
    fn observe(&mut self, ev: &PoolEvent) -> Result<(), String> {
        match ev {
            PoolEvent::Finished {
                key,
                outcome,
                result,
                error,
                ..
            } => {
                let Some(sent) = self.sent.get(key) else {
                    let why = if self.queue.iter().any(|j| j.key == *key) {
                        "which try_dispatch gave back (the pool did not accept it)"
                    } else {
                        "a key it was never given"
                    };
                    return Err(format!(
                        "the pool reported Finished ({outcome}) for {}, {why}",
                        self.describe(*key)
                    ));
                };
                if let Some(first) = self.done.get(key) {
                    return Err(format!(
                        "the pool reported a second Finished for {}: first `{}`, then `{outcome}` \
                         (error {:?}); a pool reports exactly one Finished per accepted job",
                        self.describe(*key),
                        first.outcome,
                        error
                    ));
                }
                let finish = Finish {
                    outcome: *outcome,
                    result: result.clone(),
                    error: error.clone(),
                    after: sent.at.elapsed(),
                };
                self.done.insert(*key, finish);
                self.dispatch_queue()
            }
            PoolEvent::Ready => self.dispatch_queue(),
            _ => Ok(()),
        }
    }

    /// Waits for the `Finished` of every job in `keys` (accepted or still queued).
    pub(super) async fn wait_all(&mut self, keys: &[CallKey], what: &str) -> Result<(), String> {
        loop {
            let missing: Vec<CallKey> = keys
                .iter()
                .copied()
                .filter(|k| !self.done.contains_key(k))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if self.next_event(self.wait).await?.is_none() {
                let queued: Vec<String> = missing
                    .iter()
                    .filter(|k| self.queue.iter().any(|j| j.key == **k))
                    .map(|k| self.describe(*k))
                    .collect();
                let running: Vec<String> = missing
                    .iter()
                    .filter(|k| self.sent.contains_key(k))
                    .map(|k| self.describe(*k))
                    .collect();
                return Err(format!(
                    "{what}: no event from the pool for {:?} while {} of {} jobs had not \
                     finished: accepted but never reported Finished: [{}]; given back by \
                     try_dispatch and never accepted since (no Finished or Ready said a worker \
                     became free): [{}]; workers() reports: {}",
                    self.wait,
                    missing.len(),
                    keys.len(),
                    running.join(", "),
                    queued.join(", "),
                    summary(&self.pool.workers())
                ));
            }
        }
    }

    /// Waits for `key`'s `Finished`.
    pub(super) async fn wait_finished(&mut self, key: CallKey) -> Result<Finish, String> {
        let deadline = Instant::now() + self.wait;
        loop {
            if let Some(f) = self.done.get(&key) {
                return Ok(f.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.next_event(left).await?.is_none() {
                return Err(format!(
                    "{} got no Finished within {:?}; workers() reports: {}",
                    self.describe(key),
                    self.wait,
                    summary(&self.pool.workers())
                ));
            }
        }
    }

    /// Takes in events until `deadline`: a second `Finished` for a job fails the check.
    pub(super) async fn quiet_until(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            self.next_event(left).await?;
        }
    }

    /// Calls `shutdown(grace)`, reading the events channel meanwhile (a pool may wait for room in
    /// it), bounded by `grace` plus [`SHUTDOWN_WAIT`]; returns how long it took.
    pub(super) async fn shutdown(&mut self, grace: Duration) -> Result<Duration, String> {
        self.stopped = true;
        let bound = grace + SHUTDOWN_WAIT;
        let started = Instant::now();
        let mut got = Vec::new();
        let returned = {
            let Driver {
                pool,
                rx,
                rx_closed,
                ..
            } = self;
            let shutdown = pool.shutdown(grace);
            tokio::pin!(shutdown);
            let limit = tokio::time::sleep(bound);
            tokio::pin!(limit);
            loop {
                tokio::select! {
                    () = &mut shutdown => break true,
                    () = &mut limit => break false,
                    ev = rx.recv(), if !*rx_closed => match ev {
                        Some(ev) => got.push(ev),
                        None => *rx_closed = true,
                    },
                }
            }
        };
        self.inbox.extend(got);
        if returned {
            Ok(started.elapsed())
        } else {
            Err(format!(
                "shutdown({grace:?}) did not return within {bound:?}"
            ))
        }
    }

    /// Shuts the pool down (grace zero) unless the check did, and checks what it reported then.
    pub(super) async fn finish(mut self) -> Result<(), String> {
        if !self.stopped {
            self.shutdown(Duration::ZERO).await?;
        }
        while let Some(ev) = self.inbox.pop_front() {
            self.observe(&ev)?;
        }
        Ok(())
    }
}

/// Arguments as JSON, with a leading space (empty for none).
fn args_text(args: &[Value]) -> String {
    if args.is_empty() {
        String::new()
    } else {
        format!(" {}", Value::Array(args.to_vec()))
    }
}

/// `workers()` on one line: id, state, current task.
pub(super) fn summary(workers: &[WorkerStatus]) -> String {
    if workers.is_empty() {
        return "no workers".to_owned();
    }
    let parts: Vec<String> = workers
        .iter()
        .map(|w| {
            let state = serde_json::to_value(w.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{:?}", w.status));
            match (&w.current_task, &w.current_task_uuid) {
                (None, None) => format!("#{} {state}", w.worker_id),
                (task, uuid) => format!(
                    "#{} {state} running {} ({})",
                    w.worker_id,
                    task.as_deref().unwrap_or("?"),
                    uuid.as_deref().unwrap_or("no uuid")
                ),
            }
        })
        .collect();
    format!("[{}]", parts.join(", "))
}
