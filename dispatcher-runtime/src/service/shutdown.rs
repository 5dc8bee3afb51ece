//! Shutdown: stop taking work, record the Calls that had not started as `canceled`, give the
//! running ones the grace period (cut short by a second shutdown request with a shorter grace),
//! then end the rest. Every Call abandoned this way is logged with its task and arguments (see
//! [`super::record`]), so it can be sent again.

use std::time::Duration;

use dispatcher_core::call::now_epoch;
use dispatcher_core::pool::{CallKey, PoolEvent};
use dispatcher_core::Outcome;
use futures_util::stream::SelectAll;
use tokio::sync::mpsc;

use super::{IncomingStream, Loop, Stage};

impl Loop {
    pub(super) fn begin_shutdown(&mut self, incoming: &mut IncomingStream) {
        self.stopping = true;
        *incoming = SelectAll::new();
        for p in self.producers.drain(..) {
            p.abort();
        }
        let waiting: Vec<CallKey> = self
            .pending
            .iter()
            .filter(|(_, p)| p.stage != Stage::Running)
            .map(|(k, _)| *k)
            .collect();
        if !waiting.is_empty() {
            tracing::info!(
                count = waiting.len(),
                "shutdown: abandoning Calls that had not started (each logged with its task and arguments)"
            );
        }
        for k in waiting {
            self.remove_waiting(
                k,
                Outcome::Canceled,
                "abandoned at shutdown before it started",
            );
        }
        tracing::info!(
            running = self.pending.len(),
            "shutdown: waiting for running Calls"
        );
    }

    pub(super) async fn finish_shutdown(mut self, mut events: mpsc::Receiver<PoolEvent>) {
        self.flush_finished();
        self.pool.shutdown(Duration::ZERO).await;
        // Collect what the pool reported while stopping.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while !self.pending.is_empty() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(ev)) => {
                    self.on_pool_event(ev);
                    self.flush_finished();
                }
                _ => break,
            }
        }
        let left: Vec<CallKey> = self.pending.keys().copied().collect();
        if !left.is_empty() {
            tracing::warn!(
                count = left.len(),
                "shutdown: Calls ended without a report from the pool (each logged with its task and arguments)"
            );
        }
        for k in left {
            if let Some(p) = self.take_pending(k) {
                self.record(
                    &p.span,
                    p.call,
                    Outcome::Canceled,
                    Some("ended at shutdown".into()),
                    None,
                    now_epoch(),
                );
            }
        }
        self.flush_finished();
        tracing::info!(node = %self.config.node_id, "service stopped");
    }
}
