//! The worker side: what a re-executed application runs instead of its normal `main`.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use dispatcher_core::call::now_epoch;
use dispatcher_core::pool::Job;
use dispatcher_core::worker::run_job;
use dispatcher_core::ChildSink;
use dispatcher_core::{Outcome, Registry, TaskMessage};

use crate::claim::Claim;
use crate::error::{Error, Result};
use crate::protocol::{
    encode, read_blocking, FromWorker, ToWorker, ENV_CLAIM, ENV_SCHED, ENV_SOCKET, ENV_TOKEN,
    ENV_WORKER_ID,
};
use crate::sched::WorkerScheduling;

/// True when this process was started by a [`crate::ProcessPool`] as a worker.
pub fn is_worker() -> bool {
    std::env::var_os(ENV_SOCKET).is_some()
}

/// Enters the worker loop when this process is a worker; returns `None` at once otherwise.
///
/// Call it first thing in `main`, before anything starts a service, with a registry holding the
/// same tasks as the service's. When it returns `Some(code)`, return that code from `main`: the
/// pool asked the worker to stop, or the pool went away.
///
/// ```no_run
/// use std::process::ExitCode;
/// use dispatcher_core::TaskRegistry;
///
/// fn main() -> ExitCode {
///     let registry = TaskRegistry::collected().expect("task names are unique");
///     if let Some(code) = dispatcher_pool::run_if_worker(&registry) {
///         return code;
///     }
///     // ... the application's normal path: start a service with a ProcessPool ...
///     ExitCode::SUCCESS
/// }
/// ```
pub fn run_if_worker(registry: &dyn Registry) -> Option<ExitCode> {
    let socket = std::env::var_os(ENV_SOCKET)?;
    Some(match worker_loop(registry, socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "worker stopped on an error");
            // The parent logs this process's stderr, tagged with the worker id.
            let _ = writeln!(std::io::stderr(), "dispatcher worker error: {e}");
            ExitCode::FAILURE
        }
    })
}

struct SocketSink {
    writer: Mutex<UnixStream>,
}

impl ChildSink for SocketSink {
    fn submit(&self, parent_uuid: &str, message: TaskMessage) -> dispatcher_core::Result<()> {
        let frame = FromWorker::Submit {
            parent_uuid: parent_uuid.to_owned(),
            message,
        };
        let mut buf = Vec::new();
        encode(&frame, &mut buf)?;
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(&buf).map_err(Error::Io)?;
        Ok(())
    }
}

fn worker_loop(registry: &dyn Registry, socket: std::ffi::OsString) -> Result<()> {
    // Die with the parent, even while a task runs.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| Error::Environment(format!("prctl(PR_SET_PDEATHSIG) failed: {e}")))?;
    let worker_id: u32 = std::env::var(ENV_WORKER_ID)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Environment(format!("{ENV_WORKER_ID} is missing or not a number")))?;
    let token = std::env::var(ENV_TOKEN)
        .map_err(|_| Error::Environment(format!("{ENV_TOKEN} is missing")))?;
    // Decides who owns a job queued behind the running one (absent: the pool queues none).
    let claim = match std::env::var_os(ENV_CLAIM) {
        Some(path) => Some(Claim::open(std::path::Path::new(&path))?),
        None => None,
    };
    WorkerScheduling::adopt(std::env::var(ENV_SCHED).ok().as_deref());
    // Processes a task starts are not workers.
    std::env::remove_var(ENV_SCHED);
    std::env::remove_var(ENV_CLAIM);
    std::env::remove_var(ENV_SOCKET);
    std::env::remove_var(ENV_WORKER_ID);
    std::env::remove_var(ENV_TOKEN);
    registry
        .check()
        .map_err(|e| Error::Environment(e.to_string()))?;

    let stream = UnixStream::connect(&socket).map_err(Error::Io)?;
    let writer = stream.try_clone().map_err(Error::Io)?;
    let sink = Arc::new(SocketSink {
        writer: Mutex::new(writer),
    });
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let hello = FromWorker::Hello {
        worker_id,
        token,
        pid: std::process::id(),
    };
    send(&sink, &hello, &mut Vec::new())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Io)?;
    let mut buf = Vec::with_capacity(4096);
    // Frames to the pool are encoded here, one at a time (reused, no allocation per Call).
    let mut out = Vec::with_capacity(256);
    loop {
        if reader.buffer().is_empty() {
            wait_readable(reader.get_ref())?;
        }
        let Some(msg) = read_blocking::<ToWorker>(&mut reader, &mut buf)? else {
            break;
        };
        // A large job does not keep its buffer.
        if buf.capacity() > KEEP_OUT {
            buf = Vec::with_capacity(4096);
        }
        match msg {
            ToWorker::Run {
                key,
                uuid,
                task,
                args,
                attempt,
                queued,
            } => {
                // A job sent while this worker ran another may have been taken back since (to
                // run on a worker that fell idle, or because this one is being ended): it runs
                // here only if this worker claims it first. A job taken back is skipped without
                // a word; the pool reports it where it runs.
                if let Some(word) = queued {
                    if claim.as_ref().is_some_and(|c| !c.start(word, key)) {
                        continue;
                    }
                }
                // The pool learns of a queued job's start only from the report of the job before
                // it: say when it started.
                let started = queued.map(|_| now_epoch());
                let done = match registry.lookup(&task) {
                    Some(descriptor) => {
                        let job = Job {
                            key,
                            uuid,
                            task: descriptor,
                            args,
                            attempt,
                        };
                        let child_sink: Arc<dyn ChildSink> = sink.clone();
                        let (outcome, result, error) = run_job(&rt, job, Some(child_sink));
                        FromWorker::Done {
                            key,
                            outcome,
                            result,
                            error,
                            started,
                            ended: Some(now_epoch()),
                        }
                    }
                    None => FromWorker::Done {
                        key,
                        outcome: Outcome::Error,
                        result: None,
                        error: Some(format!(
                            "task {task:?} is not registered in the worker process (worker {worker_id}); give run_if_worker the same registry as the service"
                        )),
                        started,
                        ended: Some(now_epoch()),
                    },
                };
                send(&sink, &done, &mut out)?;
            }
            ToWorker::Ping { n } => send(&sink, &FromWorker::Pong { n }, &mut out)?,
            ToWorker::Stop => break,
        }
    }
    Ok(())
}

/// Waits until `stream` has data (or is closed).
///
/// Waiting in `poll(POLLIN)` rather than in a blocking `read` matters on a Unix socket: every
/// time the pool reads a frame this worker wrote, the kernel wakes the tasks waiting on this
/// socket for write space, and a blocked `read` is woken too (and goes back to sleep), a wasted
/// context switch per Call. A `poll` waiter asked only for input and is not woken.
fn wait_readable(stream: &UnixStream) -> Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::Io(e.into())),
        }
    }
}

/// Writes `frame` to the pool, encoded in `buf`.
fn send(sink: &SocketSink, frame: &FromWorker, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    encode(frame, buf)?;
    let written = {
        let mut w = sink.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(buf).map_err(Error::Io)
    };
    // A large result does not keep its buffer.
    if buf.capacity() > KEEP_OUT {
        *buf = Vec::with_capacity(KEEP_OUT);
    }
    written
}

/// The most room the worker's frame buffers keep between frames.
const KEEP_OUT: usize = 64 * 1024;
