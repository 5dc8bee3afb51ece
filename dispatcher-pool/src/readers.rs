//! [`Readers`]: the receiving side of every worker's socket, read in the service's task, and what
//! each frame from a worker does to the pool's state.

use std::task::{Context, Poll};
use std::time::Instant;

use crate::pool::SlotState;
use dispatcher_core::call::now_epoch;
use dispatcher_core::pool::{CallKey, PoolEvent};
use tokio::sync::mpsc;

use crate::pipeline::Effects;
use crate::pool::Inner;
use crate::protocol::{FrameReader, FromWorker};
use crate::supervisor::{tell, Cmd};

/// The reading side of one worker's socket.
pub(crate) struct Conn {
    pub(crate) id: u32,
    pub(crate) frames: FrameReader<std::sync::Arc<crate::link::Socket>>,
    /// The worker's supervisor.
    pub(crate) cmd: mpsc::Sender<Cmd>,
}

/// Most frames taken from one worker in one poll, so one chatty worker cannot starve the
/// others (nor the service loop).
const FRAMES_PER_POLL: usize = 64;

/// The reading sides of all workers' sockets, owned by the pool and polled in the service's task
/// (`Pool::poll_events`): a finished job reaches the service without a hop through another
/// task, and the service answers it with the next job at once.
#[derive(Default)]
pub(crate) struct Readers {
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
    /// Readers that take new workers' sockets from `new`.
    pub(crate) fn new(new: mpsc::UnboundedReceiver<Conn>) -> Self {
        Readers {
            conns: Vec::new(),
            new: Some(new),
        }
    }

    /// Reads every frame available now; `Ready` when that made events for the service.
    pub(crate) fn poll(
        &mut self,
        inner: &Inner,
        cx: &mut Context<'_>,
        out: &mut Vec<PoolEvent>,
    ) -> Poll<()> {
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

impl Inner {
    /// Handles one frame from worker `id`; events for the service go to `out`.
    fn on_frame(&self, conn: &Conn, frame: FromWorker, out: &mut Vec<PoolEvent>) {
        let id = conn.id;
        match frame {
            FromWorker::Done {
                key,
                outcome,
                result,
                error,
                started,
                ended,
            } => {
                // The worker's clock when it says (the job queued behind this one started then
                // too); else now, taken first: a job queued behind this one starts after it.
                let at = ended.unwrap_or_else(now_epoch);
                match self.job_done(id, key) {
                    Some((recycle, pid, fx)) => {
                        if let Some(started) = started {
                            // A job that was queued: when it really started.
                            out.push(PoolEvent::Started {
                                key,
                                worker_id: id,
                                pid,
                                at: started,
                            });
                        }
                        out.push(PoolEvent::Finished {
                            key,
                            outcome,
                            result,
                            error,
                            at,
                        });
                        fx.apply_to(out);
                        if recycle {
                            tell(conn.cmd.clone(), Cmd::Stop);
                        }
                    }
                    None => {
                        tracing::warn!(worker = id, key, "worker reported a job it was not given");
                    }
                }
            }
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

    /// A job finished on worker `id`: its queued job runs now, else it is idle (and takes a job
    /// waiting elsewhere). `None` when `key` is not the job it runs; else whether the worker must
    /// be recycled now, and what else to report.
    fn job_done(&self, id: u32, key: CallKey) -> Option<(bool, u32, Effects)> {
        let mut state = self.lock();
        let slot = state.workers.get_mut(&id)?;
        if slot.running.as_ref().is_none_or(|r| r.key != key) {
            return None;
        }
        let pid = slot.pid;
        slot.running = None;
        slot.canceling = false;
        slot.finished += 1;
        let mut fx = Effects::default();
        // Even a worker being ended: the job it went on to is known running, and ends with it.
        if self.promote(&mut state, id, &mut fx) {
            return Some((false, pid, fx));
        }
        let slot = state.workers.get_mut(&id)?;
        slot.idle_since = Instant::now();
        let recycle = self
            .config
            .max_tasks_per_worker
            .is_some_and(|n| slot.finished >= n)
            || self
                .config
                .max_worker_age
                .is_some_and(|age| slot.started.elapsed() >= age);
        if slot.status == SlotState::Stopping {
            // Being ended (timeout, cancel, shutdown) as the job finished: it stays stopping.
            return Some((false, pid, fx));
        }
        if recycle {
            slot.status = SlotState::Stopping;
        } else {
            slot.status = SlotState::Idle;
            self.feed_idle(&mut state, id, &mut fx);
        }
        Some((recycle, pid, fx))
    }

    /// Worker `id` answered ping `n`.
    fn pong(&self, id: u32, n: u64) {
        if let Some(slot) = self.lock().workers.get_mut(&id) {
            if slot.ping == Some(n) {
                slot.ping = None;
            }
        }
    }
}
