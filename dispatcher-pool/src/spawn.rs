//! Starting workers: the worker process (program, environment, its own process group, its
//! stdout and stderr logged line by line), the private socket workers connect back to, and the
//! hello/token handshake that hands each connection to the worker that is waiting for it.
//!
//! Workers connect to a Unix socket in a private (0700) temporary directory and present a random
//! token, instead of inheriting pipe file descriptors: no `unsafe` `pre_exec`, and the worker's
//! stdin, stdout and stderr stay free for task code.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pool::SlotState;
use dispatcher_core::pool::PoolEvent;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::claim::Claim;
use crate::error::{Error, Result};
use crate::link::Link;
use crate::pipeline::Effects;
use crate::pool::{Inner, Slot};
use crate::protocol::{
    read_frame, FrameReader, FromWorker, ENV_CLAIM, ENV_SCHED, ENV_SOCKET, ENV_TOKEN, ENV_WORKER_ID,
};
use crate::readers::Conn;
use crate::socket_dir::{remove_stale_socket_dirs, SocketDir};
use crate::supervisor::describe_exit;

/// The socket workers connect to.
#[derive(Debug)]
pub(crate) struct WorkerSocket {
    /// The private directory holding it (removed at shutdown, or when dropped).
    pub(crate) dir: SocketDir,
    pub(crate) path: PathBuf,
    pub(crate) listener: UnixListener,
}

impl WorkerSocket {
    /// Removes stale socket directories under `parent`, then binds a socket in a new private
    /// (0700) directory there. On failure, nothing it made is left behind.
    pub(crate) fn bind(parent: &Path) -> Result<Self> {
        remove_stale_socket_dirs(parent);
        let dir = SocketDir::create(parent)?;
        let path = dir.path().join("pool.sock");
        let listener = UnixListener::bind(&path).map_err(|source| Error::SocketDir {
            path: path.clone(),
            source,
        })?;
        Ok(WorkerSocket {
            dir,
            path,
            listener,
        })
    }
}

impl Slot {
    /// A worker being started.
    pub(crate) fn starting() -> Self {
        let now = Instant::now();
        Slot {
            pid: 0,
            status: SlotState::Starting,
            running: None,
            canceling: false,
            finished: 0,
            started: now,
            idle_since: now,
            cmd: None,
            link: None,
            ping: None,
            next: std::collections::VecDeque::new(),
            claim: None,
        }
    }
}

impl Inner {
    /// Starts workers until `want` are live (never above `max_workers`).
    pub(crate) fn grow_to(self: &Arc<Self>, want: usize) {
        if self.stopping.load(Ordering::Relaxed) {
            return;
        }
        let want = want.min(self.config.max_workers);
        let mut state = self.lock();
        let live = self.live(&state);
        for _ in live..want {
            let id = state.next_id;
            state.next_id += 1;
            state.workers.insert(id, Slot::starting());
            let inner = self.clone();
            tokio::spawn(async move { inner.start_worker(id).await });
        }
    }

    /// Waits until the first `min_workers` workers are ready; the first error starting one of
    /// them, or an error when they take too long.
    pub(crate) async fn first_workers(&self) -> Result<()> {
        let min = self.config.min_workers;
        let limit = Instant::now() + self.config.start_timeout + Duration::from_secs(2);
        loop {
            let failed = self
                .startup_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(e) = failed {
                return Err(e);
            }
            let ready = {
                let state = self.lock();
                state
                    .workers
                    .values()
                    .filter(|s| s.status == SlotState::Idle)
                    .count()
            };
            if ready >= min {
                return Ok(());
            }
            if Instant::now() >= limit {
                return Err(Error::Config(format!(
                    "only {ready} of {min} workers started within {:?}",
                    self.config.start_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Starts worker `id`. A failure while the pool starts is kept for [`Inner::first_workers`];
    /// later, the worker is tried again after a backoff.
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

    /// Where worker `id`'s claim file is.
    fn claim_path(&self, id: u32) -> PathBuf {
        self.socket_dir_path.join(format!("claim-{id}"))
    }

    /// The command that starts worker `id`.
    fn command(&self, id: u32) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.config.args)
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .env(ENV_SOCKET, &self.socket_path)
            .env(ENV_WORKER_ID, id.to_string())
            .env(ENV_TOKEN, &self.token)
            .env(ENV_CLAIM, self.claim_path(id))
            .env(ENV_SCHED, self.config.worker_scheduling.as_str())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group: whatever the task starts can be counted and killed with it.
            .process_group(0);
        cmd
    }

    /// Starts worker `id`, waits for it to connect, and hands its socket to the readers and to
    /// a new supervisor.
    async fn launch(self: Arc<Self>, id: u32) -> Result<()> {
        // Made before the worker starts, which maps it as it starts.
        let claim = Claim::create(&self.claim_path(id))?;
        let (tx, rx) = oneshot::channel();
        self.hello
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let mut child = self.command(id).spawn().map_err(|source| Error::Spawn {
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
        let socket = crate::link::socket(stream).map_err(Error::Io)?;
        let flush = Arc::new(Notify::new());
        let mut fx = Effects::default();
        {
            let mut state = self.lock();
            match state.workers.get_mut(&id) {
                Some(slot) => {
                    slot.pid = pid;
                    slot.status = SlotState::Idle;
                    slot.cmd = Some(cmd_tx);
                    slot.link = Some(Link::new(socket.clone(), flush.clone()));
                    slot.claim = Some(claim);
                    slot.started = Instant::now();
                    slot.idle_since = Instant::now();
                }
                None => return Ok(()), // removed meanwhile (shutdown); kill_on_drop ends it
            }
            // A job given back waits for the first idle worker.
            self.feed_idle(&mut state, id, &mut fx);
        }
        let _ = self.conns.send(Conn {
            id,
            frames: FrameReader::new(socket.clone()),
            cmd: cmd_tx_reader,
        });
        tracing::debug!(worker = id, pid, "worker ready");
        fx.send(&self);
        let _ = self.events.send(PoolEvent::Ready).await;
        tokio::spawn(self.supervise(id, pid, child, socket, flush, cmd_rx));
        Ok(())
    }

    /// Accepts worker connections and hands each to the worker that is waiting for it.
    pub(crate) async fn accept(self: Arc<Self>, listener: UnixListener) {
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

/// Reads the first frame of a connection, which must be a hello: the worker's id and token.
async fn read_hello(stream: &mut UnixStream) -> Result<(u32, String)> {
    match read_frame(stream).await? {
        FromWorker::Hello {
            worker_id, token, ..
        } => Ok((worker_id, token)),
        _ => Err(Error::Environment("first frame was not a hello".into())),
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
