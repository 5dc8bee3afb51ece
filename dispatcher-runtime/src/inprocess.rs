//! [`InProcessPool`]: workers as threads of the service process.
//!
//! It runs the whole service end to end without worker processes (tests, tasks that need no
//! isolation). It does **not** isolate crashes: an `abort()` or a segfault in a task ends the
//! service, and a thread cannot be killed. A timed-out or canceled job is recorded at once and its
//! thread is abandoned (left to finish on its own, its result ignored) and replaced.

use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use dispatcher_core::call::{now_epoch, Outcome};
use dispatcher_core::message::TaskMessage;
use dispatcher_core::pool::{
    CallKey, Dispatched, Job, Pool, PoolEvent, PoolEvents, PoolStats, WorkerState, WorkerStatus,
};
use dispatcher_core::worker::run_job;
use dispatcher_core::ChildSink;
use dispatcher_core::{Error, Result};

/// A pool of worker threads.
///
/// ```
/// use dispatcher_runtime::InProcessPool;
/// let pool = InProcessPool::new(4);
/// assert_eq!(pool.size(), 4);
/// ```
#[derive(Debug)]
pub struct InProcessPool {
    size: usize,
    shared: Option<Arc<Shared>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    events: PoolEvents,
    completions: mpsc::Sender<Completion>,
}

#[derive(Debug, Default)]
struct State {
    slots: Vec<Slot>,
    next_worker_id: u32,
    /// Worker threads abandoned and replaced (timeout, cancel).
    retired: u64,
}

#[derive(Debug)]
struct Slot {
    worker_id: u32,
    tx: std_mpsc::SyncSender<Work>,
    running: Option<Running>,
    finished: u64,
    started: Instant,
}

#[derive(Debug)]
struct Running {
    key: CallKey,
    /// When it started, epoch seconds.
    started_at: f64,
    uuid: String,
    task: &'static str,
    timer: Option<JoinHandle<()>>,
}

struct Work {
    job: Job,
}

#[derive(Debug)]
struct Completion {
    worker_id: u32,
    key: CallKey,
    outcome: Outcome,
    result: Option<serde_json::Value>,
    error: Option<String>,
}

struct EventSink(PoolEvents);

impl ChildSink for EventSink {
    fn submit(&self, parent_uuid: &str, message: TaskMessage) -> Result<()> {
        self.0
            .try_send(PoolEvent::Submit {
                parent_uuid: parent_uuid.to_owned(),
                message,
            })
            .map_err(|_| Error::Full {
                what: "the service's event channel",
                capacity: self.0.max_capacity(),
            })
    }
}

fn worker_thread(
    worker_id: u32,
    rx: std_mpsc::Receiver<Work>,
    completions: mpsc::Sender<Completion>,
    sink: Arc<dyn ChildSink>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(worker = worker_id, error = %e, "worker thread could not build a runtime");
            return;
        }
    };
    while let Ok(Work { job }) = rx.recv() {
        let key = job.key;
        let (outcome, result, error) = run_job(&rt, job, Some(sink.clone()));
        let done = Completion {
            worker_id,
            key,
            outcome,
            result,
            error,
        };
        if completions.blocking_send(done).is_err() {
            break;
        }
    }
}

impl InProcessPool {
    /// A pool of `size` worker threads (at least 1).
    pub fn new(size: usize) -> Self {
        InProcessPool {
            size: size.max(1),
            shared: None,
        }
    }

    /// The number of workers.
    pub fn size(&self) -> usize {
        self.size
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere while holding it; the state stays usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn_slot(self: &Arc<Self>, state: &mut State) -> Result<Slot> {
        let worker_id = state.next_worker_id;
        state.next_worker_id += 1;
        let (tx, rx) = std_mpsc::sync_channel(1);
        let completions = self.completions.clone();
        let sink: Arc<dyn ChildSink> = Arc::new(EventSink(self.events.clone()));
        std::thread::Builder::new()
            .name(format!("dispatcher-worker-{worker_id}"))
            .spawn(move || worker_thread(worker_id, rx, completions, sink))
            .map_err(|e| Error::pool(format!("could not start worker thread: {e}")))?;
        Ok(Slot {
            worker_id,
            tx,
            running: None,
            finished: 0,
            started: Instant::now(),
        })
    }

    /// Ends the job `key` without waiting for its thread: reports `outcome`, replaces the thread.
    fn abandon(self: &Arc<Self>, key: CallKey, outcome: Outcome, error: String) -> bool {
        let mut state = self.lock();
        let Some(idx) = state
            .slots
            .iter()
            .position(|s| s.running.as_ref().is_some_and(|r| r.key == key))
        else {
            return false;
        };
        state.retired += 1;
        match self.spawn_slot(&mut state) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut state.slots[idx], fresh);
                if let Some(r) = old.running.and_then(|r| r.timer) {
                    r.abort();
                }
                tracing::info!(worker = old.worker_id, key, %outcome, "worker thread abandoned and replaced");
            }
            Err(e) => {
                tracing::error!(error = %e, "could not replace an abandoned worker thread");
                let old = state.slots.remove(idx);
                if let Some(r) = old.running.and_then(|r| r.timer) {
                    r.abort();
                }
            }
        }
        drop(state);
        let events = self.events.clone();
        let ev = PoolEvent::Finished {
            key,
            outcome,
            result: None,
            error: Some(error),
            at: now_epoch(),
        };
        tokio::spawn(async move {
            let _ = events.send(ev).await;
        });
        true
    }
}

