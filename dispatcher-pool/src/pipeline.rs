//! Jobs queued behind a running one: a busy worker gets its next job while the service's queue is
//! deep, so it goes straight on to it when the running one ends instead of sleeping until the
//! service wakes it (the wake-up of a sleeping worker is the largest cost of a Call in the pool).
//!
//! At most [`QUEUE_DEPTH`] jobs wait on a worker (`Slot::next`), and only while Calls wait in the
//! service's queue. A queued job never waits for a worker that is free: whenever a worker falls idle, it
//! takes a job given back (`State::returned`) or one queued behind another worker's running
//! job, taken back through the shared claim word ([`crate::claim`]). A worker that must be
//! ended (timeout, cancel, death, limits) has its queued job taken back first, and that job runs
//! elsewhere: the worker never started it. When the worker did start it, its previous job is
//! over (a worker starts a job only after reporting the previous one), which the pool learns
//! from the claim word before the report arrives: a timeout or cancel of the previous job then
//! has nothing left to end.
//!
//! A queued job's Call starts when its worker gets to it: [`PoolEvent::Started`] says when and
//! where, and its timeout runs from then.

use dispatcher_core::call::now_epoch;
use dispatcher_core::pool::{CallKey, Job, PoolEvent};
use dispatcher_core::Outcome;
use tokio::sync::mpsc;

use crate::pool::{Inner, Running, SlotState, State};
use crate::protocol::encode_job;
use crate::supervisor::{tell, Cmd};

/// Most jobs queued behind one worker's running job. Each saves its worker a wake-up (it finds
/// the job in its socket instead of sleeping until it is sent) and the service one on the other
/// side (it reads several reports per wake-up); a job waits behind at most this many others on
/// its worker, and never while another worker is free.
pub(crate) const QUEUE_DEPTH: usize = 2;

/// A job written to a busy worker, to run when its running job ends.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) job: Job,
    /// The claim word it was queued on.
    pub(crate) word: u8,
    /// Canceled, with this reason: ends `canceled` when taken back, or once known running when
    /// the worker started it.
    pub(crate) cancel: Option<String>,
}

/// What to do once the state lock is released: events for the service, commands for supervisors.
#[derive(Debug, Default)]
#[must_use]
pub(crate) struct Effects {
    pub(crate) events: Vec<PoolEvent>,
    pub(crate) cmds: Vec<(mpsc::Sender<Cmd>, Cmd)>,
}

impl Effects {
    /// From the service's task, while it reads the workers: events go straight to `out`.
    pub(crate) fn apply_to(self, out: &mut Vec<PoolEvent>) {
        out.extend(self.events);
        for (to, cmd) in self.cmds {
            tell(to, cmd);
        }
    }

    /// From any task: events through the pool's events channel, without waiting (a full channel
    /// hands them to a task that waits).
    pub(crate) fn send(self, inner: &Inner) {
        for (to, cmd) in self.cmds {
            tell(to, cmd);
        }
        for ev in self.events {
            if let Err(mpsc::error::TrySendError::Full(ev)) = inner.events.try_send(ev) {
                let events = inner.events.clone();
                tokio::spawn(async move {
                    let _ = events.send(ev).await;
                });
            }
        }
    }
}

/// What became of a worker's queued job when the pool tried to take it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TakeBack {
    /// No job was queued.
    Nothing,
    /// Taken back: it runs elsewhere.
    Taken,
    /// The worker started it already, so its previous job is over.
    Started,
}

/// Finished `Call` of a job that never started.
pub(crate) fn never_started(key: CallKey, outcome: Outcome, error: String) -> PoolEvent {
    PoolEvent::Finished {
        key,
        outcome,
        result: None,
        error: Some(error),
        at: now_epoch(),
    }
}

impl Inner {
    /// The busy worker to queue a job behind, if any: one with room in its queue, a free claim
    /// word, no cancel under way, not due to be recycled after its queued jobs; the one with the
    /// fewest queued, then the one whose running job started last (a job that has run long may run
    /// long yet).
    pub(crate) fn queue_target(&self, state: &State) -> Option<u32> {
        let max_tasks = self.config.max_tasks_per_worker;
        let max_age = self.config.max_worker_age;
        state
            .workers
            .iter()
            .filter(|(_, s)| {
                s.status == SlotState::Busy
                    && s.next.len() < QUEUE_DEPTH
                    && !s.canceling
                    && s.claim.as_ref().is_some_and(|c| c.free_word().is_some())
                    && s.link.is_some()
                    && max_tasks.is_none_or(|n| s.finished + 1 + (s.next.len() as u64) < n)
                    && max_age.is_none_or(|a| s.started.elapsed() < a)
            })
            .min_by(|a, b| {
                let at = |s: &crate::pool::Slot| s.running.as_ref().map_or(0.0, |r| r.started_at);
                a.1.next
                    .len()
                    .cmp(&b.1.next.len())
                    .then(at(b.1).total_cmp(&at(a.1)))
            })
            .map(|(id, _)| *id)
    }

