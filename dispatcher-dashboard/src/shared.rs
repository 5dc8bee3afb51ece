//! State shared by the collector, the web handlers and the actions: asking the services, and
//! the durable queue's tables.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use dispatcher_broker_pg::queue;
use dispatcher_core::control::{request_with, Reply, RequestOptions};
use dispatcher_core::Broker;
use serde_json::{Map, Value};
use tokio::sync::{watch, Notify};

use crate::snapshot::{Jobs, Snapshot};
use crate::DashboardConfig;

/// What an operator does to a failed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobAction {
    /// Available again now, attempts starting over.
    Retry,
    /// Deleted.
    Discard,
}

/// Failed and scheduled jobs listed.
const JOBS_LISTED: i64 = 50;

/// State shared by the collector, the web handlers and the actions.
pub(crate) struct Shared {
    pub config: DashboardConfig,
    pub auth: crate::auth::Auth,
    pub broker: Arc<dyn Broker>,
    pub snapshot: watch::Sender<Arc<Snapshot>>,
    /// When a page or a live stream last asked.
    pub last_view: Mutex<Instant>,
    /// Wakes the collector for a round now (after an action).
    pub poke: Notify,
    /// True once the dashboard is dropped.
    pub stop: watch::Receiver<bool>,
    /// The connection for the queue's tables.
    pub jobs_client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

impl Shared {
    /// Someone is looking: rounds run at the full rate.
    pub fn viewed(&self) {
        *self.last_view.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    pub(crate) fn is_viewed(&self) -> bool {
        self.last_view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
            < self.config.viewer_timeout
    }

    /// Sends a control command on every channel and returns the replies (one per service and
    /// channel).
    pub async fn ask(
        &self,
        command: &str,
        data: Map<String, Value>,
    ) -> (Vec<(String, Reply)>, Vec<String>) {
        let options = RequestOptions::new(self.config.control_timeout)
            .quiet(Some(self.config.quiet_window))
            .signing(self.config.signing.clone());
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for channel in &self.config.channels {
            match request_with(&*self.broker, channel, command, data.clone(), &options).await {
                Ok(replies) => out.extend(
                    replies
                        .into_iter()
                        .map(|v| (channel.clone(), Reply::from_value(v))),
                ),
                Err(e) => problems.push(format!("`{command}` on {channel}: {e}")),
            }
        }
        (out, problems)
    }

    /// The queue's connection, opened when missing.
    async fn jobs_client(
        &self,
        slot: &mut Option<tokio_postgres::Client>,
    ) -> Result<(), dispatcher_broker_pg::Error> {
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            *slot = Some(queue::open_client(&self.config.pg).await?);
        }
        Ok(())
    }

    /// Retries or discards a failed job; returns the ids it touched. A connection that fails
    /// is dropped (the next use opens another).
    pub async fn job_action(&self, id: i64, action: JobAction) -> Result<Vec<i64>, String> {
        let schema = self.config.queue_schema.as_deref().ok_or("no queue")?;
        let mut slot = self.jobs_client.lock().await;
        self.jobs_client(&mut slot)
            .await
            .map_err(|e| e.to_string())?;
        let client = slot.as_ref().ok_or("no connection")?;
        let which = queue::KeptJobs::Ids(&[id]);
        let done = match action {
            JobAction::Retry => queue::retry_jobs(client, schema, which).await,
            JobAction::Discard => queue::discard_jobs(client, schema, which).await,
        };
        done.map_err(|e| {
            *slot = None;
            e.to_string()
        })
    }

    pub(crate) async fn read_jobs(&self, schema: &str) -> Jobs {
        let mut slot = self.jobs_client.lock().await;
        let read = async {
            self.jobs_client(&mut slot).await?;
            let Some(client) = slot.as_ref() else {
                return Err(dispatcher_broker_pg::Error::Closed);
            };
            let stats = queue::stats(client, schema).await?;
            let failed = queue::failed(client, schema, None, JOBS_LISTED).await?;
            let scheduled = queue::scheduled(client, schema, None, JOBS_LISTED).await?;
            Ok::<_, dispatcher_broker_pg::Error>(Jobs {
                stats: Some(stats),
                failed,
                scheduled,
                error: None,
            })
        };
        match tokio::time::timeout(self.config.control_timeout, read).await {
            Ok(Ok(j)) => j,
            Ok(Err(e)) => {
                *slot = None;
                Jobs {
                    error: Some(e.to_string()),
                    ..Jobs::default()
                }
            }
            Err(_) => {
                *slot = None;
                Jobs {
                    error: Some(format!(
                        "the queue's tables did not answer within {:?}",
                        self.config.control_timeout
                    )),
                    ..Jobs::default()
                }
            }
        }
    }
}
