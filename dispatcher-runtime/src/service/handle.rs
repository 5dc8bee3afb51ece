//! [`ServiceHandle`]: what the application holds of a running service.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dispatcher_core::call::new_uuid;
use dispatcher_core::{Call, CallFilter, ControlMessage, Submission, Task, TaskMessage};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::LOCAL_CHANNEL;
use crate::error::{Error, Result};
use crate::history::History;

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) history: Mutex<History>,
    /// Calls finished so far (in the history or dropped from it); shared with every
    /// [`FinishedCounter`].
    pub(super) finished: Arc<AtomicU64>,
    /// The smallest count a `wait_for_finished` waits for (`u64::MAX`: none). The loop signals
    /// the `finished` watch only when the count reaches it, so a waiter is not woken for every
    /// turn of the loop.
    pub(super) wanted: AtomicU64,
}

impl Shared {
    pub(super) fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The count of Calls a service has finished (all outcomes, rejected included), readable from
/// anywhere: [`ServiceHandle::finished_counter`]. It keeps only the counter alive, not the service.
///
/// ```
/// # async fn demo(handle: &dispatcher_runtime::ServiceHandle) {
/// let counter = handle.finished_counter();
/// tokio::spawn(async move {
///     let before = counter.get();
///     tokio::time::sleep(std::time::Duration::from_secs(1)).await;
///     tracing::info!(calls_per_sec = counter.get() - before, "throughput");
/// });
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FinishedCounter(Arc<AtomicU64>);

impl FinishedCounter {
    /// Calls finished so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Where a local submission comes from (counted by the `producers` command).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// [`ServiceHandle::submit`].
    Local,
    /// `ServiceBuilder::on_start`.
    OnStart,
    /// `ServiceBuilder::schedule`.
    Scheduled,
}

pub(super) enum Command {
    Submit {
        message: TaskMessage,
        origin: Origin,
    },
    Control {
        message: ControlMessage,
        reply: oneshot::Sender<Value>,
    },
    Shutdown {
        grace: Option<Duration>,
    },
}

/// A running service: submit tasks locally, query it, stop it.
#[derive(Debug)]
pub struct ServiceHandle {
    pub(super) node_id: String,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) shared: Arc<Shared>,
    pub(super) finished: watch::Receiver<u64>,
    pub(super) join: Mutex<Option<JoinHandle<()>>>,
}

impl ServiceHandle {
    /// This service's node id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Runs a task on this service without a broker; returns the Call's uuid.
    pub async fn submit<T: Task>(&self, submission: Submission<T>) -> Result<String> {
        let (_, message) = submission.into_message(LOCAL_CHANNEL)?;
        self.submit_message(message).await
    }

    /// Runs an untyped task message on this service; returns the Call's uuid.
    pub async fn submit_message(&self, mut message: TaskMessage) -> Result<String> {
        let uuid = message.uuid.get_or_insert_with(new_uuid).clone();
        self.commands
            .send(Command::Submit {
                message,
                origin: Origin::Local,
            })
            .await
            .map_err(|_| Error::ServiceStopped)?;
        Ok(uuid)
    }

    /// Runs a control command and returns its reply (as a broker client would get it).
    pub async fn control(&self, command: &str, data: Map<String, Value>) -> Result<Value> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Control {
                message: ControlMessage {
                    control: command.to_owned(),
                    control_data: data,
                    reply_to: None,
                },
                reply: tx,
            })
            .await
            .map_err(|_| Error::ServiceStopped)?;
        rx.await.map_err(|_| Error::ServiceStopped)
    }

    /// Finished Calls matching `filter`, oldest first.
    pub fn history(&self, filter: &CallFilter) -> Vec<Call> {
        self.shared.history().select(filter)
    }

    /// The bytes the history holds now (at most [`crate::ServiceConfig::history_max_bytes`]; see
    /// [`crate::History::bytes`]).
    pub fn history_bytes(&self) -> usize {
        self.shared.history().bytes()
    }

    /// Calls finished so far (all outcomes, rejected included).
    pub fn finished_count(&self) -> u64 {
        self.shared.finished.load(Ordering::SeqCst)
    }

    /// A handle on [`ServiceHandle::finished_count`] that can be cloned and moved into a task (a
    /// watchdog, a memory housekeeper) and outlives a borrow of this handle.
    pub fn finished_counter(&self) -> FinishedCounter {
        FinishedCounter(self.shared.finished.clone())
    }

    /// Waits until at least `count` Calls have finished.
    pub async fn wait_for_finished(&self, count: u64, timeout: Duration) -> Result<()> {
        let mut rx = self.finished.clone();
        let outcome = tokio::time::timeout(timeout, async {
            loop {
                rx.borrow_and_update();
                // Ask to be woken at `count`, then look: either the loop sees the wish or this
                // sees the count (both sequentially consistent).
                self.shared.wanted.fetch_min(count, Ordering::SeqCst);
                if self.finished_count() >= count {
                    return Ok(());
                }
                rx.changed().await?;
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(watch::error::RecvError { .. })) => {
                if self.finished_count() >= count {
                    Ok(())
                } else {
                    Err(Error::ServiceStopped)
                }
            }
            Err(_) => Err(Error::Timeout(
                timeout,
                format!(
                    "{count} finished Calls ({} finished)",
                    self.finished_count()
                ),
            )),
        }
    }

    /// Stops the service with the configured grace period and waits for it.
    pub async fn shutdown(&self) -> Result<()> {
        self.shutdown_with_grace(None).await
    }

    /// Stops taking work, lets running Calls finish within `grace` (the configured one when
    /// `None`), ends the rest, and waits for the loop to exit. Calls still delayed, blocked or
    /// queued are recorded as `canceled` and logged with their task and arguments.
    ///
    /// Called again while a shutdown is under way (e.g. on a second SIGTERM), a shorter `grace`
    /// brings the deadline forward: `Some(Duration::ZERO)` ends the running Calls at once.
    pub async fn shutdown_with_grace(&self, grace: Option<Duration>) -> Result<()> {
        let _ = self.commands.send(Command::Shutdown { grace }).await;
        self.join().await
    }

    /// Waits until the service loop has exited. Cancel-safe: dropping the future and calling it
    /// again later is fine.
    pub async fn join(&self) -> Result<()> {
        // The loop owns the sender of `finished`: it closes when the loop is done.
        let mut rx = self.finished.clone();
        while rx.changed().await.is_ok() {}
        let handle = self.join.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            h.await.map_err(|e| Error::LoopFailed(e.to_string()))?;
        }
        Ok(())
    }
}