    /// Starts `job` on idle worker `id`, which said nothing yet about it: writes it, marks the
    /// worker busy, reports the start and arms the timeout. Gives the job back when the worker
    /// cannot be written to (and has it replaced).
    pub(crate) fn start_on(
        &self,
        state: &mut State,
        id: u32,
        job: Job,
        fx: &mut Effects,
    ) -> Result<(), Job> {
        let Some(slot) = state.workers.get_mut(&id) else {
            return Err(job);
        };
        let Some(link) = slot.link.as_mut() else {
            return Err(job);
        };
        let mut frame = Vec::with_capacity(256);
        let sent = encode_job(&job, None, &mut frame)
            .map_err(|e| e.to_string())
            .and_then(|()| link.send(&frame).map_err(|e| e.to_string()));
        if let Err(e) = sent {
            slot.status = SlotState::Stopping;
            if let Some(cmd) = slot.cmd.clone() {
                fx.cmds.push((
                    cmd,
                    Cmd::Replace(format!("could not write to worker {id}: {e}")),
                ));
            }
            return Err(job);
        }
        slot.status = SlotState::Busy;
        tracing::trace!(worker = id, key = job.key, "started a job given back");
        self.run_now(slot, id, job, fx);
        Ok(())
    }

    /// Job `job` runs on worker `id` from now: the slot's running job, its start reported, its
    /// timeout armed.
    fn run_now(&self, slot: &mut crate::pool::Slot, id: u32, job: Job, fx: &mut Effects) {
        let at = now_epoch();
        fx.events.push(PoolEvent::Started {
            key: job.key,
            worker_id: id,
            pid: slot.pid,
            at,
        });
        if let (Some(limit), Some(cmd)) = (job.task.config().timeout, slot.cmd.clone()) {
            let deadline = tokio::time::Instant::now() + limit;
            fx.cmds.push((cmd, Cmd::Deadline(job.key, deadline, limit)));
        }
        slot.running = Some(Running {
            key: job.key,
            uuid: job.uuid,
            task: job.task.name(),
            started_at: at,
        });
    }

    /// Worker `id` reported its running job: its first queued job, if any, runs now. True when one
    /// did.
    pub(crate) fn promote(&self, state: &mut State, id: u32, fx: &mut Effects) -> bool {
        let Some(slot) = state.workers.get_mut(&id) else {
            return false;
        };
        let Some(q) = slot.next.pop_front() else {
            return false;
        };
        let key = q.job.key;
        self.run_now(slot, id, q.job, fx);
        if let Some(reason) = q.cancel {
            slot.canceling = true;
            if let Some(cmd) = slot.cmd.clone() {
                fx.cmds
                    .push((cmd, Cmd::Cancel(key, Outcome::Canceled, reason)));
            }
        }
        true
    }

    /// Takes back every job queued on worker `id` that the worker has not started, newest first
    /// (a worker starts them in order); jobs taken back go to idle workers, or wait in `returned`
    /// for the next ones. `Started` when the worker started one: the job before it is over.
    pub(crate) fn take_back(&self, state: &mut State, id: u32, fx: &mut Effects) -> TakeBack {
        let mut taken = Vec::new();
        let mut started = false;
        if let Some(slot) = state.workers.get_mut(&id) {
            while let Some(q) = slot.next.back() {
                if !revoke(slot.claim.as_ref(), q) {
                    started = true;
                    break;
                }
                taken.extend(slot.next.pop_back());
            }
        }
        let any = !taken.is_empty();
        // Oldest first, as they were queued.
        for q in taken.into_iter().rev() {
            self.taken_back(state, id, q, fx);
        }
        match (started, any) {
            (true, _) => TakeBack::Started,
            (false, true) => TakeBack::Taken,
            (false, false) => TakeBack::Nothing,
        }
    }

    /// Takes back the last job queued on worker `id` (the one that would wait longest) if the
    /// worker has not started it.
    fn take_back_last(&self, state: &mut State, id: u32, fx: &mut Effects) -> TakeBack {
        let Some(slot) = state.workers.get_mut(&id) else {
            return TakeBack::Nothing;
        };
        let Some(q) = slot.next.back() else {
            return TakeBack::Nothing;
        };
        if !revoke(slot.claim.as_ref(), q) {
            return TakeBack::Started;
        }
        let Some(q) = slot.next.pop_back() else {
            return TakeBack::Nothing;
        };
        self.taken_back(state, id, q, fx);
        TakeBack::Taken
    }

