//! [`ProcessPool`]: the parent side. Starts workers, feeds them jobs over their sockets, enforces
//! timeouts, cancels, detects deaths, recycles, scales and checks health.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dispatcher_core::call::now_epoch;
use dispatcher_core::pool::{CallKey, Dispatched, Job, Pool, PoolEvent, PoolEvents};
use dispatcher_core::{Outcome, WorkerState, WorkerStatus};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::protocol::{
    encode, encode_run, FromWorker, ToWorker, ENV_SOCKET, ENV_TOKEN, ENV_WORKER_ID, MAX_FRAME,
};

/// Settings of a [`ProcessPool`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProcessPoolConfig {
    /// The worker program. Default: this executable (`std::env::current_exe`).
    pub program: Option<PathBuf>,
    /// Arguments given to the worker program.
    pub args: Vec<OsString>,
    /// Extra environment for workers.
    pub env: Vec<(OsString, OsString)>,
    /// Workers kept at all times. Default 4.
    pub min_workers: usize,
    /// Most workers under queue pressure. Default 4.
    pub max_workers: usize,
    /// Replace a worker after it finished this many Calls. Default: never.
    pub max_tasks_per_worker: Option<u64>,
    /// Replace a worker once it is this old (when idle). Default: never.
    pub max_worker_age: Option<Duration>,
    /// A worker above `min_workers` idle this long is stopped. Default 30 s.
    pub scale_down_after: Duration,
    /// Between SIGTERM and SIGKILL when a worker is ended. Default 1 s.
    pub kill_grace: Duration,
    /// How long a new worker may take to connect. Default 10 s.
    pub start_timeout: Duration,
    /// How often idle workers are pinged. Default 5 s.
    pub health_interval: Duration,
    /// How long a ping may take before the worker is replaced. Default 2 s.
    pub health_timeout: Duration,
    /// A worker whose resident memory (RSS) grows beyond this many bytes while it runs a Call is
    /// ended, and the Call is `worker_lost` with a reason naming the limit. Default: no limit.
    pub max_worker_rss: Option<u64>,
    /// Most processes a worker and what it starts may have at once (counted in the worker's own
    /// process group); beyond that the whole group is killed and the Call is `worker_lost`.
    /// Default: no limit. Whatever the limit, every process a worker started in its group is
    /// killed with the worker.
    pub max_worker_processes: Option<usize>,
    /// How often a busy worker's memory and processes are checked against the limits.
    /// Default 100 ms.
    pub limit_check_interval: Duration,
}

impl Default for ProcessPoolConfig {
    fn default() -> Self {
        ProcessPoolConfig {
            program: None,
            args: Vec::new(),
            env: Vec::new(),
            min_workers: 4,
            max_workers: 4,
            max_tasks_per_worker: None,
            max_worker_age: None,
            scale_down_after: Duration::from_secs(30),
            kill_grace: Duration::from_secs(1),
            start_timeout: Duration::from_secs(10),
            health_interval: Duration::from_secs(5),
            health_timeout: Duration::from_secs(2),
            max_worker_rss: None,
            max_worker_processes: None,
            limit_check_interval: Duration::from_millis(100),
        }
    }
}

/// A pool of worker processes: the application's own executable started again in worker mode
/// (see [`crate::run_if_worker`]).
///
/// A task's timeout, a cancel, or an unanswered health ping ends the worker (SIGTERM, a short
/// grace, SIGKILL) and a new one takes its place; a worker that dies while running a Call makes
/// that Call `worker_lost`. Workers die with the service, even when it is killed with SIGKILL.
///
/// The hot path stays in the service's task: [`Pool::try_dispatch`] writes the job straight into
/// an idle worker's socket, and [`Pool::poll_events`] reads the workers' sockets, so a Call
/// costs no hop through another task. One supervisor task per worker handles the rest (its
/// process's exit, the job's timeout, cancel, pings, and writing frames too large for the
/// socket at once).
#[derive(Debug)]
pub struct ProcessPool {
    config: ProcessPoolConfig,
    inner: Option<Arc<Inner>>,
    /// Reused buffer for encoding `Run` frames.
    wbuf: Vec<u8>,
    /// The workers' sockets, read in the service's task.
    readers: Readers,
}

impl ProcessPool {
    /// A pool of exactly `workers` workers running this executable.
    pub fn new(workers: usize) -> Self {
        let n = workers.max(1);
        ProcessPool::with_config(ProcessPoolConfig {
            min_workers: n,
            max_workers: n,
            ..ProcessPoolConfig::default()
        })
    }

    /// A pool with these settings.
    pub fn with_config(config: ProcessPoolConfig) -> Self {
        ProcessPool {
            config,
            inner: None,
            wbuf: Vec::with_capacity(1024),
            readers: Readers::default(),
        }
    }

