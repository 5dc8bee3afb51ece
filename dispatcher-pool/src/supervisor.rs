//! The tasks that watch workers: one supervisor per worker (its process's exit, its job's
//! timeout, cancel, health pings, writing the backlog of its socket, ending it with SIGTERM, a
//! grace and SIGKILL), and the pool's maintenance task (pings, scale-down, age recycling).
//!
//! Jobs are written by `try_dispatch` and frames are read by the readers in the service's task;
//! the job a worker runs is `Slot::running`, under the state lock, and whoever takes it from
//! there (the reader on `Done`, the supervisor on timeout, cancel or death) reports its end, so
//! every job ends in exactly one `Finished`.

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher_core::call::now_epoch;
use dispatcher_core::pool::{CallKey, PoolEvent};
use dispatcher_core::time::sleep_until;
use dispatcher_core::Outcome;

use crate::pool::SlotState;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::sync::{mpsc, Notify};

use crate::error::{Error, Result};
use crate::limits;
use crate::link::{wait_writable, Socket};
use crate::pipeline::{Effects, TakeBack};
use crate::pool::Inner;
use crate::protocol::{encode, ToWorker};

/// What a worker's supervisor is told.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// End the job `key` if it still runs, with this outcome and error.
    Cancel(CallKey, Outcome, String),
    /// End the worker now, whatever it runs; its job ends with this outcome and error.
    End(Outcome, String),
    /// The job `key` started at `.1` and may run for `.2`.
    Deadline(CallKey, tokio::time::Instant, Duration),
    /// Ping the worker if it is idle.
    Ping,
    /// Ask the worker to exit.
    Stop,
    /// The connection is broken: end the worker (it is replaced).
    Replace(String),
    /// The worker closed its socket.
    Closed,
}

/// How a worker ended, or must be ended.
enum End {
    Stop,
    /// End the worker; the job `.0`, if it still runs, ends with outcome `.1` and error `.2`.
    Kill(Option<(CallKey, Outcome, String)>),
    Died,
    Exited(String),
}

impl Inner {
    /// Owns one worker: watches its process, enforces its job's deadline, pings it, and
    /// writes what its socket could not take at once. Jobs are written by `try_dispatch`, frames
    /// are read by `Readers` in the service's task; the job a worker runs is `Slot::running`,
    /// under the state lock, and whoever takes it from there reports its end.
    pub(crate) async fn supervise(
        self: Arc<Self>,
        id: u32,
        pid: u32,
        mut child: Child,
        wr: Arc<Socket>,
        flush: Arc<Notify>,
        mut cmds: mpsc::Receiver<Cmd>,
    ) {
        let end = self
            .watch(id, pid, &mut child, &wr, &flush, &mut cmds)
            .await;
        // A stopping worker gets no new job, and the job queued on it (if it has not started it)
        // runs elsewhere.
        {
            let mut state = self.lock();
            if let Some(slot) = state.workers.get_mut(&id) {
                slot.status = SlotState::Stopping;
            }
            let mut fx = Effects::default();
            let _ = self.take_back(&mut state, id, &mut fx);
            drop(state);
            fx.send(&self);
        }
        // The job (if any) is known now for good. Its `Done` may still reach the readers; then
        // they take the job out of the slot and report it, and this task reports nothing (see
        // below).
        let running_key = self.running_key(id);
        let report = self.end(id, pid, &mut child, &wr, end, running_key).await;
        // Whatever the task started dies with its worker.
        kill_group(pid);
        let min = self.config.min_workers;
        let (running, next) = {
            let mut state = self.lock();
            state.retired += 1;
            match state.workers.remove(&id) {
                Some(s) => (s.running, s.next),
                None => (None, Default::default()),
            }
        };
        // Queued jobs still here were started by the worker (they could not be taken back): they
        // ended with the worker, as the running one did.
        let lost = running
            .map(|r| r.key)
            .into_iter()
            .chain(next.into_iter().map(|q| q.job.key));
        for key in lost {
            let (outcome, error) = report.clone().unwrap_or_else(|| {
                (
                    Outcome::WorkerLost,
                    format!("worker {id} (pid {pid}) ended while running the job"),
                )
            });
            // The service logs the Call's end (one WARN line with the reason); this is the
            // worker's side of it.
            tracing::info!(worker = id, pid, key, %outcome, %error, "job ended with its worker");
            let _ = self
                .events
                .send(PoolEvent::Finished {
                    key,
                    outcome,
                    result: None,
                    error: Some(error),
                    at: now_epoch(),
                })
                .await;
        }
        self.grow_to(min);
    }

