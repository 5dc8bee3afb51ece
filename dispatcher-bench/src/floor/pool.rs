//! The bare process pool: the floor of any pool of worker processes with one job in flight per
//! worker.
//!
//! `W` worker processes (this binary, started with [`BARE_WORKER_ENV`] set, which
//! [`run_if_bare_worker`] turns into the bare worker loop), each connected by a Unix socket pair
//! as its standard input. A worker answers every job frame with a done frame and does nothing
//! else. The parent, on one thread, writes a job frame to every worker, then `poll(2)`s the
//! sockets and hands the next job to whichever worker answered: no serialization, no
//! bookkeeping, only the kernel wake-ups and context switches every process pool pays. The
//! workers run under `SCHED_BATCH`, as a `ProcessPool`'s do by default (a woken worker does not
//! preempt the parent), or under the default policy with `--floor-scheduling normal`. The
//! clock runs from the first job written until the last done frame read (the workers' start-up
//! is excluded: each first sends one ready byte). CPU per job is read from `/proc` for this
//! process (the parent) and the workers, as the `pool` scenario reads it for the service.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Instant;

use dispatcher_pool::WorkerScheduling;
use nix::poll::{poll, PollFd, PollFlags};

use crate::error::{BenchError, Result};
use crate::floor::Floor;
use crate::report::{proc_cpu_ms, round3};

/// Set in a bare worker's environment.
pub const BARE_WORKER_ENV: &str = "DISPATCHER_BENCH_BARE_WORKER";

/// A job frame: the size of a small task message.
const JOB: &[u8; 40] = b"{\"job\":1,\"task\":\"noop\",\"args\":[]}\0\0\0\0\0\0\0";
/// A done frame.
const DONE: &[u8; 10] = b"{\"done\":1}";
/// Sent once by a worker when it is ready.
const READY: &[u8; 1] = b"R";
/// How long the parent waits for any worker before it gives up, milliseconds.
const STALL_MS: u16 = 10_000;

/// Enters the bare worker loop when this process was started as a bare worker; `None` at once
/// otherwise. Call it first in `main`.
pub fn run_if_bare_worker() -> Option<ExitCode> {
    let scheduling = std::env::var(BARE_WORKER_ENV).ok()?;
    Some(match bare_worker(&scheduling) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dispatcher-bench bare worker: {e}");
            ExitCode::FAILURE
        }
    })
}

/// Reads job frames from standard input (a socket) and answers each on the same socket, until
/// the parent closes it.
fn bare_worker(scheduling: &str) -> std::io::Result<()> {
    let policy: WorkerScheduling = scheduling
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    policy.apply_to_this_process()?;
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    nix::unistd::write(fd, READY)?;
    let mut buf = [0u8; JOB.len()];
    loop {
        let mut got = 0;
        while got < buf.len() {
            match nix::unistd::read(fd, &mut buf[got..])? {
                0 => return Ok(()),
                k => got += k,
            }
        }
        let mut sent = 0;
        while sent < DONE.len() {
            sent += nix::unistd::write(fd, &DONE[sent..])?;
        }
    }
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |e| BenchError::Run(format!("bare pool: {what}: {e}"))
}

/// The started workers; killed and reaped on drop (after an error too).
struct Workers {
    children: Vec<Child>,
    sockets: Vec<UnixStream>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Closing the sockets ends the workers' loops; kill any that did not notice.
        self.sockets.clear();
        for c in &mut self.children {
            if !matches!(c.try_wait(), Ok(Some(_))) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

fn start(workers: usize, scheduling: WorkerScheduling) -> Result<Workers> {
    let exe = std::env::current_exe().map_err(io("cannot find this program"))?;
    let mut w = Workers {
        children: Vec::with_capacity(workers),
        sockets: Vec::with_capacity(workers),
    };
    for _ in 0..workers {
        let (ours, theirs) = UnixStream::pair().map_err(io("socketpair"))?;
        let child = Command::new(&exe)
            .env(BARE_WORKER_ENV, scheduling.as_str())
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .spawn()
            .map_err(io("cannot start a worker"))?;
        w.children.push(child);
        w.sockets.push(ours);
    }
    for s in &w.sockets {
        let mut ready = [0u8; 1];
        (&*s)
            .read_exact(&mut ready)
            .map_err(io("a worker did not start"))?;
    }
    Ok(w)
}

/// Runs `jobs` jobs through `workers` bare workers (blocking: call it from a blocking thread)
/// and returns the rate.
pub fn measure_blocking(jobs: u64, workers: usize, scheduling: WorkerScheduling) -> Result<Floor> {
    let w = start(workers.max(1), scheduling)?;
    let cpu = |w: &Workers| {
        let children: Option<f64> = w.children.iter().map(|c| proc_cpu_ms(c.id())).sum();
        (proc_cpu_ms(std::process::id()), children)
    };
    let cpu_before = cpu(&w);
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut done = 0u64;
    for mut s in &w.sockets {
        if sent < jobs {
            s.write_all(JOB).map_err(io("write a job"))?;
            sent += 1;
        }
    }
    let mut fds: Vec<PollFd<'_>> = w
        .sockets
        .iter()
        .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
        .collect();
    let mut reply = [0u8; DONE.len()];
    while done < jobs {
        let ready = poll(&mut fds, STALL_MS)
            .map_err(|e| BenchError::Run(format!("bare pool: poll: {e}")))?;
        if ready == 0 {
            return Err(BenchError::Run(format!(
                "bare pool: no worker answered for {STALL_MS} ms ({done}/{jobs} done)"
            )));
        }
        for (i, fd) in fds.iter().enumerate() {
            if fd.revents().is_some_and(|r| !r.is_empty()) {
                let mut s = &w.sockets[i];
                s.read_exact(&mut reply).map_err(io("a worker went away"))?;
                done += 1;
                if sent < jobs {
                    s.write_all(JOB).map_err(io("write a job"))?;
                    sent += 1;
                }
            }
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cpu_after = cpu(&w);
    drop(fds);
    drop(w);
    let per_job = |before: Option<f64>, after: Option<f64>| {
        Some(round3((after? - before?) * 1000.0 / jobs.max(1) as f64))
    };
    Ok(Floor {
        kind: format!(
            "bare process pool: {workers} worker processes on Unix sockets, one job in flight each, \
             40-byte job / 10-byte reply, {jobs} jobs"
        ),
        jobs_per_sec: Some((jobs as f64 / seconds).round()),
        cpu_main_us_per_job: per_job(cpu_before.0, cpu_after.0),
        cpu_workers_us_per_job: per_job(cpu_before.1, cpu_after.1),
        ..Floor::default()
    })
}

/// [`measure_blocking`] on a blocking thread.
pub async fn measure(jobs: u64, workers: u64, scheduling: WorkerScheduling) -> Result<Floor> {
    let workers = usize::try_from(workers)
        .map_err(|_| BenchError::Run(format!("--workers {workers} is too large")))?;
    let floor = tokio::task::spawn_blocking(move || measure_blocking(jobs, workers, scheduling))
        .await
        .map_err(|e| BenchError::Run(format!("bare pool: the measuring thread failed: {e}")))??;
    eprintln!(
        "floor: bare process pool, {workers} workers, {jobs} jobs: {:.0}/s",
        floor.jobs_per_sec.unwrap_or(0.0)
    );
    Ok(floor)
}
