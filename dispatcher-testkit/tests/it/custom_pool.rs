//! A pool written from scratch against the `Pool` trait alone, running jobs on tokio's blocking
//! threads, to show that any `Pool` implementation plugs in and passes the conformance suite.
//!
//! Each worker is a slot; a job runs on a blocking thread with a runtime of its own
//! (`dispatcher_core::worker::run_job`). A job that times out or is canceled is reported at once
//! and its slot freed; its thread is left to finish, and what it returns then is dropped (the slot
//! no longer runs that key).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dispatcher_core::call::now_epoch;
use dispatcher_core::pool::{CallKey, Dispatched, Job, Pool, PoolEvent, PoolEvents};
use dispatcher_core::worker::run_job;
use dispatcher_core::{Outcome, Result, WorkerState, WorkerStatus};
use tokio::task::JoinHandle;

/// A fixed number of slots on tokio's blocking threads.
#[derive(Debug)]
pub struct BlockingPool {
    size: usize,
    shared: Option<Arc<Shared>>,
}

#[derive(Debug)]
struct Shared {
    events: PoolEvents,
    slots: Mutex<Vec<Slot>>,
}

#[derive(Debug)]
struct Slot {
    id: u32,
    started: Instant,
    finished: u64,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    key: CallKey,
    uuid: String,
    task: &'static str,
    timer: Option<JoinHandle<()>>,
}

impl BlockingPool {
    pub fn new(size: usize) -> Self {
        BlockingPool {
            size: size.max(1),
            shared: None,
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Frees the slot running `key`, if one does; its finished count grows when `done`.
    fn release(&self, key: CallKey, done: bool) -> bool {
        let mut slots = self.lock();
        let Some(slot) = slots
            .iter_mut()
            .find(|s| s.running.as_ref().is_some_and(|r| r.key == key))
        else {
            return false;
        };
        if let Some(timer) = slot.running.take().and_then(|r| r.timer) {
            timer.abort();
        }
        if done {
            slot.finished += 1;
        }
        true
    }

    /// Ends `key` early (timeout, cancel, shutdown): frees its slot, then reports it.
    fn end(self: &Arc<Self>, key: CallKey, outcome: Outcome, error: String) -> bool {
        if !self.release(key, false) {
            return false;
        }
        let events = self.events.clone();
        tokio::spawn(async move {
            let _ = events.send(finished(key, outcome, None, Some(error))).await;
        });
        true
    }
}

fn finished(
    key: CallKey,
    outcome: Outcome,
    result: Option<serde_json::Value>,
    error: Option<String>,
) -> PoolEvent {
    PoolEvent::Finished {
        key,
        outcome,
        result,
        error,
        at: now_epoch(),
    }
}

#[async_trait]
impl Pool for BlockingPool {
    async fn start(&mut self, events: PoolEvents) -> Result<()> {
        let slots = (0..self.size as u32)
            .map(|id| Slot {
                id,
                started: Instant::now(),
                finished: 0,
                running: None,
            })
            .collect();
        self.shared = Some(Arc::new(Shared {
            events,
            slots: Mutex::new(slots),
        }));
        Ok(())
    }

    fn try_dispatch(&mut self, job: Job) -> std::result::Result<Dispatched, Job> {
        let Some(shared) = &self.shared else {
            return Err(job);
        };
        let mut slots = shared.lock();
        let Some(slot) = slots.iter_mut().find(|s| s.running.is_none()) else {
            return Err(job);
        };
        let key = job.key;
        let timer = job.task.config().timeout.map(|limit| {
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(limit).await;
                shared.end(
                    key,
                    Outcome::Timeout,
                    format!("timed out after {:.3}s", limit.as_secs_f64()),
                );
            })
        });
        slot.running = Some(Running {
            key,
            uuid: job.uuid.clone(),
            task: job.task.name(),
            timer,
        });
        let worker_id = slot.id;
        drop(slots);
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || {
            let report = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => run_job(&rt, job, None),
                Err(e) => (Outcome::WorkerLost, None, Some(format!("no runtime: {e}"))),
            };
            // Dropped when the job was ended meanwhile (its slot no longer runs this key).
            if shared.release(key, true) {
                let (outcome, result, error) = report;
                let _ = shared
                    .events
                    .blocking_send(finished(key, outcome, result, error));
            }
        });
        Ok(Dispatched::running(worker_id, std::process::id()))
    }

    fn cancel(&mut self, key: CallKey) -> bool {
        match &self.shared {
            Some(shared) => shared.end(key, Outcome::Canceled, "canceled".to_owned()),
            None => false,
        }
    }

    fn workers(&self) -> Vec<WorkerStatus> {
        let Some(shared) = &self.shared else {
            return Vec::new();
        };
        shared
            .lock()
            .iter()
            .map(|s| {
                let mut w = WorkerStatus::new(s.id, Some(std::process::id()), WorkerState::Ready);
                w.finished_count = s.finished;
                w.current_task = s.running.as_ref().map(|r| r.task.to_owned());
                w.current_task_uuid = s.running.as_ref().map(|r| r.uuid.clone());
                w.age = s.started.elapsed().as_secs_f64();
                w
            })
            .collect()
    }

    async fn shutdown(&mut self, grace: Duration) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let deadline = Instant::now() + grace;
        loop {
            let busy: Vec<CallKey> = shared
                .lock()
                .iter()
                .filter_map(|s| s.running.as_ref().map(|r| r.key))
                .collect();
            if busy.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                for key in busy {
                    if shared.release(key, false) {
                        let ev = finished(
                            key,
                            Outcome::Canceled,
                            None,
                            Some("still running at shutdown after the grace period".to_owned()),
                        );
                        let _ = shared.events.send(ev).await;
                    }
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