    /// Watches worker `id` (process `pid`) until it ends or must be ended; says how.
    async fn watch(
        &self,
        id: u32,
        pid: u32,
        child: &mut Child,
        wr: &Socket,
        flush: &Notify,
        cmds: &mut mpsc::Receiver<Cmd>,
    ) -> End {
        let mut deadline: Option<(CallKey, tokio::time::Instant, Duration)> = None;
        let mut ping: Option<(u64, tokio::time::Instant)> = None;
        let mut ping_n = 0u64;
        let limited = limits::any(&self.config);
        let mut limit_tick = tokio::time::interval(
            self.config
                .limit_check_interval
                .max(Duration::from_millis(10)),
        );
        limit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ping_deadline = ping.map(|(_, d)| d);
            let job_deadline = deadline.map(|(_, d, _)| d);
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Deadline(key, at, limit)) => {
                        // The job may have ended already: then there is nothing to time.
                        if self.runs(id, key) {
                            deadline = Some((key, at, limit));
                        }
                    }
                    Some(Cmd::Cancel(key, outcome, reason)) => {
                        if self.runs(id, key) && !self.over_already(id) {
                            break End::Kill(Some((key, outcome, reason)));
                        }
                    }
                    Some(Cmd::End(outcome, reason)) => {
                        break End::Kill(self.running_key(id).map(|key| (key, outcome, reason)));
                    }
                    Some(Cmd::Ping) => {
                        if ping.is_none() {
                            ping_n += 1;
                            match self.ping(id, ping_n) {
                                Ok(true) => ping = Some((ping_n, tokio::time::Instant::now() + self.config.health_timeout)),
                                Ok(false) => {}
                                Err(e) => {
                                    tracing::warn!(worker = id, error = %e, "could not ping the worker");
                                    break End::Kill(None);
                                }
                            }
                        }
                    }
                    Some(Cmd::Replace(why)) => {
                        tracing::warn!(worker = id, pid, "{why}; replacing the worker");
                        break End::Kill(None);
                    }
                    Some(Cmd::Closed) => break End::Died,
                    Some(Cmd::Stop) | None => break End::Stop,
                },
                () = flush.notified() => {
                    if let Err(e) = self.write_backlog(id, wr).await {
                        tracing::warn!(worker = id, error = %e, "could not write to the worker");
                        break End::Kill(None);
                    }
                }
                _ = sleep_until(job_deadline), if job_deadline.is_some() => {
                    if let Some((key, _, limit)) = deadline.take() {
                        if self.runs(id, key) && !self.over_already(id) {
                            break End::Kill(Some((key, Outcome::Timeout, format!("timed out after {:.3}s", limit.as_secs_f64()))));
                        }
                    }
                }
                _ = sleep_until(ping_deadline), if ping_deadline.is_some() => {
                    let Some((n, _)) = ping.take() else { continue };
                    // A job given after the ping is answered after it: wait for the job's end
                    // (or its timeout) instead.
                    if self.ping_unanswered(id, n) && !self.busy(id) {
                        tracing::warn!(worker = id, pid, "worker did not answer a health ping in time; replacing it");
                        break End::Kill(None);
                    }
                }
                _ = limit_tick.tick(), if limited => {
                    if let Some(key) = self.running_key(id) {
                        if let Some(reason) = limits::over_limits(&self.config, id, pid) {
                            break End::Kill(Some((key, Outcome::WorkerLost, reason)));
                        }
                    }
                }
                status = child.wait() => {
                    let how = status.map(describe_exit).unwrap_or_else(|e| e.to_string());
                    break End::Exited(how);
                }
            }
        }
    }

    /// Ends worker `id`'s process as `end` says. When it ran the job `running_key`, says how
    /// that job ended.
    async fn end(
        &self,
        id: u32,
        pid: u32,
        child: &mut Child,
        wr: &Socket,
        end: End,
        running_key: Option<CallKey>,
    ) -> Option<(Outcome, String)> {
        match end {
            End::Stop => {
                let mut stop = Vec::new();
                if encode(&ToWorker::Stop, &mut stop).is_ok() {
                    let sent = self.send_frame(id, &stop).is_ok();
                    if sent {
                        let grace = self.config.kill_grace;
                        let _ = tokio::time::timeout(grace, self.write_backlog(id, wr)).await;
                    }
                }
                let grace = self.config.kill_grace;
                if tokio::time::timeout(grace * 2, child.wait()).await.is_err() {
                    terminate(child, pid, grace).await;
                }
                running_key.map(|_| {
                    (
                        Outcome::WorkerLost,
                        format!("worker {id} stopped while running the job"),
                    )
                })
            }
            End::Kill(reason) => {
                // A broken socket often means the worker just died: if it did, say how.
                let died = match &reason {
                    Some(_) => None,
                    None => {
                        match tokio::time::timeout(Duration::from_millis(100), child.wait()).await {
                            Ok(Ok(status)) => Some(describe_exit(status)),
                            _ => None,
                        }
                    }
                };
                terminate(child, pid, self.config.kill_grace).await;
                match reason {
                    Some((key, outcome, error)) if running_key == Some(key) => {
                        Some((outcome, error))
                    }
                    _ => running_key.map(|_| {
                        let error = match &died {
                            Some(how) => format!(
                                "worker {id} (pid {pid}) exited with {how} while running the job"
                            ),
                            None => format!("worker {id} (pid {pid}) was replaced"),
                        };
                        (Outcome::WorkerLost, error)
                    }),
                }
            }
            End::Died => {
                let how = match tokio::time::timeout(Duration::from_secs(1), child.wait()).await {
                    Ok(Ok(s)) => describe_exit(s),
                    _ => {
                        terminate(child, pid, Duration::from_millis(100)).await;
                        "closed its socket".to_owned()
                    }
                };
                running_key.map(|_| {
                    (
                        Outcome::WorkerLost,
                        format!("worker {id} (pid {pid}) {how} while running the job"),
                    )
                })
            }
            End::Exited(how) => running_key.map(|_| {
                (
                    Outcome::WorkerLost,
                    format!("worker {id} (pid {pid}) exited with {how} while running the job"),
                )
            }),
        }
    }

    /// True when worker `id`'s running job is over though its report has not been read: the
    /// worker started the job queued behind it. Else the queued job (if any) is taken back, so
    /// that ending the worker for its running job costs the queued one nothing.
    fn over_already(&self, id: u32) -> bool {
        let mut state = self.lock();
        let mut fx = Effects::default();
        let started = self.take_back(&mut state, id, &mut fx) == TakeBack::Started;
        drop(state);
        fx.send(self);
        started
    }

    /// True when worker `id` runs the job `key`.
    fn runs(&self, id: u32, key: CallKey) -> bool {
        self.running_key(id) == Some(key)
    }

    /// The job worker `id` runs.
    fn running_key(&self, id: u32) -> Option<CallKey> {
        self.lock()
            .workers
            .get(&id)
            .and_then(|s| s.running.as_ref().map(|r| r.key))
    }

    /// True when worker `id` runs a job.
    fn busy(&self, id: u32) -> bool {
        self.running_key(id).is_some()
    }

    /// Sends a ping to worker `id` when it is idle; true when sent.
    fn ping(&self, id: u32, n: u64) -> Result<bool> {
        let mut frame = Vec::with_capacity(32);
        encode(&ToWorker::Ping { n }, &mut frame)?;
        let mut state = self.lock();
        let Some(slot) = state.workers.get_mut(&id) else {
            return Ok(false);
        };
        if slot.running.is_some() || slot.status != SlotState::Idle {
            return Ok(false);
        }
        let Some(link) = slot.link.as_mut() else {
            return Ok(false);
        };
        link.send(&frame).map_err(Error::Io)?;
        slot.ping = Some(n);
        Ok(true)
    }

    /// True when worker `id` has not answered ping `n`.
    fn ping_unanswered(&self, id: u32, n: u64) -> bool {
        self.lock()
            .workers
            .get(&id)
            .is_some_and(|s| s.ping == Some(n))
    }

    /// Writes (or queues) a frame to worker `id`.
    fn send_frame(&self, id: u32, frame: &[u8]) -> Result<()> {
        let mut state = self.lock();
        match state.workers.get_mut(&id).and_then(|s| s.link.as_mut()) {
            Some(link) => link.send(frame).map_err(Error::Io),
            None => Ok(()),
        }
    }

    /// Writes worker `id`'s backlog, waiting for room in its socket as needed.
    async fn write_backlog(&self, id: u32, wr: &Socket) -> Result<()> {
        wait_writable(wr, || {
            let mut state = self.lock();
            match state.workers.get_mut(&id).and_then(|s| s.link.as_mut()) {
                Some(link) => link.write_backlog(),
                None => Ok(true),
            }
        })
        .await
        .map_err(Error::Io)
    }

    /// Periodic work: pings, scale-down, age recycling.
    pub(crate) async fn maintain(self: Arc<Self>) {
        let period = self
            .config
            .health_interval
            .min(self.config.scale_down_after)
            .max(Duration::from_millis(50));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_ping = Instant::now();
        loop {
            tick.tick().await;
            if self.stopping.load(Ordering::Relaxed) {
                return;
            }
            let ping_now = last_ping.elapsed() >= self.config.health_interval;
            if ping_now {
                last_ping = Instant::now();
            }
            let mut to_ping = Vec::new();
            let mut to_stop = Vec::new();
            {
                let mut state = self.lock();
                let mut live = self.live(&state);
                for (id, slot) in state.workers.iter_mut() {
                    if slot.status != SlotState::Idle {
                        continue;
                    }
                    let Some(cmd) = slot.cmd.clone() else {
                        continue;
                    };
                    let too_old = self
                        .config
                        .max_worker_age
                        .is_some_and(|a| slot.started.elapsed() >= a);
                    let surplus = live > self.config.min_workers
                        && slot.idle_since.elapsed() >= self.config.scale_down_after;
                    if too_old || surplus {
                        slot.status = SlotState::Stopping;
                        live -= 1;
                        tracing::debug!(worker = id, too_old, surplus, "stopping an idle worker");
                        to_stop.push(cmd);
                    } else if ping_now {
                        to_ping.push(cmd);
                    }
                }
            }
            for c in to_stop {
                let _ = c.try_send(Cmd::Stop);
            }
            for c in to_ping {
                let _ = c.try_send(Cmd::Ping);
            }
        }
    }
}

/// Sends `cmd` to a supervisor without waiting (from a task when its channel is full).
pub(crate) fn tell(to: mpsc::Sender<Cmd>, cmd: Cmd) {
    if let Err(mpsc::error::TrySendError::Full(c)) = to.try_send(cmd) {
        tokio::spawn(async move {
            let _ = to.send(c).await;
        });
    }
}

/// How a process ended, for logs and a lost job's error: `signal 9 (SIGKILL)`, `exit code 1`.
pub(crate) fn describe_exit(status: std::process::ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        let name = Signal::try_from(sig)
            .map(|s| s.as_str())
            .unwrap_or("unknown");
        format!("signal {sig} ({name})")
    } else {
        match status.code() {
            Some(c) => format!("exit code {c}"),
            None => "an unknown status".to_owned(),
        }
    }
}

/// SIGTERM, wait up to `grace`, SIGKILL, wait.
async fn terminate(child: &mut Child, pid: u32, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if pid > 0 {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// SIGKILLs the process group `pgid` (a worker's: its pid), ignoring a group already gone.
fn kill_group(pgid: u32) {
    if pgid > 1 {
        let _ = nix::sys::signal::killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
    }
}
