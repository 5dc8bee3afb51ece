//! [`ProcessPool`]: the parent side. Starts workers, feeds them jobs over their sockets, enforces
//! timeouts, cancels, detects deaths, recycles, scales and checks health.
//!
//! This file holds the settings, the pool's shared state and the [`Pool`] implementation the
//! service calls. The rest of the parent side: starting a worker and its handshake in `spawn`,
//! the per-worker supervisor and the maintenance task in `supervisor`, the memory and process
//! limits in `limits`, writing to a worker's socket in `link`, and reading the workers' sockets in
//! the service's task in `readers`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dispatcher_core::call::now_epoch;
use dispatcher_core::pool::{CallKey, Dispatched, Job, Pool, PoolEvent, PoolEvents};
use dispatcher_core::{Outcome, PoolStats, WorkerState, WorkerStatus};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::claim::Claim;
use crate::error::Error;
use crate::link::Link;
use crate::pipeline::{Effects, Queued};
use crate::protocol::{encode_job, ENV_SOCKET};
use crate::readers::{Conn, Readers};
use crate::sched::WorkerScheduling;
use crate::socket_dir::SocketDir;
use crate::spawn::WorkerSocket;
use crate::supervisor::{tell, Cmd};

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
    /// Where the pool makes its private socket directory (`dispatcher-pool-<pid>-<random>`,
    /// removed when the pool stops or is dropped; those of killed services are removed at the
    /// next start). Default: the temporary directory (`TMPDIR`, else `/tmp`).
    pub socket_parent: Option<PathBuf>,
    /// The workers' scheduling policy. Default [`WorkerScheduling::Batch`]: a worker woken for a
    /// job does not preempt the service.
    pub worker_scheduling: WorkerScheduling,
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
            socket_parent: None,
            worker_scheduling: WorkerScheduling::default(),
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

/// The job a worker runs.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) key: CallKey,
    pub(crate) uuid: String,
    pub(crate) task: &'static str,
    /// When it was handed to the worker, epoch seconds.
    pub(crate) started_at: f64,
}

/// A worker's state as the pool tracks it; reported in dispatcherd's words (see
/// [`SlotState::reported`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Started, not connected yet.
    Starting,
    /// Connected, no job.
    Idle,
    /// Running a job.
    Busy,
    /// Being stopped or replaced.
    Stopping,
}

impl SlotState {
    /// The state the `workers` command reports: an idle or busy worker is `ready` (a busy one
    /// also has a current task), as in dispatcherd.
    pub(crate) fn reported(self) -> WorkerState {
        match self {
            SlotState::Starting => WorkerState::Starting,
            SlotState::Idle | SlotState::Busy => WorkerState::Ready,
            SlotState::Stopping => WorkerState::Stopping,
        }
    }
}

/// One worker, as the pool's state knows it.
#[derive(Debug)]
pub(crate) struct Slot {
    /// 0 until the worker connected.
    pub(crate) pid: u32,
    pub(crate) status: SlotState,
    pub(crate) running: Option<Running>,
    /// A cancel of its job is under way.
    pub(crate) canceling: bool,
    pub(crate) finished: u64,
    pub(crate) started: Instant,
    pub(crate) idle_since: Instant,
    /// Its supervisor; `None` until the worker connected.
    pub(crate) cmd: Option<mpsc::Sender<Cmd>>,
    /// Its socket; `None` until the worker connected.
    pub(crate) link: Option<Link>,
    /// The health ping sent and not answered yet.
    pub(crate) ping: Option<u64>,
    /// The jobs written to it to run after the running one, in order (see `pipeline`).
    pub(crate) next: VecDeque<Queued>,
    /// The word it shares with the pool to settle who owns `next`; `None` until it connected.
    pub(crate) claim: Option<Claim>,
}

/// The pool's state, under [`Inner::lock`].
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) workers: BTreeMap<u32, Slot>,
    pub(crate) next_id: u32,
    /// Workers that ended (recycled, scaled down, replaced).
    pub(crate) retired: u64,
    /// Queued jobs taken back from a worker before it started them, oldest first: the next idle
    /// worker takes them (never more than the workers, since each worker queues at most one).
    pub(crate) returned: VecDeque<Job>,
}

