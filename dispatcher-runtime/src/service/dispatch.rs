//! Dispatch: the capacity queue in front of the pool, `try_dispatch`, and what the pool reports
//! back (a job finished, workers became free, a task submitted a task).

use dispatcher_core::call::now_epoch;
use dispatcher_core::pool::{CallKey, Job, PoolEvent};
use dispatcher_core::Outcome;

use super::{Loop, Pending, Stage, LOCAL_CHANNEL};

impl Loop {
    pub(super) fn enqueue(&mut self, key: CallKey) {
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        p.stage = Stage::Queued;
        let was_empty = self.queue.is_empty();
        self.queue.push_back(key);
        if was_empty {
            self.dispatch_queue();
        } else {
            // Calls already wait, so no worker is free: the pool reports one becoming free
            // (`Finished`, `Ready`), and the queue is tried again then. The pool hears of the
            // longer queue at the end of this turn (once, not for every Call).
            self.backlog_changed = true;
        }
        if let Some(p) = self.pending.get_mut(&key) {
            if p.stage == Stage::Queued {
                p.call.queued_at.get_or_insert_with(now_epoch);
            }
        }
    }

    pub(super) fn dispatch_queue(&mut self) {
        if self.stopping {
            return;
        }
        while let Some(&key) = self.queue.front() {
            let Some(p) = self.pending.get_mut(&key) else {
                self.queue.pop_front();
                continue;
            };
            let job = Job {
                key,
                uuid: p.call.uuid.clone(),
                task: p.task,
                args: std::mem::take(&mut p.args),
                attempt: p.call.attempt.unwrap_or(1),
            };
            match self.pool.try_dispatch(job) {
                Ok(d) => {
                    self.queue.pop_front();
                    p.stage = Stage::Running;
                    self.running += 1;
                    p.call.worker_id = Some(d.worker_id);
                    p.call.pid = Some(d.pid);
                    // A job queued behind a worker's running one starts later (`Started`).
                    p.call.started_at = (!d.queued).then(now_epoch);
                    self.counters.dispatched += 1;
                }
                Err(job) => {
                    p.args = job.args;
                    break;
                }
            }
        }
        self.backlog_changed = false;
        self.pool.set_backlog(self.queue.len());
    }

    pub(super) fn on_pool_event(&mut self, ev: PoolEvent) {
        match ev {
            PoolEvent::Finished {
                key,
                outcome,
                result,
                error,
                at,
            } => {
                let Some(p) = self.take_pending(key) else {
                    tracing::debug!(key, "finish report for a Call no longer tracked");
                    return;
                };
                if let Some(dk) = &p.dup_key {
                    self.release_dup(dk);
                }
                self.record(&p.span, p.call, outcome, error, result, at);
                self.dispatch_queue();
            }
            PoolEvent::Started {
                key,
                worker_id,
                pid,
                at,
            } => {
                if let Some(p) = self.pending.get_mut(&key) {
                    p.call.worker_id = Some(worker_id);
                    p.call.pid = Some(pid);
                    p.call.started_at = Some(at);
                }
            }
            PoolEvent::Ready => self.dispatch_queue(),
            PoolEvent::Submit {
                parent_uuid,
                message,
            } => {
                let _ = self.accept_task(message, LOCAL_CHANNEL, Some(parent_uuid));
            }
            other => tracing::debug!(event = ?other, "pool event of a kind this service ignores"),
        }
    }

    /// Removes a Call that has not started and records `outcome`.
    pub(super) fn remove_waiting(&mut self, key: CallKey, outcome: Outcome, reason: &str) {
        if self
            .pending
            .get(&key)
            .is_none_or(|p| p.stage == Stage::Running)
        {
            return;
        }
        let Some(p) = self.take_pending(key) else {
            return;
        };
        match p.stage {
            Stage::Queued => {
                self.queue.retain(|k| *k != key);
                self.pool.set_backlog(self.queue.len());
            }
            Stage::Blocked => {
                if let Some(dk) = &p.dup_key {
                    self.dups.unblock(dk, key);
                }
            }
            Stage::Delayed | Stage::Running => {}
        }
        if p.stage == Stage::Queued {
            if let Some(dk) = &p.dup_key {
                self.release_dup(dk);
            }
        }
        self.record(
            &p.span,
            p.call,
            outcome,
            Some(reason.to_owned()),
            None,
            now_epoch(),
        );
    }

    pub(super) fn next_key(&mut self) -> CallKey {
        self.next_key += 1;
        self.next_key
    }

    pub(super) fn waiting_count(&self) -> usize {
        self.pending.len() - self.running
    }

    /// Removes a Call from `pending`, keeping the running count.
    pub(super) fn take_pending(&mut self, key: CallKey) -> Option<Pending> {
        let p = self.pending.remove(&key)?;
        if p.stage == Stage::Running {
            self.running -= 1;
        }
        Some(*p)
    }
}