#[async_trait]
impl Pool for InProcessPool {
    async fn start(&mut self, events: PoolEvents) -> Result<()> {
        let (ctx, mut crx) = mpsc::channel::<Completion>(self.size * 2 + 8);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            events,
            completions: ctx,
        });
        {
            let mut state = shared.lock();
            for _ in 0..self.size {
                let slot = shared.spawn_slot(&mut state)?;
                state.slots.push(slot);
            }
        }
        let sup = shared.clone();
        tokio::spawn(async move {
            while let Some(done) = crx.recv().await {
                let accepted = {
                    let mut state = sup.lock();
                    match state.slots.iter_mut().find(|s| {
                        s.worker_id == done.worker_id
                            && s.running.as_ref().is_some_and(|r| r.key == done.key)
                    }) {
                        Some(slot) => {
                            if let Some(t) = slot.running.take().and_then(|r| r.timer) {
                                t.abort();
                            }
                            slot.finished += 1;
                            true
                        }
                        None => false,
                    }
                };
                if accepted {
                    let ev = PoolEvent::Finished {
                        key: done.key,
                        outcome: done.outcome,
                        result: done.result,
                        error: done.error,
                        at: now_epoch(),
                    };
                    if sup.events.send(ev).await.is_err() {
                        break;
                    }
                }
            }
        });
        self.shared = Some(shared);
        Ok(())
    }

    fn try_dispatch(&mut self, job: Job) -> std::result::Result<Dispatched, Job> {
        let Some(shared) = &self.shared else {
            return Err(job);
        };
        let mut state = shared.lock();
        let Some(slot) = state.slots.iter_mut().find(|s| s.running.is_none()) else {
            return Err(job);
        };
        let key = job.key;
        let timer = job.task.config().timeout.map(|limit| {
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                shared.abandon(
                    key,
                    Outcome::Timeout,
                    format!("timed out after {:.3}s", limit.as_secs_f64()),
                );
            })
        });
        let running = Running {
            key,
            started_at: now_epoch(),
            uuid: job.uuid.clone(),
            task: job.task.name(),
            timer,
        };
        match slot.tx.try_send(Work { job }) {
            Ok(()) => {
                slot.running = Some(running);
                Ok(Dispatched::running(slot.worker_id, std::process::id()))
            }
            Err(std_mpsc::TrySendError::Full(w) | std_mpsc::TrySendError::Disconnected(w)) => {
                if let Some(t) = running.timer {
                    t.abort();
                }
                Err(w.job)
            }
        }
    }

    fn cancel(&mut self, key: CallKey) -> bool {
        match &self.shared {
            Some(shared) => shared.abandon(key, Outcome::Canceled, "canceled".to_owned()),
            None => false,
        }
    }

    fn workers(&self) -> Vec<WorkerStatus> {
        let Some(shared) = &self.shared else {
            return Vec::new();
        };
        let state = shared.lock();
        state
            .slots
            .iter()
            .map(|s| {
                let mut w =
                    WorkerStatus::new(s.worker_id, Some(std::process::id()), WorkerState::Ready);
                w.finished_count = s.finished;
                w.current_task = s.running.as_ref().map(|r| r.task.to_owned());
                w.current_task_uuid = s.running.as_ref().map(|r| r.uuid.clone());
                w.current_task_started_at = s.running.as_ref().map(|r| r.started_at);
                w.age = s.started.elapsed().as_secs_f64();
                w
            })
            .collect()
    }

    fn stats(&self) -> PoolStats {
        match &self.shared {
            Some(shared) => {
                let state = shared.lock();
                PoolStats::new(state.next_worker_id, state.retired)
            }
            None => PoolStats::default(),
        }
    }

    async fn shutdown(&mut self, grace: Duration) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let deadline = Instant::now() + grace;
        loop {
            let busy: Vec<CallKey> = shared
                .lock()
                .slots
                .iter()
                .filter_map(|s| s.running.as_ref().map(|r| r.key))
                .collect();
            if busy.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for key in busy {
                    shared.abandon(
                        key,
                        Outcome::Canceled,
                        "still running at shutdown after the grace period".to_owned(),
                    );
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Dropping the senders ends idle threads; abandoned ones end when their job returns.
        shared.lock().slots.clear();
    }
}
