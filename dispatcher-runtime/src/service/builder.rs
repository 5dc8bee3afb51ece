//! Building and starting a service.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dispatcher_core::broker;
use dispatcher_core::call::new_uuid;
use dispatcher_core::chunk::Assembler;
use dispatcher_core::signing::SigningKey;
use dispatcher_core::ConsumerInfo;
use dispatcher_core::{Broker, Pool, Registry, Submission, Task, TaskMessage};
use futures_util::stream::SelectAll;
use tokio::sync::{mpsc, watch};

use super::admission::{Delays, Duplicates};
use super::handle::{Command, Origin, Shared};
use super::record::Counters;
use super::{
    tag_subscription, LogLevelControl, Loop, Names, ServiceConfig, ServiceHandle, LOCAL_CHANNEL,
};
use crate::error::{Error, Result};
use crate::history::History;

/// Builds and starts a service.
///
/// ```
/// use std::time::Duration;
/// use dispatcher_core::{task, Outcome, TaskRegistry};
/// use dispatcher_runtime::{InProcessPool, Service};
///
/// #[task(name = "docs.double")]
/// fn double(x: i64) -> i64 { x * 2 }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dispatcher_runtime::Result<()> {
/// let service = Service::builder()
///     .registry(TaskRegistry::new().register::<double>())
///     .pool(InProcessPool::new(2))
///     .start()
///     .await?;
/// service.submit(double::call(21)).await?;
/// service.wait_for_finished(1, Duration::from_secs(5)).await?;
/// let calls = service.history(&Default::default());
/// assert_eq!(calls[0].outcome, Some(Outcome::Ok));
/// assert_eq!(calls[0].result, Some(42.into()));
/// service.shutdown().await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct ServiceBuilder {
    config: ServiceConfig,
    registry: Option<Arc<dyn Registry>>,
    brokers: Vec<Arc<dyn Broker>>,
    pool: Option<Box<dyn Pool>>,
    on_start: Vec<TaskMessage>,
    scheduled: Vec<(TaskMessage, Duration)>,
    errors: Vec<Error>,
    log_control: Option<Arc<dyn LogLevelControl>>,
    signing: Option<SigningKey>,
}

impl std::fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("config", &self.config)
            .field("brokers", &self.brokers.len())
            .field("has_pool", &self.pool.is_some())
            .finish_non_exhaustive()
    }
}

/// Namespace for [`Service::builder`].
#[derive(Debug)]
pub struct Service;

impl Service {
    /// A builder with the default configuration.
    pub fn builder() -> ServiceBuilder {
        ServiceBuilder {
            config: ServiceConfig::default(),
            registry: None,
            brokers: Vec::new(),
            pool: None,
            on_start: Vec::new(),
            scheduled: Vec::new(),
            errors: Vec::new(),
            log_control: None,
            signing: None,
        }
    }
}