/// What the pool and its tasks (acceptor, supervisors, maintenance) share.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: ProcessPoolConfig,
    pub(crate) program: PathBuf,
    pub(crate) events: PoolEvents,
    state: Mutex<State>,
    /// Workers started and waiting for their connection, by worker id.
    pub(crate) hello: Mutex<HashMap<u32, oneshot::Sender<UnixStream>>>,
    socket_dir: SocketDir,
    pub(crate) socket_path: PathBuf,
    /// The private socket directory, where workers' claim files are made too.
    pub(crate) socket_dir_path: PathBuf,
    pub(crate) token: String,
    pub(crate) stopping: AtomicBool,
    /// Calls waiting in the service's queue, as last told (`set_backlog`): while any wait, busy
    /// workers get their next job queued behind the running one, and a worker falling idle takes
    /// one from the service rather than a job queued elsewhere.
    pub(crate) backlog: AtomicUsize,
    pub(crate) spawn_failures: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The first failure to start a worker while the pool itself is starting.
    pub(crate) startup_error: Mutex<Option<Error>>,
    pub(crate) started: AtomicBool,
    /// Hands the reading side of each new worker's socket to the pool's [`Readers`].
    pub(crate) conns: mpsc::UnboundedSender<Conn>,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Workers counted toward the size (starting, idle, busy; not stopping).
    pub(crate) fn live(&self, state: &State) -> usize {
        state
            .workers
            .values()
            .filter(|s| s.status != SlotState::Stopping)
            .count()
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
        let parent = c.socket_parent.clone().unwrap_or_else(std::env::temp_dir);
        let socket = WorkerSocket::bind(&parent)?;
        let (conns_tx, conns_rx) = mpsc::unbounded_channel();
        self.readers = Readers::new(conns_rx);
        let inner = Arc::new(Inner {
            config: c.clone(),
            program,
            events,
            state: Mutex::new(State::default()),
            hello: Mutex::new(HashMap::new()),
            socket_dir_path: socket.dir.path().to_owned(),
            socket_dir: socket.dir,
            socket_path: socket.path,
            token: uuid::Uuid::new_v4().simple().to_string(),
            stopping: AtomicBool::new(false),
            backlog: AtomicUsize::new(0),
            spawn_failures: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
            startup_error: Mutex::new(None),
            started: AtomicBool::new(false),
            conns: conns_tx,
        });
        let acceptor = tokio::spawn(inner.clone().accept(socket.listener));
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
        if let Err(e) = inner.first_workers().await {
            self.shutdown(Duration::ZERO).await;
            return Err(e.into());
        }
        inner.started.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn try_dispatch(&mut self, job: Job) -> std::result::Result<Dispatched, Job> {
        let Some(inner) = &self.inner else {
            return Err(job);
        };
        let mut state = inner.lock();
        // No worker free (the common case while the queue is deep): queue the job behind a busy
        // worker's running one while Calls wait, else nothing to encode.
        if !state
            .workers
            .values()
            .any(|s| s.status == SlotState::Idle && s.link.is_some())
        {
            if inner.backlog.load(Ordering::Relaxed) == 0 || inner.stopping.load(Ordering::Relaxed)
            {
                return Err(job);
            }
            let Some(id) = inner.queue_target(&state) else {
                return Err(job);
            };
            return queue_on(&mut self.wbuf, &mut state, id, job);
        }
        // Encoded once a worker is free; written into its socket under the (uncontended) lock.
        self.wbuf.clear();
        let encoded = encode_job(&job, None, &mut self.wbuf);
        let mut broken = Vec::new();
        let mut placed = None;
        for (id, slot) in state.workers.iter_mut() {
            if slot.status != SlotState::Idle {
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
                    slot.status = SlotState::Stopping;
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
                    slot.status = SlotState::Busy;
                    slot.running = Some(Running {
                        key: job.key,
                        uuid: job.uuid,
                        task: job.task.name(),
                        started_at: now_epoch(),
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
                Ok(Dispatched::running(worker_id, pid))
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
        let mut state = inner.lock();
        let mut fx = Effects::default();
        if let Some(found) = inner.cancel_waiting(&mut state, key, &mut fx) {
            drop(state);
            fx.send(inner);
            return found;
        }
        let Some(slot) = state
            .workers
            .values_mut()
            .find(|s| s.running.as_ref().is_some_and(|r| r.key == key))
        else {
            return false;
        };
        let Some(cmd) = slot.cmd.clone() else {
            return false;
        };
        slot.canceling = true;
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
            .map(|(id, s)| {
                let pid = (s.pid != 0).then_some(s.pid);
                let mut w = WorkerStatus::new(*id, pid, s.status.reported());
                w.finished_count = s.finished;
                w.current_task = s.running.as_ref().map(|r| r.task.to_owned());
                w.current_task_uuid = s.running.as_ref().map(|r| r.uuid.clone());
                w.current_task_started_at = s.running.as_ref().map(|r| r.started_at);
                w.active_cancel = s.canceling;
                w.age = s.started.elapsed().as_secs_f64();
                w
            })
            .collect()
    }

    fn stats(&self) -> PoolStats {
        match &self.inner {
            Some(inner) => {
                let state = inner.lock();
                PoolStats::new(state.next_id, state.retired)
            }
            None => PoolStats::default(),
        }
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
        let before = inner.backlog.swap(waiting, Ordering::Relaxed);
        if waiting == 0 && before != 0 {
            // The service's queue ran dry: a worker idle now takes a job queued elsewhere.
            let mut state = inner.lock();
            let mut fx = Effects::default();
            inner.feed_idle_workers(&mut state, &mut fx);
            drop(state);
            fx.send(inner);
        }
        // A fixed-size pool never grows: no lock per dispatch for it.
        if waiting == 0 || inner.config.min_workers >= inner.config.max_workers {
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
        let cmds: Vec<(bool, mpsc::Sender<Cmd>)> = {
            let mut state = inner.lock();
            let mut fx = Effects::default();
            inner.cancel_all_waiting(&mut state, "still queued for a worker at shutdown", &mut fx);
            let cmds = state
                .workers
                .values()
                .filter_map(|s| s.cmd.clone().map(|c| (s.running.is_some(), c)))
                .collect();
            drop(state);
            fx.send(&inner);
            cmds
        };
        for (running, cmd) in cmds {
            let c = if running {
                Cmd::End(
                    Outcome::Canceled,
                    "still running at shutdown after the grace period".to_owned(),
                )
            } else {
                Cmd::Stop
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
        inner.socket_dir.remove();
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
            inner.socket_dir.remove();
        }
    }
}

/// Writes `job` to busy worker `id`, queued behind its running job.
fn queue_on(
    wbuf: &mut Vec<u8>,
    state: &mut State,
    id: u32,
    job: Job,
) -> std::result::Result<Dispatched, Job> {
    let Some(slot) = state.workers.get_mut(&id) else {
        return Err(job);
    };
    let (Some(link), Some(claim)) = (slot.link.as_mut(), slot.claim.as_ref()) else {
        return Err(job);
    };
    let Some(word) = claim.free_word() else {
        return Err(job);
    };
    wbuf.clear();
    if encode_job(&job, Some(word), wbuf).is_err() {
        // Too large to encode: it takes the idle path later, which reports why.
        return Err(job);
    }
    // Marked before it is written, so the worker can claim it as soon as it reads it.
    claim.queue(word, job.key);
    if let Err(e) = link.send(wbuf) {
        // Nothing reached the worker: the job stays with the service; the worker is replaced.
        slot.status = SlotState::Stopping;
        if let Some(cmd) = slot.cmd.clone() {
            tell(
                cmd,
                Cmd::Replace(format!("could not write to worker {id}: {e}")),
            );
        }
        return Err(job);
    }
    let pid = slot.pid;
    tracing::trace!(
        worker = id,
        key = job.key,
        "queued a job behind the running one"
    );
    slot.next.push_back(Queued {
        job,
        word,
        cancel: None,
    });
    Ok(Dispatched::queued(id, pid))
}