    /// Runs `program` as the worker instead of this executable.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.config.program = Some(program.into());
        self
    }

    /// The settings.
    pub fn config(&self) -> &ProcessPoolConfig {
        &self.config
    }
}

/// What a worker's supervisor is told.
#[derive(Debug)]
enum Cmd {
    /// End the job `key` if it still runs, with this outcome and error.
    Cancel(CallKey, Outcome, String),
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

/// The job a worker runs.
#[derive(Debug)]
struct Running {
    key: CallKey,
    uuid: String,
    task: &'static str,
}

/// The sending side of a worker's socket.
///
/// Frames are written by whoever holds the pool's state lock, without waiting: the service
/// (`try_dispatch`) writes a job straight into the socket, so a dispatch costs no hop through
/// another task. What the socket cannot take at once goes to `backlog`, which the worker's
/// supervisor writes when the socket has room; while it is not empty, later frames queue behind
/// it, so frames never interleave.
#[derive(Debug)]
struct Link {
    wr: Arc<OwnedWriteHalf>,
    backlog: Vec<u8>,
    flush: Arc<Notify>,
}

impl Link {
    /// Writes `frame` now or queues it behind the backlog. An error means nothing of it was
    /// written and the connection is broken.
    fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        if !self.backlog.is_empty() {
            self.backlog.extend_from_slice(frame);
            return Ok(());
        }
        let mut written = 0;
        while written < frame.len() {
            match self.wr.try_write(&frame[written..]) {
                Ok(0) => {
                    if written == 0 {
                        return Err(std::io::ErrorKind::WriteZero.into());
                    }
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Part of the frame is out: the rest goes to the backlog, whose writer meets
                // the same error and ends the worker.
                Err(_) if written > 0 => break,
                Err(e) => return Err(e),
            }
        }
        if written < frame.len() {
            self.backlog.extend_from_slice(&frame[written..]);
            self.flush.notify_one();
        }
        Ok(())
    }