    /// A job taken back from worker `id`: canceled, or to run on an idle worker.
    fn taken_back(&self, state: &mut State, id: u32, q: Queued, fx: &mut Effects) {
        tracing::trace!(worker = id, key = q.job.key, "took a queued job back");
        if let Some(reason) = q.cancel {
            fx.events
                .push(never_started(q.job.key, Outcome::Canceled, reason));
        } else {
            state.returned.push_back(q.job);
            self.feed_any_idle(state, fx);
        }
    }

    /// Gives idle workers the jobs given back, oldest first.
    pub(crate) fn feed_any_idle(&self, state: &mut State, fx: &mut Effects) {
        if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        while !state.returned.is_empty() {
            let idle = state
                .workers
                .iter()
                .find(|(_, s)| s.status == SlotState::Idle && s.link.is_some())
                .map(|(id, _)| *id);
            let Some(id) = idle else {
                return;
            };
            let Some(job) = state.returned.pop_front() else {
                return;
            };
            if let Err(job) = self.start_on(state, id, job, fx) {
                state.returned.push_front(job);
            }
        }
    }

    /// Worker `id` fell idle: it takes a job given back, else one queued behind another worker's
    /// running job (taken back from there), so no job waits while a worker is free.
    pub(crate) fn feed_idle(&self, state: &mut State, id: u32, fx: &mut Effects) {
        if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if let Some(job) = state.returned.pop_front() {
            if let Err(job) = self.start_on(state, id, job, fx) {
                state.returned.push_front(job);
            }
            return;
        }
        // While Calls wait in the service's queue, the service gives this worker one at once.
        if self.backlog.load(std::sync::atomic::Ordering::Relaxed) != 0 {
            return;
        }
        let others: Vec<u32> = state
            .workers
            .iter()
            .filter(|(other, s)| **other != id && !s.next.is_empty())
            .map(|(other, _)| *other)
            .collect();
        for other in others {
            if self.take_back_last(state, other, fx) == TakeBack::Taken {
                // `take_back` handed it to an idle worker (this one, unless another idled too).
                return;
            }
        }
    }

    /// Every idle worker takes a job queued elsewhere (the service's queue ran dry).
    pub(crate) fn feed_idle_workers(&self, state: &mut State, fx: &mut Effects) {
        let idle: Vec<u32> = state
            .workers
            .iter()
            .filter(|(_, s)| s.status == SlotState::Idle && s.link.is_some())
            .map(|(id, _)| *id)
            .collect();
        if idle.is_empty() || state.workers.values().all(|s| s.next.is_empty()) {
            return;
        }
        for id in idle {
            if state
                .workers
                .get(&id)
                .is_some_and(|s| s.status == SlotState::Idle)
            {
                self.feed_idle(state, id, fx);
            }
        }
    }

    /// Cancels job `key` if it waits (queued on a worker or given back). `None` when it does
    /// not wait here; otherwise true.
    pub(crate) fn cancel_waiting(
        &self,
        state: &mut State,
        key: CallKey,
        fx: &mut Effects,
    ) -> Option<bool> {
        if let Some(pos) = state.returned.iter().position(|j| j.key == key) {
            state.returned.remove(pos);
            fx.events.push(never_started(
                key,
                Outcome::Canceled,
                "canceled before it started".to_owned(),
            ));
            return Some(true);
        }
        let (id, pos) = state.workers.iter().find_map(|(id, s)| {
            s.next
                .iter()
                .position(|q| q.job.key == key)
                .map(|pos| (*id, pos))
        })?;
        let slot = state.workers.get_mut(&id)?;
        let revoked = revoke(slot.claim.as_ref(), &slot.next[pos]);
        if revoked {
            slot.next.remove(pos);
            fx.events.push(never_started(
                key,
                Outcome::Canceled,
                "canceled before it started".to_owned(),
            ));
        } else {
            // The worker started it: canceled once it is known running.
            slot.next[pos].cancel = Some("canceled".to_owned());
            tracing::debug!(
                worker = id,
                key,
                "queued job started already; canceling it once its start is reported"
            );
        }
        Some(true)
    }

    /// At shutdown: every job that waits (queued or given back) ends `canceled` without running.
    pub(crate) fn cancel_all_waiting(&self, state: &mut State, reason: &str, fx: &mut Effects) {
        let queued: Vec<u32> = state
            .workers
            .iter()
            .filter(|(_, s)| !s.next.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in queued {
            if let Some(slot) = state.workers.get_mut(&id) {
                for q in &mut slot.next {
                    q.cancel = Some(reason.to_owned());
                }
            }
            let _ = self.take_back(state, id, fx);
        }
        for job in state.returned.drain(..) {
            fx.events
                .push(never_started(job.key, Outcome::Canceled, reason.to_owned()));
        }
    }
}

/// Takes the queued job `q` back through its claim word; false when the worker started it.
fn revoke(claim: Option<&crate::claim::Claim>, q: &Queued) -> bool {
    claim.is_some_and(|c| c.revoke(q.word, q.job.key))
}