impl ServiceBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: ServiceConfig) -> Self {
        self.config = config;
        self
    }

    /// The registry of tasks this service runs (required).
    pub fn registry(mut self, registry: impl Registry) -> Self {
        self.registry = Some(Arc::new(registry));
        self
    }

    /// A shared registry.
    pub fn shared_registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Adds a broker to listen on (none: only local submissions).
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.brokers.push(broker);
        self
    }

    /// The pool that runs Calls (required).
    pub fn pool(mut self, pool: impl Pool) -> Self {
        self.pool = Some(Box::new(pool));
        self
    }

    /// Listens on these channels instead of the default.
    pub fn channels<I: IntoIterator<Item = S>, S: Into<String>>(mut self, channels: I) -> Self {
        self.config.channels = channels.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the node id.
    pub fn node_id(mut self, node_id: impl Into<String>) -> Self {
        self.config.node_id = node_id.into();
        self
    }

    /// Sets the history size.
    pub fn history_size(mut self, size: usize) -> Self {
        self.config.history_size = size;
        self
    }

    /// Sets the most bytes the history holds (see [`ServiceConfig::history_max_bytes`]).
    pub fn history_max_bytes(mut self, bytes: usize) -> Self {
        self.config.history_max_bytes = bytes;
        self
    }

    /// Sets the longest field of a Call kept whole in the history (see
    /// [`ServiceConfig::history_field_max_bytes`]).
    pub fn history_field_max_bytes(mut self, bytes: usize) -> Self {
        self.config.history_field_max_bytes = bytes;
        self
    }

    /// Sets the most Calls that may wait at once.
    pub fn max_waiting(mut self, max: usize) -> Self {
        self.config.max_waiting = max;
        self
    }

    /// Sets the queue length at which the service stops taking messages from its brokers (see
    /// [`ServiceConfig::intake_pause_at`]).
    pub fn intake_pause_at(mut self, queued: usize) -> Self {
        self.config.intake_pause_at = queued;
        self
    }

    /// Sets the shutdown grace period.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace = grace;
        self
    }

    /// Requires every task and control message to be signed with `key` (see
    /// [`dispatcher_core::signing`]); unsigned, forged and stale ones are rejected and counted. Replies are
    /// signed too.
    pub fn require_signatures(mut self, key: SigningKey) -> Self {
        self.signing = Some(key);
        self
    }

    /// Lets the `set_log_level` control command change the log level.
    pub fn log_control(mut self, control: Arc<dyn LogLevelControl>) -> Self {
        self.log_control = Some(control);
        self
    }

    /// Submits this task once, when the service starts.
    pub fn on_start<T: Task>(mut self, submission: Submission<T>) -> Self {
        match submission.into_message(LOCAL_CHANNEL) {
            Ok((_, m)) => self.on_start.push(m),
            Err(e) => self.errors.push(e.into()),
        }
        self
    }

    /// Submits this task on this node every `every`, the first time one interval after start.
    pub fn schedule<T: Task>(mut self, submission: Submission<T>, every: Duration) -> Self {
        if every.is_zero() {
            self.errors.push(Error::Config(format!(
                "schedule of task {:?}: the interval must be above zero",
                T::NAME
            )));
            return self;
        }
        match submission.into_message(LOCAL_CHANNEL) {
            Ok((_, m)) => self.scheduled.push((m, every)),
            Err(e) => self.errors.push(e.into()),
        }
        self
    }

    /// Checks the configuration, starts the pool, subscribes to the brokers and starts the loop.
    pub async fn start(self) -> Result<ServiceHandle> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(e);
        }
        let registry = self.registry.ok_or_else(|| {
            Error::Config("no registry: call ServiceBuilder::registry(...)".into())
        })?;
        registry.check()?;
        let mut pool = self
            .pool
            .ok_or_else(|| Error::Config("no pool: call ServiceBuilder::pool(...)".into()))?;
        let config = self.config;
        if config.channels.is_empty() && !self.brokers.is_empty() {
            return Err(Error::Config(
                "brokers given but no channels to listen on".into(),
            ));
        }
        for c in &config.channels {
            broker::validate_channel(c)?;
        }
        if config.intake_pause_at == 0 {
            return Err(Error::Config(
                "intake_pause_at must be at least 1 (the queue length at which the service stops reading its brokers)".into(),
            ));
        }
        let capacity = config.event_capacity.max(16);
        let (events_tx, events_rx) = mpsc::channel(capacity);
        pool.start(events_tx).await?;
        let mut consumer = ConsumerInfo::new(pool.workers().len().max(1));
        for name in registry.names() {
            if let Some(limit) = registry.lookup(name).and_then(|t| t.config().concurrency) {
                consumer.concurrency.push((name.to_owned(), limit));
            }
        }
        let mut incoming = SelectAll::new();
        for b in &self.brokers {
            b.consumer(&consumer);
        }
        for (i, b) in self.brokers.iter().enumerate() {
            let sub = b.subscribe(&config.channels).await?;
            incoming.push(tag_subscription(i, sub));
        }
        let (cmd_tx, cmd_rx) = mpsc::channel(capacity);
        let (finished_tx, finished_rx) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            history: Mutex::new(History::with_limits(
                config.history_size,
                config.history_max_bytes,
                config.history_field_max_bytes,
            )),
            finished: Arc::new(AtomicU64::new(0)),
            wanted: AtomicU64::new(u64::MAX),
        });
        let mut producers = Vec::new();
        for m in self.on_start {
            let _ = cmd_tx.try_send(Command::Submit {
                message: m,
                origin: Origin::OnStart,
            });
        }
        for (m, every) in self.scheduled {
            let tx = cmd_tx.clone();
            producers.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let mut msg = m.clone();
                    msg.uuid = Some(new_uuid());
                    if tx
                        .send(Command::Submit {
                            message: msg,
                            origin: Origin::Scheduled,
                        })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }));
        }
        let node_id = config.node_id.clone();
        let broker_count = self.brokers.len();
        let metrics = crate::metrics::ServiceMetrics::new(&*registry);
        let state = Loop {
            names: Names::new(&config.node_id),
            backlog_changed: false,
            assembler: Assembler::new(config.chunks),
            config,
            registry,
            pool,
            brokers: self.brokers,
            shared: shared.clone(),
            finished: finished_tx,
            metrics,
            log_control: self.log_control,
            signing: self.signing,
            finished_buf: Vec::new(),
            next_key: 0,
            pending: HashMap::default(),
            running: 0,
            delayed: Delays::default(),
            queue: VecDeque::new(),
            dups: Duplicates::default(),
            counters: Counters {
                per_broker: vec![0; broker_count],
                ..Counters::default()
            },
            started: Instant::now(),
            producers,
            stopping: false,
            delivery: None,
            jitter: super::record::Jitter::new(),
            answered: super::Answered::default(),
            via_control: false,
            control_path: super::answered::ControlPath::default(),
        };
        let join = tokio::spawn(state.run(events_rx, cmd_rx, incoming));
        tracing::info!(node = %node_id, "service started");
        Ok(ServiceHandle {
            node_id,
            commands: cmd_tx,
            shared,
            finished: finished_rx,
            join: Mutex::new(Some(join)),
        })
    }
}