    /// Writes as much of the backlog as the socket takes now; true when it is empty.
    fn write_backlog(&mut self) -> std::io::Result<bool> {
        while !self.backlog.is_empty() {
            match self.wr.try_write(&self.backlog) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.backlog.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

#[derive(Debug)]
struct Slot {
    pid: u32,
    status: WorkerState,
    running: Option<Running>,
    finished: u64,
    started: Instant,
    idle_since: Instant,
    cmd: Option<mpsc::Sender<Cmd>>,
    link: Option<Link>,
    /// The health ping sent and not answered yet.
    ping: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    workers: BTreeMap<u32, Slot>,
    next_id: u32,
}

#[derive(Debug)]
struct Inner {
    config: ProcessPoolConfig,
    program: PathBuf,
    events: PoolEvents,
    state: Mutex<State>,
    hello: Mutex<HashMap<u32, oneshot::Sender<UnixStream>>>,
    socket_dir: PathBuf,
    socket_path: PathBuf,
    token: String,
    stopping: AtomicBool,
    spawn_failures: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The first failure to start a worker while the pool itself is starting.
    startup_error: Mutex<Option<Error>>,
    started: AtomicBool,
    /// Hands the reading side of each new worker's socket to the pool's [`Readers`].
    conns: mpsc::UnboundedSender<Conn>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Workers counted toward the size (starting, idle, busy; not stopping).
    fn live(&self, state: &State) -> usize {
        state
            .workers
            .values()
            .filter(|s| s.status != WorkerState::Stopping)
            .count()
    }

    /// Starts workers until `want` are live (never above `max_workers`).
    fn grow_to(self: &Arc<Self>, want: usize) {
        if self.stopping.load(Ordering::Relaxed) {
            return;
        }
        let want = want.min(self.config.max_workers);
        let mut state = self.lock();
        let live = self.live(&state);
        for _ in live..want {
            let id = state.next_id;
            state.next_id += 1;
            let now = Instant::now();
            state.workers.insert(
                id,
                Slot {
                    pid: 0,
                    status: WorkerState::Starting,
                    running: None,
                    finished: 0,
                    started: now,
                    idle_since: now,
                    cmd: None,
                    link: None,
                    ping: None,
                },
            );
            let inner = self.clone();
            tokio::spawn(async move { inner.start_worker(id).await });
        }
    }

    async fn start_worker(self: Arc<Self>, id: u32) {
        match self.clone().launch(id).await {
            Ok(()) => {
                self.spawn_failures.store(0, Ordering::Relaxed);
            }
            Err(e) => {
                if !self.started.load(Ordering::Relaxed) {
                    self.lock().workers.remove(&id);
                    let mut first = self.startup_error.lock().unwrap_or_else(|p| p.into_inner());
                    first.get_or_insert(e);
                    return;
                }
                let failures = self.spawn_failures.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(worker = id, error = %e, failures, "could not start a worker");
                self.lock().workers.remove(&id);
                // Back off before trying again, so a broken program does not spin.
                let wait = Duration::from_millis(100 * (1 << failures.min(6)));
                tokio::time::sleep(wait).await;
                self.grow_to(self.config.min_workers);
            }
        }
    }

    async fn launch(self: Arc<Self>, id: u32) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.hello
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.config.args)
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .env(ENV_SOCKET, &self.socket_path)
            .env(ENV_WORKER_ID, id.to_string())
            .env(ENV_TOKEN, &self.token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group: whatever the task starts can be counted and killed with it.
            .process_group(0);
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            program: self.program.display().to_string(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_output(out, id, "stdout"));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_output(err, id, "stderr"));
        }
        let timeout = self.config.start_timeout;
        let stream = tokio::select! {
            s = rx => s.ok(),
            status = child.wait() => {
                self.hello.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                return Err(Error::Environment(format!(
                    "worker {id} (pid {pid}) exited with {} before connecting; does the program call `dispatcher_pool::run_if_worker` first thing in `main`? (its stderr is in the log)",
                    status.map(describe_exit).unwrap_or_else(|e| e.to_string())
                )));
            }
            _ = tokio::time::sleep(timeout) => None,
        };
        let Some(stream) = stream else {
            self.hello
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            let _ = child.start_kill();
            return Err(Error::NoHello {
                worker_id: id,
                pid,
                secs: timeout.as_secs_f64(),
            });
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let cmd_tx_reader = cmd_tx.clone();
        let (rd, wr) = stream.into_split();
        let wr = Arc::new(wr);
        let flush = Arc::new(Notify::new());
        {
            let mut state = self.lock();
            match state.workers.get_mut(&id) {
                Some(slot) => {
                    slot.pid = pid;
                    slot.status = WorkerState::Idle;
                    slot.cmd = Some(cmd_tx);
                    slot.link = Some(Link {
                        wr: wr.clone(),
                        backlog: Vec::new(),
                        flush: flush.clone(),
                    });
                    slot.started = Instant::now();
                    slot.idle_since = Instant::now();
                }
                None => return Ok(()), // removed meanwhile (shutdown); kill_on_drop ends it
            }
        }
        let _ = self.conns.send(Conn {
            id,
            frames: FrameReader::new(rd),
            cmd: cmd_tx_reader,
        });
        tracing::debug!(worker = id, pid, "worker ready");
        let _ = self.events.send(PoolEvent::Ready).await;
        tokio::spawn(self.supervise(id, pid, child, wr, flush, cmd_rx));
        Ok(())
    }

    /// Owns one worker: watches its process, enforces its job's deadline, pings it, and
    /// writes what its socket could not take at once. Jobs are written by `try_dispatch`, frames
    /// are read by [`Readers`] in the service's task; the job a worker runs is `Slot::running`,
    /// under the state lock, and whoever takes it from there reports its end.
    async fn supervise(
        self: Arc<Self>,
        id: u32,
        pid: u32,
        mut child: Child,
        wr: Arc<OwnedWriteHalf>,
        flush: Arc<Notify>,
        mut cmds: mpsc::Receiver<Cmd>,
    ) {
        let mut deadline: Option<(CallKey, tokio::time::Instant, Duration)> = None;
        let mut ping: Option<(u64, tokio::time::Instant)> = None;
        let mut ping_n = 0u64;
        let limited =
            self.config.max_worker_rss.is_some() || self.config.max_worker_processes.is_some();
        let mut limit_tick = tokio::time::interval(
            self.config
                .limit_check_interval
                .max(Duration::from_millis(10)),
        );
        limit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // How this worker ended.
        let end: End = loop {
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
                        if self.runs(id, key) {
                            break End::Kill(Some((key, outcome, reason)));
                        }
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
                    if let Err(e) = self.write_backlog(id, &wr).await {
                        tracing::warn!(worker = id, error = %e, "could not write to the worker");
                        break End::Kill(None);
                    }
                }
                _ = sleep_until(job_deadline), if job_deadline.is_some() => {
                    if let Some((key, _, limit)) = deadline.take() {
                        if self.runs(id, key) {
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
                        if let Some(reason) = self.over_limits(id, pid) {
                            break End::Kill(Some((key, Outcome::WorkerLost, reason)));
                        }
                    }
                }
                status = child.wait() => {
                    let how = status.map(describe_exit).unwrap_or_else(|e| e.to_string());
                    break End::Exited(how);
                }
            }
        };
        self.mark_stopping(id);
        // The job (if any) is known now for good: a stopping worker gets no new one, and its
        // `Done` can no longer arrive (this task stopped reading).
        let running_key = self.running_key(id);
        let report: Option<(Outcome, String)> = match end {
            End::Stop => {
                let mut stop = Vec::new();
                if encode(&ToWorker::Stop, &mut stop).is_ok() {
                    let sent = self.send_frame(id, &stop).is_ok();
                    if sent {
                        let grace = self.config.kill_grace;
                        let _ = tokio::time::timeout(grace, self.write_backlog(id, &wr)).await;
                    }
                }
                let grace = self.config.kill_grace;
                if tokio::time::timeout(grace * 2, child.wait()).await.is_err() {
                    terminate(&mut child, pid, grace).await;
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
                terminate(&mut child, pid, self.config.kill_grace).await;
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
                        terminate(&mut child, pid, Duration::from_millis(100)).await;
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
        };
        // Whatever the task started dies with its worker.
        kill_group(pid);
        let min = self.config.min_workers;
        let running = {
            let mut state = self.lock();
            state.workers.remove(&id).and_then(|s| s.running)
        };
        if let (Some(r), Some((outcome, error))) = (running, report) {
            let key = r.key;
            tracing::warn!(worker = id, pid, key, %outcome, %error, "job ended with its worker");
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

    /// Why worker `id` (process `pid`) must be ended now, if it broke a limit.
    fn over_limits(&self, id: u32, pid: u32) -> Option<String> {
        if let Some(limit) = self.config.max_worker_rss {
            if let Some(rss) = rss_bytes(pid) {
                if rss > limit {
                    return Some(format!(
                        "worker {id} (pid {pid}) exceeded its memory limit: RSS {:.1} MB > max_worker_rss {:.1} MB",
                        rss as f64 / 1_048_576.0,
                        limit as f64 / 1_048_576.0
                    ));
                }
            }
        }
        if let Some(limit) = self.config.max_worker_processes {
            let n = group_size(pid);
            if n > limit {
                return Some(format!(
                    "worker {id} (pid {pid}) has {n} processes, more than max_worker_processes {limit}; its process group was killed"
                ));
            }
        }
        None
    }

    /// A job finished on worker `id`: mark it idle. `None` when `key` is not the job it runs;
    /// else whether the worker must be recycled now.
    fn job_done(&self, id: u32, key: CallKey) -> Option<bool> {
        let mut state = self.lock();
        let slot = state.workers.get_mut(&id)?;
        if slot.running.as_ref().is_none_or(|r| r.key != key) {
            return None;
        }
        slot.running = None;
        slot.finished += 1;
        slot.idle_since = Instant::now();
        let recycle = self
            .config
            .max_tasks_per_worker
            .is_some_and(|n| slot.finished >= n)
            || self
                .config
                .max_worker_age
                .is_some_and(|age| slot.started.elapsed() >= age);
        if slot.status == WorkerState::Stopping {
            // Being ended (timeout, cancel, shutdown) as the job finished: it stays stopping.
            return Some(false);
        }
        slot.status = if recycle {
            WorkerState::Stopping
        } else {
            WorkerState::Idle
        };
        Some(recycle)
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
        if slot.running.is_some() || slot.status != WorkerState::Idle {
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

    /// Worker `id` answered ping `n`.
    fn pong(&self, id: u32, n: u64) {
        if let Some(slot) = self.lock().workers.get_mut(&id) {
            if slot.ping == Some(n) {
                slot.ping = None;
            }
        }
    }

    /// Handles one frame from worker `id`; events for the service go to `out`.
    fn on_frame(&self, conn: &Conn, frame: FromWorker, out: &mut Vec<PoolEvent>) {
        let id = conn.id;
        match frame {
            FromWorker::Done {
                key,
                outcome,
                result,
                error,
            } => match self.job_done(id, key) {
                Some(recycle) => {
                    out.push(PoolEvent::Finished {
                        key,
                        outcome,
                        result,
                        error,
                        at: now_epoch(),
                    });
                    if recycle {
                        tell(conn.cmd.clone(), Cmd::Stop);
                    }
                }
                None => {
                    tracing::warn!(worker = id, key, "worker reported a job it was not given");
                }
            },
            FromWorker::Pong { n } => self.pong(id, n),
            FromWorker::Submit {
                parent_uuid,
                message,
            } => out.push(PoolEvent::Submit {
                parent_uuid,
                message,
            }),
            FromWorker::Hello { .. } => {}
        }
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
    async fn write_backlog(&self, id: u32, wr: &OwnedWriteHalf) -> Result<()> {
        loop {
            let done = {
                let mut state = self.lock();
                match state.workers.get_mut(&id).and_then(|s| s.link.as_mut()) {
                    Some(link) => link.write_backlog().map_err(Error::Io)?,
                    None => true,
                }
            };
            if done {
                return Ok(());
            }
            wr.writable().await.map_err(Error::Io)?;
        }
    }

    fn mark_stopping(&self, id: u32) {
        if let Some(slot) = self.lock().workers.get_mut(&id) {
            slot.status = WorkerState::Stopping;
        }
    }

    /// Periodic work: pings, scale-down, age recycling.
    async fn maintain(self: Arc<Self>) {
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
                    if slot.status != WorkerState::Idle {
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
                        slot.status = WorkerState::Stopping;
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

    /// Accepts worker connections and hands each to the worker that is waiting for it.
    async fn accept(self: Arc<Self>, listener: UnixListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let inner = self.clone();
            tokio::spawn(async move {
                let mut stream = stream;
                let hello =
                    tokio::time::timeout(Duration::from_secs(5), read_hello(&mut stream)).await;
                match hello {
                    Ok(Ok((worker_id, token))) if token == inner.token => {
                        let waiting = inner
                            .hello
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&worker_id);
                        if let Some(tx) = waiting {
                            let _ = tx.send(stream);
                        }
                    }
                    _ => tracing::warn!("rejected a connection on the worker socket (bad hello)"),
                }
            });
        }
    }
}

enum End {
    Stop,
    /// End the worker; the job `.0`, if it still runs, ends with outcome `.1` and error `.2`.
    Kill(Option<(CallKey, Outcome, String)>),
    Died,
    Exited(String),
}

async fn read_hello(stream: &mut UnixStream) -> Result<(u32, String)> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.map_err(Error::Io)?;
    let n = u32::from_le_bytes(len) as usize;
    if n > 4096 {
        return Err(Error::FrameTooLarge(n));
    }
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).await.map_err(Error::Io)?;
    match serde_json::from_slice(&buf).map_err(Error::Decode)? {
        FromWorker::Hello {
            worker_id, token, ..
        } => Ok((worker_id, token)),
        _ => Err(Error::Environment("first frame was not a hello".into())),
    }
}

/// The reading side of one worker's socket.
struct Conn {
    id: u32,
    frames: FrameReader<OwnedReadHalf>,
    /// The worker's supervisor.
    cmd: mpsc::Sender<Cmd>,
}

/// Most frames taken from one worker in one poll, so one chatty worker cannot starve the
/// others (nor the service loop).
const FRAMES_PER_POLL: usize = 64;

/// The reading sides of all workers' sockets, owned by the pool and polled in the service's task
/// ([`Pool::poll_events`]): a finished job reaches the service without a hop through another
/// task, and the service answers it with the next job at once.
#[derive(Default)]
struct Readers {
    conns: Vec<Conn>,
    /// New workers' sockets (from `Inner::launch`).
    new: Option<mpsc::UnboundedReceiver<Conn>>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field(
                "workers",
                &self.conns.iter().map(|c| c.id).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Readers {
    /// Reads every frame available now; `Ready` when that made events for the service.
    fn poll(&mut self, inner: &Inner, cx: &mut Context<'_>, out: &mut Vec<PoolEvent>) -> Poll<()> {
        if let Some(new) = &mut self.new {
            while let Poll::Ready(Some(conn)) = new.poll_recv(cx) {
                self.conns.push(conn);
            }
        }
        let before = out.len();
        self.conns.retain_mut(|conn| {
            for _ in 0..FRAMES_PER_POLL {
                match conn.frames.poll_frame(cx) {
                    Poll::Pending => return true,
                    Poll::Ready(Ok(Some(frame))) => inner.on_frame(conn, frame, out),
                    Poll::Ready(Ok(None)) => {
                        tell(conn.cmd.clone(), Cmd::Closed);
                        return false;
                    }
                    Poll::Ready(Err(e)) => {
                        let why = format!("bad frame from worker {}: {e}", conn.id);
                        tell(conn.cmd.clone(), Cmd::Replace(why));
                        return false;
                    }
                }
            }
            // More may be waiting: come back soon.
            cx.waker().wake_by_ref();
            true
        });
        if out.len() > before {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Size of a frame reader's buffer; it grows for larger frames and shrinks back after them.
const READ_BUFFER: usize = 64 * 1024;

/// Reads frames; cancel-safe (bytes read are kept in the buffer).
struct FrameReader<R> {
    r: R,
    /// `buf[start..end]` is read and not parsed yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn new(r: R) -> Self {
        FrameReader {
            r,
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
        }
    }

    /// The length announced by the frame at `start`, once its prefix is in.
    fn announced(&self) -> Option<usize> {
        let p = self.buf.get(self.start..self.start + 4)?;
        (self.end - self.start >= 4).then(|| u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize)
    }

    fn parse(&mut self) -> Result<Option<FromWorker>> {
        let Some(n) = self.announced() else {
            return Ok(None);
        };
        if n > MAX_FRAME {
            return Err(Error::FrameTooLarge(n));
        }
        if self.end - self.start < 4 + n {
            return Ok(None);
        }
        let body = &self.buf[self.start + 4..self.start + 4 + n];
        let msg = serde_json::from_slice(body).map_err(Error::Decode)?;
        self.start += 4 + n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > READ_BUFFER {
                self.buf.truncate(READ_BUFFER);
                self.buf.shrink_to_fit();
            }
        }
        Ok(Some(msg))
    }

    /// The next frame; `Ok(None)` at the end of the stream.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<FromWorker>>> {
        loop {
            if let Some(m) = self.parse()? {
                return Poll::Ready(Ok(Some(m)));
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                // A frame larger than the buffer (its size is checked by `parse`).
                let need = self.announced().map_or(0, |n| n + 4);
                let len = need.max(self.buf.len() * 2);
                self.buf.resize(len, 0);
            }
            let mut rb = ReadBuf::new(&mut self.buf[self.end..]);
            match Pin::new(&mut self.r).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                Poll::Ready(Ok(())) => {}
            }
            let n = rb.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(None));
            }
            self.end += n;
        }
    }
}

/// Logs a worker's stdout or stderr line by line, tagged with the worker id.
async fn forward_output(mut out: impl AsyncRead + Unpin, worker: u32, stream: &'static str) {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        let n = match out.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            tracing::info!(target: "dispatcher_pool::worker_output", worker, stream, "{text}");
        }
        if buf.len() > 8192 {
            let text = String::from_utf8_lossy(&buf);
            tracing::info!(target: "dispatcher_pool::worker_output", worker, stream, "{text}");
            buf.clear();
        }
    }
    if !buf.is_empty() {
        let text = String::from_utf8_lossy(&buf);
        tracing::info!(target: "dispatcher_pool::worker_output", worker, stream, "{text}");
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
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

/// SIGKILLs the process group `pgid` (a worker's: its pid), ignoring a group already gone.
fn kill_group(pgid: u32) {
    if pgid > 1 {
        let _ = nix::sys::signal::killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
    }
}

/// Resident memory of `pid` in bytes, from `/proc/<pid>/status` (`VmRSS`).
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Live (not zombie) processes in process group `pgid`, from `/proc/*/stat`.
fn group_size(pgid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // Fields after the command name (which may hold spaces) start after the last ')'.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let mut f = rest.split_whitespace();
            let state = f.next();
            let _ppid = f.next();
            let pgrp = f.next().and_then(|p| p.parse::<u32>().ok());
            state != Some("Z") && pgrp == Some(pgid)
        })
        .count()
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

/// Sends `cmd` to a supervisor without waiting (from a task when its channel is full).
fn tell(to: mpsc::Sender<Cmd>, cmd: Cmd) {
    if let Err(mpsc::error::TrySendError::Full(c)) = to.try_send(cmd) {
        tokio::spawn(async move {
            let _ = to.send(c).await;
        });
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[async_trait]
impl Pool for ProcessPool {
    async fn start(&mut self, events: PoolEvents) -> dispatcher_core::Result<()> {
        if crate::worker::is_worker() {
            return Err(Error::WorkerStartingPool { var: ENV_SOCKET }.into());
        }
        let c = self.config.clone();
        if c.max_workers == 0 || c.min_workers > c.max_workers {
            return Err(Error::Config(format!(
                "min_workers ({}) must not exceed max_workers ({}), and max_workers must be at least 1",
                c.min_workers, c.max_workers
            ))
            .into());
        }
        let program = match &c.program {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(Error::Io)?,
        };
        let socket_dir =
            std::env::temp_dir().join(format!("dispatcher-pool-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&socket_dir).map_err(Error::Io)?;
        std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(Error::Io)?;
        let socket_path = socket_dir.join("pool.sock");
        let listener = UnixListener::bind(&socket_path).map_err(Error::Io)?;
        let (conns_tx, conns_rx) = mpsc::unbounded_channel();
        self.readers = Readers {
            conns: Vec::new(),
            new: Some(conns_rx),
        };
        let inner = Arc::new(Inner {
            config: c.clone(),
            program,
            events,
            state: Mutex::new(State::default()),
            hello: Mutex::new(HashMap::new()),
            socket_dir,
            socket_path,
            token: uuid::Uuid::new_v4().simple().to_string(),
            stopping: AtomicBool::new(false),
            spawn_failures: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
            startup_error: Mutex::new(None),
            started: AtomicBool::new(false),
            conns: conns_tx,
        });
        let acceptor = tokio::spawn(inner.clone().accept(listener));
        let maintainer = tokio::spawn(inner.clone().maintain());
        inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([acceptor, maintainer]);
        inner.grow_to(c.min_workers);
        self.inner = Some(inner.clone());
        // Wait for the first workers, so that a program that cannot be a worker fails here,
        // loudly, instead of being restarted in a loop.
        let limit = Instant::now() + c.start_timeout + Duration::from_secs(2);
        loop {
            let failed = inner
                .startup_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(e) = failed {
                self.shutdown(Duration::ZERO).await;
                return Err(e.into());
            }
            let ready = {
                let state = inner.lock();
                state
                    .workers
                    .values()
                    .filter(|s| s.status == WorkerState::Idle)
                    .count()
            };
            if ready >= c.min_workers {
                break;
            }
            if Instant::now() >= limit {
                self.shutdown(Duration::ZERO).await;
                return Err(Error::Config(format!(
                    "only {ready} of {} workers started within {:?}",
                    c.min_workers, c.start_timeout
                ))
                .into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        inner.started.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn try_dispatch(&mut self, job: Job) -> std::result::Result<Dispatched, Job> {
        let Some(inner) = &self.inner else {
            return Err(job);
        };
        // Encoded before taking the lock; written into the worker's socket under it.
        self.wbuf.clear();
        let encoded = encode_run(
            job.key,
            &job.uuid,
            job.task.name(),
            &job.args,
            &mut self.wbuf,
        );
        let mut state = inner.lock();
        let mut broken = Vec::new();
        let mut placed = None;
        for (id, slot) in state.workers.iter_mut() {
            if slot.status != WorkerState::Idle {
                continue;
            }
            let Some(link) = slot.link.as_mut() else {
                continue;
            };
            if let Err(e) = &encoded {
                // Cannot happen short of a frame over the protocol's limit: the job fails, as
                // a job its worker could not be sent does, and the worker is replaced.
                let why = format!("could not send the job to worker {id}: {e}");
                placed = Some((*id, slot.pid, Some(why)));
                break;
            }
            match link.send(&self.wbuf) {
                Ok(()) => {
                    placed = Some((*id, slot.pid, None));
                    break;
                }
                Err(e) => {
                    // Nothing reached it: keep the job for another worker, replace this one.
                    slot.status = WorkerState::Stopping;
                    if let Some(cmd) = slot.cmd.clone() {
                        broken.push((cmd, format!("could not write to worker {id}: {e}")));
                    }
                }
            }
        }
        let result = match placed {
            Some((worker_id, pid, failed)) => {
                let slot = state.workers.get_mut(&worker_id);
                let cmd = slot.as_ref().and_then(|s| s.cmd.clone());
                if let Some(slot) = slot {
                    slot.status = WorkerState::Busy;
                    slot.running = Some(Running {
                        key: job.key,
                        uuid: job.uuid,
                        task: job.task.name(),
                    });
                }
                drop(state);
                if let Some(cmd) = cmd {
                    if let Some(why) = failed {
                        tell(cmd, Cmd::Cancel(job.key, Outcome::WorkerLost, why));
                    } else if let Some(limit) = job.task.config().timeout {
                        let at = tokio::time::Instant::now() + limit;
                        tell(cmd, Cmd::Deadline(job.key, at, limit));
                    }
                }
                Ok(Dispatched { worker_id, pid })
            }
            None => {
                drop(state);
                Err(job)
            }
        };
        for (cmd, why) in broken {
            tell(cmd, Cmd::Replace(why));
        }
        result
    }

    fn cancel(&mut self, key: CallKey) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        let state = inner.lock();
        let Some(cmd) = state
            .workers
            .values()
            .find(|s| s.running.as_ref().is_some_and(|r| r.key == key))
            .and_then(|s| s.cmd.clone())
        else {
            return false;
        };
        drop(state);
        tell(
            cmd,
            Cmd::Cancel(key, Outcome::Canceled, "canceled".to_owned()),
        );
        true
    }

    fn workers(&self) -> Vec<WorkerStatus> {
        let Some(inner) = &self.inner else {
            return Vec::new();
        };
        inner
            .lock()
            .workers
            .iter()
            .map(|(id, s)| WorkerStatus {
                worker_id: *id,
                pid: s.pid,
                status: s.status,
                finished_count: s.finished,
                current_task: s.running.as_ref().map(|r| r.task.to_owned()),
                current_task_uuid: s.running.as_ref().map(|r| r.uuid.clone()),
                age: s.started.elapsed().as_secs_f64(),
            })
            .collect()
    }

    fn poll_events(&mut self, cx: &mut Context<'_>, events: &mut Vec<PoolEvent>) -> Poll<()> {
        match &self.inner {
            Some(inner) => self.readers.poll(inner, cx, events),
            None => Poll::Pending,
        }
    }

    fn set_backlog(&mut self, waiting: usize) {
        let Some(inner) = &self.inner else {
            return;
        };
        if waiting == 0 {
            return;
        }
        let live = inner.live(&inner.lock());
        if live < inner.config.max_workers {
            inner.grow_to(live + waiting);
        }
    }

    async fn shutdown(&mut self, grace: Duration) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        inner.stopping.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + grace;
        loop {
            let busy = inner.lock().workers.values().any(|s| s.running.is_some());
            if !busy || Instant::now() >= deadline {
                break;
            }
            self.pump(&inner, Duration::from_millis(10)).await;
        }
        let cmds: Vec<(Option<CallKey>, mpsc::Sender<Cmd>)> = inner
            .lock()
            .workers
            .values()
            .filter_map(|s| {
                s.cmd
                    .clone()
                    .map(|c| (s.running.as_ref().map(|r| r.key), c))
            })
            .collect();
        for (running, cmd) in cmds {
            let c = match running {
                Some(key) => Cmd::Cancel(
                    key,
                    Outcome::Canceled,
                    "still running at shutdown after the grace period".to_owned(),
                ),
                None => Cmd::Stop,
            };
            let _ = cmd.send(c).await;
        }
        // Workers end within the kill grace; wait a bounded time for their supervisors.
        let wait_until = Instant::now() + inner.config.kill_grace * 3 + Duration::from_secs(1);
        while !inner.lock().workers.is_empty() && Instant::now() < wait_until {
            self.pump(&inner, Duration::from_millis(10)).await;
        }
        self.readers = Readers::default();
        for t in inner
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
        let _ = std::fs::remove_dir_all(&inner.socket_dir);
    }
}

impl ProcessPool {
    /// Reads the workers for up to `wait` (while the service does not: at shutdown) and passes
    /// the events on through the events channel.
    async fn pump(&mut self, inner: &Arc<Inner>, wait: Duration) {
        let mut events = Vec::new();
        let readers = &mut self.readers;
        let _ = tokio::time::timeout(
            wait,
            std::future::poll_fn(|cx| readers.poll(inner, cx, &mut events)),
        )
        .await;
        for ev in events {
            let _ = inner.events.send(ev).await;
        }
    }
}

impl Drop for ProcessPool {
    fn drop(&mut self) {
        if let Some(inner) = &self.inner {
            let _ = std::fs::remove_dir_all(&inner.socket_dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[tokio::test]
    async fn link_queues_what_the_socket_cannot_take_and_keeps_the_order() {
        let (a, b) = UnixStream::pair().unwrap();
        let (_keep, wa) = a.into_split();
        let mut link = Link {
            wr: Arc::new(wa),
            backlog: Vec::new(),
            flush: Arc::new(Notify::new()),
        };
        let big: Vec<u8> = (0..4_000_000u32).map(|i| i as u8).collect();
        link.send(&big).unwrap();
        assert!(!link.backlog.is_empty(), "a socket takes no 4 MB at once");
        link.send(b"tail").unwrap();
        let reader = tokio::spawn(async move {
            let mut b = b;
            let mut out = Vec::new();
            b.read_to_end(&mut out).await.unwrap();
            out
        });
        let wr = link.wr.clone();
        while !link.write_backlog().unwrap() {
            wr.writable().await.unwrap();
        }
        drop((link, wr));
        let got = reader.await.unwrap();
        assert_eq!(got.len(), big.len() + 4);
        assert_eq!(&got[..big.len()], &big[..]);
        assert_eq!(&got[big.len()..], b"tail");
    }

    #[tokio::test]
    async fn frame_reader_takes_frames_of_any_size_in_any_pieces() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut bytes = Vec::new();
        let large = "x".repeat(3 * READ_BUFFER);
        for i in 0..3u64 {
            encode(&FromWorker::Pong { n: i }, &mut bytes).unwrap();
        }
        encode(
            &FromWorker::Done {
                key: 9,
                outcome: Outcome::Ok,
                result: Some(Value::from(large.clone())),
                error: None,
            },
            &mut bytes,
        )
        .unwrap();
        encode(&FromWorker::Pong { n: 3 }, &mut bytes).unwrap();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut a = a;
            // Odd pieces, so frames and length prefixes are cut anywhere.
            for piece in bytes.chunks(7_777) {
                a.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let (rd, _wr) = b.into_split();
        let mut frames = FrameReader::new(rd);
        let mut got = Vec::new();
        while let Some(f) = std::future::poll_fn(|cx| frames.poll_frame(cx))
            .await
            .unwrap()
        {
            got.push(f);
        }
        writer.await.unwrap();
        assert_eq!(got.len(), 5);
        assert!(matches!(got[2], FromWorker::Pong { n: 2 }));
        match &got[3] {
            FromWorker::Done {
                key: 9,
                result: Some(v),
                ..
            } => {
                assert_eq!(v.as_str().map(str::len), Some(large.len()))
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(got[4], FromWorker::Pong { n: 3 }));
        assert_eq!(frames.buf.len(), READ_BUFFER, "the buffer shrinks back");
    }

    #[tokio::test]
    async fn frame_reader_rejects_an_oversized_prefix() {
        let (a, b) = UnixStream::pair().unwrap();
        {
            use tokio::io::AsyncWriteExt;
            let mut a = a;
            a.write_all(&((MAX_FRAME as u32) + 1).to_le_bytes())
                .await
                .unwrap();
        }
        let (rd, _wr) = b.into_split();
        let mut frames = FrameReader::new(rd);
        let r = std::future::poll_fn(|cx| frames.poll_frame(cx)).await;
        assert!(matches!(r, Err(Error::FrameTooLarge(_))), "{r:?}");
    }
}
