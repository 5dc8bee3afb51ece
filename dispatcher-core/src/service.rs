//! The service: brokers -> decode -> registry -> duplicate policy -> delay -> capacity queue ->
//! pool -> finished Calls into the bounded history, plus control commands.
//!
//! All scheduling state is owned by one task (the service loop); nothing in it is shared but the
//! history, which handles read under a mutex.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::stream::{SelectAll, StreamExt};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::broker::{self, Broker, Incoming};
use crate::call::{new_uuid, now_epoch, Call, CallFilter, History, Outcome, SharedStr};
use crate::chunk::{Assembler, AssemblerLimits};
use crate::error::{Error, Result};
use crate::message::{decode, ControlMessage, Decoded, TaskMessage};
use crate::pool::{CallKey, Job, Pool, PoolEvent};
use crate::publisher::Submission;
use crate::registry::Registry;
use crate::task::{OnDuplicate, Task, TaskDescriptor};

/// How many of the newest Calls the `status` command includes.
const STATUS_HISTORY: u64 = 20;

/// The channel name recorded on Calls that did not come through a broker.
pub const LOCAL_CHANNEL: &str = "local";

/// Service settings. Every field has a sensible default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// This service's name in replies and Calls. Default: `<hostname-ish>-<pid>`.
    pub node_id: String,
    /// Channels to listen on. Default: `dispatcher`.
    pub channels: Vec<String>,
    /// Finished Calls kept for `history`. Default 10,000.
    pub history_size: usize,
    /// Most Calls waiting at once (delayed, blocked by a duplicate, or queued for a worker); a
    /// further Call is rejected with a reason saying so. Default 100,000.
    pub max_waiting: usize,
    /// Longest delay a message may ask for. Default one day.
    pub max_delay: Duration,
    /// How long running Calls may finish at shutdown before they are ended. Default 30 s.
    pub shutdown_grace: Duration,
    /// Bounds on chunked payloads (their `max_payload_bytes` also bounds unchunked ones).
    pub chunks: AssemblerLimits,
    /// Capacity of the channel from the pool and of the command channel. Default 4096.
    pub event_capacity: usize,
    /// When this many Calls are queued for a worker, the service stops taking messages from its
    /// brokers until fewer are: what it has not taken waits in the broker (`PgBroker`: in the
    /// subscription's buffer, then in PostgreSQL's notification queue), so a flood costs no more
    /// memory than this many Calls. Control messages behind the flood wait as well. Local
    /// submissions and tasks submitted by tasks are not held back; `max_waiting` still applies to
    /// everything taken in. Default 1,000.
    pub intake_pause_at: usize,
    /// Where the application serves metrics (`host:port`), reported by the `metrics` command as
    /// dispatcherd does (`enabled`, `status`). The service itself serves nothing. Default: none.
    pub metrics_endpoint: Option<String>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            node_id: default_node_id(),
            channels: vec!["dispatcher".to_owned()],
            history_size: 10_000,
            max_waiting: 100_000,
            max_delay: Duration::from_secs(86_400),
            shutdown_grace: Duration::from_secs(30),
            chunks: AssemblerLimits::default(),
            event_capacity: 4096,
            intake_pause_at: 1_000,
            metrics_endpoint: None,
        }
    }
}

fn default_node_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Changes the log level of the running process (the `set_log_level` control command).
///
/// The service does not own logging; the application gives it this capability (for example over a
/// `tracing_subscriber::reload` handle). Without one, `set_log_level` replies with an error.
pub trait LogLevelControl: Send + Sync + 'static {
    /// Sets the filter to `level` (e.g. `debug`, `info,dispatcher_core=trace`); returns the
    /// previous one, or why `level` was refused.
    fn set_level(&self, level: &str) -> std::result::Result<String, String>;
}

/// Builds and starts a service.
///
/// ```
/// use std::time::Duration;
/// use dispatcher_core::{task, InProcessPool, Service, TaskRegistry, Outcome};
///
/// #[task(name = "docs.double")]
/// fn double(x: i64) -> i64 { x * 2 }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dispatcher_core::Result<()> {
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
    signing: Option<crate::signing::SigningKey>,
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
    /// [`crate::signing`]); unsigned, forged and stale ones are rejected and counted. Replies are
    /// signed too.
    pub fn require_signatures(mut self, key: crate::signing::SigningKey) -> Self {
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
            Err(e) => self.errors.push(e),
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
            Err(e) => self.errors.push(e),
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
        let mut incoming = SelectAll::new();
        for (i, b) in self.brokers.iter().enumerate() {
            let sub = b.subscribe(&config.channels).await?;
            incoming.push(tag_subscription(i, sub));
        }
        let (cmd_tx, cmd_rx) = mpsc::channel(capacity);
        let (finished_tx, finished_rx) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            history: Mutex::new(History::new(config.history_size)),
            finished: AtomicU64::new(0),
            wanted: AtomicU64::new(u64::MAX),
        });
        let mut producers = Vec::new();
        for m in self.on_start {
            let _ = cmd_tx.try_send(Command::Submit {
                message: m,
                parent: None,
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
                            parent: None,
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
            metrics: crate::metrics::ServiceMetrics::new(),
            log_control: self.log_control,
            signing: self.signing,
            finished_buf: Vec::new(),
            next_key: 0,
            pending: HashMap::default(),
            running: 0,
            delayed: BinaryHeap::new(),
            queue: VecDeque::new(),
            dups: HashMap::new(),
            counters: Counters::default(),
            started: Instant::now(),
            producers,
            stopping: false,
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

#[derive(Debug)]
struct Shared {
    history: Mutex<History>,
    /// Calls finished so far (in the history or dropped from it).
    finished: AtomicU64,
    /// The smallest count a `wait_for_finished` waits for (`u64::MAX`: none). The loop signals
    /// the `finished` watch only when the count reaches it, so a waiter is not woken for every
    /// turn of the loop.
    wanted: AtomicU64,
}

impl Shared {
    fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }
}

enum Command {
    Submit {
        message: TaskMessage,
        parent: Option<String>,
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
    node_id: String,
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    finished: watch::Receiver<u64>,
    join: Mutex<Option<JoinHandle<()>>>,
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
                parent: None,
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

    /// Calls finished so far (all outcomes, rejected included).
    pub fn finished_count(&self) -> u64 {
        self.shared.finished.load(Ordering::SeqCst)
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
    /// queued are recorded as `canceled` and their uuids logged.
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

#[derive(Debug, Default, Clone)]
struct Counters {
    received: u64,
    control: u64,
    dispatched: u64,
    ignored_fields: u64,
    signature_failures: u64,
    by_outcome: [u64; 8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Delayed,
    Blocked,
    Queued,
    Running,
}

struct Pending {
    call: Call,
    task: &'static TaskDescriptor,
    args: Vec<Value>,
    stage: Stage,
    dup_key: Option<String>,
    /// The Call's span (uuid, task): its log lines are recorded inside it.
    span: tracing::Span,
}

#[derive(Default)]
struct DupState {
    admitted: usize,
    blocked: VecDeque<CallKey>,
}

/// Hashes [`CallKey`]s: they are unique counters from one service, so a multiply spreads them
/// well enough and costs far less than SipHash (the map is looked up several times per Call).
#[derive(Clone, Copy, Default)]
struct KeyHasher;

impl std::hash::BuildHasher for KeyHasher {
    type Hasher = KeyHash;
    fn build_hasher(&self) -> KeyHash {
        KeyHash(0)
    }
}

#[derive(Default)]
struct KeyHash(u64);

impl std::hash::Hasher for KeyHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing; hashbrown takes the top 7 bits and the low bits, both well mixed.
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 ^= self.0 >> 29;
    }
}

/// The strings every Call of this service shares: its node id and the channels messages came on.
struct Names {
    node_id: SharedStr,
    channels: Vec<SharedStr>,
}

/// Most distinct channel names kept for sharing (a service listens on a few).
const MAX_SHARED_CHANNELS: usize = 64;

impl Names {
    fn new(node_id: &str) -> Self {
        Names {
            node_id: SharedStr::from(node_id),
            channels: vec![SharedStr::from(LOCAL_CHANNEL)],
        }
    }

    /// The shared copy of `name` (a new one for a name not seen before).
    fn channel(&mut self, name: &str) -> SharedStr {
        if let Some(c) = self.channels.iter().find(|c| c.as_str() == name) {
            return c.clone();
        }
        let c = SharedStr::from(name);
        if self.channels.len() < MAX_SHARED_CHANNELS {
            self.channels.push(c.clone());
        }
        c
    }
}

struct Loop {
    config: ServiceConfig,
    registry: Arc<dyn Registry>,
    pool: Box<dyn Pool>,
    brokers: Vec<Arc<dyn Broker>>,
    shared: Arc<Shared>,
    next_key: CallKey,
    /// Boxed: the map's table then holds a pointer per slot rather than a whole Call, so its
    /// empty slots cost little and Calls move in and out by pointer.
    pending: HashMap<CallKey, Box<Pending>, KeyHasher>,
    /// The node id and channel names Calls share.
    names: Names,
    /// The queue grew since the pool was last told its length.
    backlog_changed: bool,
    /// How many of `pending` are running (so `waiting_count` is O(1)).
    running: usize,
    delayed: BinaryHeap<Reverse<(Instant, CallKey)>>,
    queue: VecDeque<CallKey>,
    dups: HashMap<String, DupState>,
    assembler: Assembler,
    counters: Counters,
    started: Instant,
    producers: Vec<JoinHandle<()>>,
    stopping: bool,
    /// Counts finished Calls for waiters; dropped with the loop, so waiters learn it stopped.
    finished: watch::Sender<u64>,
    log_control: Option<Arc<dyn LogLevelControl>>,
    signing: Option<crate::signing::SigningKey>,
    /// Calls finished in this turn of the loop, not yet in the history: they go in together
    /// (one lock, one wake-up of waiters) at the end of the turn, see [`Loop::flush_finished`].
    finished_buf: Vec<Call>,
    metrics: crate::metrics::ServiceMetrics,
}

/// Most pool events or commands handled in one turn of the service loop.
const BATCH: usize = 64;

/// Most broker payloads taken in one turn of the service loop. Fewer than [`BATCH`]: the loop
/// reads the workers' reports between two batches, so a long run of incoming messages does not
/// leave finished workers idle.
const INCOMING_BATCH: usize = 16;

/// Payloads from every broker, tagged with the broker's index; `None` marks the end of a
/// broker's subscription.
type IncomingStream =
    SelectAll<futures_core::stream::BoxStream<'static, (usize, Option<Incoming>)>>;

fn tag_subscription(
    broker: usize,
    sub: crate::broker::Subscription,
) -> futures_core::stream::BoxStream<'static, (usize, Option<Incoming>)> {
    sub.map(move |m| (broker, Some(m)))
        .chain(futures_util::stream::once(async move { (broker, None) }))
        .boxed()
}

/// Takes what the brokers have ready, up to `most` payloads, into `batch`; resolves to how
/// many (0 when no subscription is left, which disables the branch for the turn, as `None` from
/// `next()` would), or waits while there is nothing.
fn next_incoming<'a>(
    incoming: &'a mut IncomingStream,
    batch: &'a mut Vec<(usize, Option<Incoming>)>,
    most: usize,
) -> impl std::future::Future<Output = usize> + 'a {
    std::future::poll_fn(move |cx| {
        while batch.len() < most {
            match incoming.poll_next_unpin(cx) {
                std::task::Poll::Ready(Some(item)) => batch.push(item),
                std::task::Poll::Ready(None) => return std::task::Poll::Ready(batch.len()),
                std::task::Poll::Pending if batch.is_empty() => return std::task::Poll::Pending,
                std::task::Poll::Pending => break,
            }
        }
        std::task::Poll::Ready(batch.len())
    })
}

/// Subscribes again after a broker's subscription ended, with backoff, until it works or the
/// service stops (the receiver is gone).
fn resubscribe(
    broker: usize,
    b: Arc<dyn Broker>,
    channels: Vec<String>,
    tx: mpsc::Sender<(usize, crate::broker::Subscription)>,
) {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(100);
        loop {
            tokio::time::sleep(delay).await;
            if tx.is_closed() {
                return;
            }
            match b.subscribe(&channels).await {
                Ok(sub) => {
                    tracing::info!(broker, "subscribed again after the subscription ended");
                    let _ = tx.send((broker, sub)).await;
                    return;
                }
                Err(e) => {
                    tracing::warn!(broker, error = %e, retry_in = ?delay, "resubscribe failed");
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
}

impl Loop {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<PoolEvent>,
        mut commands: mpsc::Receiver<Command>,
        mut incoming: IncomingStream,
    ) {
        let mut expiry = tokio::time::interval(Duration::from_secs(1));
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop_at: Option<Instant> = None;
        let (resub_tx, mut resubs) = mpsc::channel(self.brokers.len().max(1));
        let mut event_batch = Vec::with_capacity(BATCH);
        let mut polled = Vec::with_capacity(BATCH);
        let mut command_batch = Vec::with_capacity(BATCH);
        let mut incoming_batch = Vec::with_capacity(BATCH);
        loop {
            let next_delay = self.delayed.peek().map(|Reverse((t, _))| *t);
            let stopping = stop_at.is_some();
            let intake_room = self
                .config
                .intake_pause_at
                .saturating_sub(self.queue.len())
                .min(INCOMING_BATCH);
            tokio::select! {
                biased;
                // `recv_many` gives 0 only when the channel is closed and empty: that disables
                // the branch for this turn, as `Some(_) = recv()` would.
                1.. = events.recv_many(&mut event_batch, BATCH) => {
                    for ev in event_batch.drain(..) {
                        self.on_pool_event(ev);
                    }
                }
                () = std::future::poll_fn(|cx| self.pool.poll_events(cx, &mut polled)) => {
                    for ev in polled.drain(..) {
                        self.on_pool_event(ev);
                    }
                }
                1.. = commands.recv_many(&mut command_batch, BATCH), if !stopping => {
                    for cmd in command_batch.drain(..) {
                        if stop_at.is_some() {
                            // Not taken in after shutdown began (as if never received).
                            continue;
                        }
                        match cmd {
                            Command::Submit { message, parent } => {
                                let _ = self.accept_task(message, LOCAL_CHANNEL, parent);
                            }
                            Command::Control { message, reply } => {
                                let v = self.control(message);
                                let _ = reply.send(v);
                            }
                            Command::Shutdown { grace } => {
                                let grace = grace.unwrap_or(self.config.shutdown_grace);
                                stop_at = Some(Instant::now() + grace);
                                self.begin_shutdown(&mut incoming);
                            }
                        }
                    }
                },
                // Up to INCOMING_BATCH payloads per turn, and no more than the queue has room
                // for below `intake_pause_at` (a payload queues one Call at most).
                1.. = next_incoming(&mut incoming, &mut incoming_batch, intake_room),
                    if !stopping && intake_room > 0 =>
                {
                    for (b, msg) in incoming_batch.drain(..) {
                        match msg {
                            Some(msg) => self.on_incoming(b, msg),
                            None => {
                                tracing::error!(broker = b, "a broker's subscription ended; nothing arrives from it until it is subscribed again");
                                if let Some(broker) = self.brokers.get(b).cloned() {
                                    resubscribe(b, broker, self.config.channels.clone(), resub_tx.clone());
                                }
                            }
                        }
                    }
                }
                Some((b, sub)) = resubs.recv(), if !stopping => incoming.push(tag_subscription(b, sub)),
                _ = sleep_until(next_delay), if next_delay.is_some() && !stopping => self.release_delayed(),
                _ = expiry.tick() => self.on_tick(),
                _ = sleep_until(stop_at), if stopping => break,
            }
            self.flush_finished();
            if self.backlog_changed {
                self.backlog_changed = false;
                self.pool.set_backlog(self.queue.len());
            }
            if stop_at.is_some() && self.pending.is_empty() {
                break;
            }
        }
        self.finish_shutdown(events).await;
    }

    fn begin_shutdown(&mut self, incoming: &mut IncomingStream) {
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
            let uuids: Vec<&str> = waiting
                .iter()
                .filter_map(|k| self.pending.get(k).map(|p| p.call.uuid.as_str()))
                .collect();
            tracing::warn!(
                count = uuids.len(),
                ?uuids,
                "shutdown: abandoning Calls that had not started"
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

    async fn finish_shutdown(mut self, mut events: mpsc::Receiver<PoolEvent>) {
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
            let uuids: Vec<String> = left
                .iter()
                .filter_map(|k| self.pending.get(k).map(|p| p.call.uuid.clone()))
                .collect();
            tracing::warn!(
                ?uuids,
                "shutdown: Calls ended without a report from the pool"
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

    fn next_key(&mut self) -> CallKey {
        self.next_key += 1;
        self.next_key
    }

    fn waiting_count(&self) -> usize {
        self.pending.len() - self.running
    }

    /// Removes a Call from `pending`, keeping the running count.
    fn take_pending(&mut self, key: CallKey) -> Option<Pending> {
        let p = self.pending.remove(&key)?;
        if p.stage == Stage::Running {
            self.running -= 1;
        }
        Some(*p)
    }

    fn reject(&mut self, mut call: Call, reason: String) {
        let span = call_span(&call.uuid, &call.task);
        span.in_scope(|| tracing::warn!(uuid = %call.uuid, task = %call.task, channel = %call.channel, %reason, "message rejected"));
        call.queued_at = None;
        self.record(
            &span,
            call,
            Outcome::Rejected,
            Some(reason),
            None,
            now_epoch(),
        );
    }

    fn reject_payload(&mut self, channel: &str, reason: String) {
        let channel = self.names.channel(channel);
        let call = Call::received(
            new_uuid(),
            String::new(),
            self.names.node_id.clone(),
            channel,
        );
        self.reject(call, reason);
    }

    /// Puts a finished Call into the history.
    fn record(
        &mut self,
        span: &tracing::Span,
        mut call: Call,
        outcome: Outcome,
        error: Option<String>,
        result: Option<Value>,
        at: f64,
    ) {
        call.finish(outcome, error, at);
        call.result = result;
        self.counters.by_outcome[outcome as usize] += 1;
        let _in_span = span.enter();
        match outcome {
            Outcome::Ok | Outcome::Discarded => {
                tracing::debug!(uuid = %call.uuid, task = %call.task, %outcome, run_ms = call.run_ms, "call finished")
            }
            _ => {
                tracing::warn!(uuid = %call.uuid, task = %call.task, %outcome, error = call.error.as_deref(), "call failed")
            }
        }
        self.metrics.call_finished(&call);
        self.finished_buf.push(call);
    }

    /// Moves the Calls finished in this turn into the history, under one lock, then tells
    /// waiters (history first, so a waiter that sees the count also finds the Calls).
    fn flush_finished(&mut self) {
        if self.finished_buf.is_empty() {
            return;
        }
        let n = self.finished_buf.len() as u64;
        {
            let mut history = self.shared.history();
            for call in self.finished_buf.drain(..) {
                history.push(call);
            }
        }
        let total = self.shared.finished.fetch_add(n, Ordering::SeqCst) + n;
        if total >= self.shared.wanted.load(Ordering::SeqCst) {
            // Every waiter wakes and asks again for what it still waits for.
            self.shared.wanted.store(u64::MAX, Ordering::SeqCst);
            self.finished.send_replace(total);
        }
        self.export_metrics();
    }

    fn on_incoming(&mut self, broker: usize, msg: Incoming) {
        if msg.payload.len() > self.config.chunks.max_payload_bytes {
            self.counters.received += 1;
            let e = Error::TooLarge {
                what: "payload",
                size: msg.payload.len(),
                limit: self.config.chunks.max_payload_bytes,
            };
            self.reject_payload(&msg.channel, e.to_string());
            return;
        }
        if self.signing.is_some() && !msg.payload.contains("\"__dispatcherd_chunk__\"") {
            // Not a piece of a larger payload: it must be a signed envelope itself.
            self.on_payload(broker, &msg.channel, &msg.payload);
            return;
        }
        match decode(&msg.payload) {
            Ok((Decoded::Chunk(env), _)) => match self.assembler.push(env, Instant::now()) {
                Ok(Some(whole)) => self.on_payload(broker, &msg.channel, &whole),
                Ok(None) => {}
                Err(e) => {
                    self.counters.received += 1;
                    self.reject_payload(&msg.channel, e.to_string());
                }
            },
            Ok((decoded, ignored)) => self.on_decoded(broker, &msg.channel, decoded, ignored.any()),
            Err(e) => {
                let trusted = self.signing.is_none();
                self.reject_undecodable(broker, &msg.channel, &msg.payload, trusted, e.to_string());
            }
        }
    }

    /// A whole payload (unchunked or reassembled): verified when signatures are required, then
    /// decoded.
    fn on_payload(&mut self, broker: usize, channel: &str, payload: &str) {
        let verified;
        let payload = match &self.signing {
            Some(key) => match key.verify(payload) {
                Ok(inner) => {
                    verified = inner;
                    verified.as_str()
                }
                Err(e) => {
                    self.counters.received += 1;
                    self.counters.signature_failures += 1;
                    self.reject_payload(channel, e.to_string());
                    return;
                }
            },
            None => payload,
        };
        match decode(payload) {
            Ok((Decoded::Chunk(_), _)) => {
                self.counters.received += 1;
                self.reject_payload(channel, "a chunk envelope inside a chunked message".into());
            }
            Ok((decoded, ignored)) => self.on_decoded(broker, channel, decoded, ignored.any()),
            Err(e) => self.reject_undecodable(broker, channel, payload, true, e.to_string()),
        }
    }

    fn on_decoded(&mut self, broker: usize, channel: &str, decoded: Decoded, ignored: bool) {
        match decoded {
            Decoded::Task(t) => {
                if ignored {
                    self.counters.ignored_fields += 1;
                    tracing::debug!(task = %t.task, "ignored timeout/on_duplicate/bind fields: the registry decides");
                }
                let _ = self.accept_task(t, channel, None);
            }
            Decoded::Control(c) => {
                let reply_to = c.reply_to.clone();
                let reply = self.control(c);
                if let Some(reply_to) = reply_to {
                    self.send_reply(broker, reply_to, reply);
                }
            }
            Decoded::Chunk(_) => {}
        }
    }

    /// A payload was rejected: record it, and when it looks like a control message with a
    /// `reply_to`, answer there with the error too (the client would otherwise wait in vain).
    /// `trusted`: the payload is verified, or signatures are not required; an unverified one
    /// gets no reply.
    fn reject_undecodable(
        &mut self,
        broker: usize,
        channel: &str,
        payload: &str,
        trusted: bool,
        reason: String,
    ) {
        self.counters.received += 1;
        if let Some(reply_to) = trusted
            .then(|| crate::message::control_reply_to(payload))
            .flatten()
        {
            self.send_reply(broker, reply_to, json!({ "error": reason.clone() }));
        }
        self.reject_payload(channel, reason);
    }

    /// Publishes a control reply (with this node's id) on `reply_to` through `broker`.
    fn send_reply(&self, broker: usize, reply_to: String, mut reply: Value) {
        let Some(b) = self.brokers.get(broker).cloned() else {
            return;
        };
        if let Value::Object(m) = &mut reply {
            m.entry("node_id")
                .or_insert_with(|| Value::from(self.config.node_id.clone()));
        }
        let signing = self.signing.clone();
        tokio::spawn(async move {
            let payload = match &signing {
                Some(k) => match k.sign(&reply.to_string()) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not sign a control reply");
                        return;
                    }
                },
                None => reply.to_string(),
            };
            if let Err(e) = broker::send(&*b, &reply_to, &payload).await {
                tracing::warn!(channel = %reply_to, error = %e, "could not publish control reply");
            }
        });
    }

    /// Takes a task message in; returns the rejection reason when it was rejected at once.
    fn accept_task(
        &mut self,
        msg: TaskMessage,
        channel: &str,
        parent: Option<String>,
    ) -> std::result::Result<(), String> {
        self.counters.received += 1;
        let uuid = msg.uuid.unwrap_or_else(new_uuid);
        let channel = self.names.channel(channel);
        let mut call = Call::received(uuid, msg.task, self.names.node_id.clone(), channel);
        call.args = Value::Array(msg.args.clone());
        call.kwargs = Value::Object(msg.kwargs.clone());
        call.time_pub = msg.time_pub;
        call.guid = msg.guid;
        call.parent_uuid = parent;
        let Some(task) = self.registry.lookup(&call.task) else {
            let reason = Error::UnknownTask {
                name: call.task.clone(),
            }
            .to_string();
            self.reject(call, reason.clone());
            return Err(reason);
        };
        let args = match task.bind(msg.args, msg.kwargs) {
            Ok(a) => a,
            Err(e) => {
                let reason = e.to_string();
                self.reject(call, reason.clone());
                return Err(reason);
            }
        };
        if self.waiting_count() >= self.config.max_waiting {
            let reason = format!(
                "service is at capacity: {} Calls waiting (max_waiting); the Call was not accepted",
                self.config.max_waiting
            );
            self.reject(call, reason.clone());
            return Err(reason);
        }
        let delay = match msg.delay {
            Some(d) if d > 0.0 => match Duration::try_from_secs_f64(d) {
                Ok(d) if d <= self.config.max_delay => Some(d),
                _ => {
                    let reason = format!(
                        "delay of {d} seconds exceeds the limit of {} seconds (max_delay)",
                        self.config.max_delay.as_secs()
                    );
                    self.reject(call, reason.clone());
                    return Err(reason);
                }
            },
            _ => None,
        };
        let key = self.next_key();
        let span = call_span(&call.uuid, task.name());
        let mut p = Box::new(Pending {
            call,
            task,
            args,
            stage: Stage::Delayed,
            dup_key: None,
            span,
        });
        if let Some(d) = delay {
            p.call.queued_at = Some(now_epoch());
            self.pending.insert(key, p);
            self.delayed.push(Reverse((Instant::now() + d, key)));
        } else {
            self.pending.insert(key, p);
            self.admit(key);
        }
        Ok(())
    }

    fn release_delayed(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((t, key))) = self.delayed.peek().copied() {
            if t > now {
                break;
            }
            self.delayed.pop();
            if self
                .pending
                .get(&key)
                .is_some_and(|p| p.stage == Stage::Delayed)
            {
                self.admit(key);
            }
        }
    }

    /// Applies the duplicate policy to a Call that is ready to run.
    fn admit(&mut self, key: CallKey) {
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        let policy = p.task.config().on_duplicate;
        if policy == OnDuplicate::Parallel {
            self.enqueue(key);
            return;
        }
        let dk = format!("{}\u{0}{}\u{0}{}", p.call.task, p.call.args, p.call.kwargs);
        p.dup_key = Some(dk.clone());
        let st = self.dups.entry(dk.clone()).or_default();
        enum Action {
            Run,
            Block,
            Discard,
        }
        let action = match policy {
            OnDuplicate::Discard if st.admitted > 0 || !st.blocked.is_empty() => Action::Discard,
            OnDuplicate::Serial if st.admitted > 0 => Action::Block,
            OnDuplicate::QueueOne if !st.blocked.is_empty() => Action::Discard,
            OnDuplicate::QueueOne if st.admitted > 0 => Action::Block,
            _ => Action::Run,
        };
        match action {
            Action::Run => {
                st.admitted += 1;
                self.enqueue(key);
            }
            Action::Block => {
                st.blocked.push_back(key);
                if let Some(p) = self.pending.get_mut(&key) {
                    p.stage = Stage::Blocked;
                    p.call.queued_at.get_or_insert_with(now_epoch);
                }
            }
            Action::Discard => {
                if let Some(mut p) = self.take_pending(key) {
                    p.dup_key = None;
                    let reason = format!(
                        "discarded: a duplicate is already running or waiting (on_duplicate = {})",
                        policy.as_str()
                    );
                    self.record(
                        &p.span,
                        p.call,
                        Outcome::Discarded,
                        Some(reason),
                        None,
                        now_epoch(),
                    );
                }
                self.drop_dup_state_if_idle(&dk);
            }
        }
    }

    fn drop_dup_state_if_idle(&mut self, dk: &str) {
        if self
            .dups
            .get(dk)
            .is_some_and(|s| s.admitted == 0 && s.blocked.is_empty())
        {
            self.dups.remove(dk);
        }
    }

    /// A Call with this duplicate key stopped running: let the next blocked one go.
    fn release_dup(&mut self, dk: &str) {
        let mut next = None;
        if let Some(st) = self.dups.get_mut(dk) {
            st.admitted = st.admitted.saturating_sub(1);
            if st.admitted == 0 {
                if let Some(k) = st.blocked.pop_front() {
                    st.admitted += 1;
                    next = Some(k);
                }
            }
        }
        self.drop_dup_state_if_idle(dk);
        if let Some(k) = next {
            self.enqueue(k);
        }
    }

    fn enqueue(&mut self, key: CallKey) {
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        p.stage = Stage::Queued;
        let was_empty = self.queue.is_empty();
        self.queue.push_back(key);
        if was_empty {
            self.dispatch_queue();
        } else {
            // Calls already wait, so no worker is free: the pool reports one becoming free
            // (`Finished`, `Ready`), and the queue is tried again then. The pool hears of the
            // longer queue at the end of this turn (once, not for every Call).
            self.backlog_changed = true;
        }
        if let Some(p) = self.pending.get_mut(&key) {
            if p.stage == Stage::Queued {
                p.call.queued_at.get_or_insert_with(now_epoch);
            }
        }
    }

    fn dispatch_queue(&mut self) {
        if self.stopping {
            return;
        }
        while let Some(&key) = self.queue.front() {
            let Some(p) = self.pending.get_mut(&key) else {
                self.queue.pop_front();
                continue;
            };
            let job = Job {
                key,
                uuid: p.call.uuid.clone(),
                task: p.task,
                args: std::mem::take(&mut p.args),
            };
            match self.pool.try_dispatch(job) {
                Ok(d) => {
                    self.queue.pop_front();
                    p.stage = Stage::Running;
                    self.running += 1;
                    p.call.worker_id = Some(d.worker_id);
                    p.call.pid = Some(d.pid);
                    p.call.started_at = Some(now_epoch());
                    self.counters.dispatched += 1;
                }
                Err(job) => {
                    p.args = job.args;
                    break;
                }
            }
        }
        self.backlog_changed = false;
        self.pool.set_backlog(self.queue.len());
    }

    fn on_pool_event(&mut self, ev: PoolEvent) {
        match ev {
            PoolEvent::Finished {
                key,
                outcome,
                result,
                error,
                at,
            } => {
                let Some(p) = self.take_pending(key) else {
                    tracing::debug!(key, "finish report for a Call no longer tracked");
                    return;
                };
                if let Some(dk) = &p.dup_key {
                    self.release_dup(dk);
                }
                self.record(&p.span, p.call, outcome, error, result, at);
                self.dispatch_queue();
            }
            PoolEvent::Ready => self.dispatch_queue(),
            PoolEvent::Submit {
                parent_uuid,
                message,
            } => {
                let _ = self.accept_task(message, LOCAL_CHANNEL, Some(parent_uuid));
            }
        }
    }

    /// Removes a Call that has not started and records `outcome`.
    fn remove_waiting(&mut self, key: CallKey, outcome: Outcome, reason: &str) {
        if self
            .pending
            .get(&key)
            .is_none_or(|p| p.stage == Stage::Running)
        {
            return;
        }
        let Some(p) = self.take_pending(key) else {
            return;
        };
        match p.stage {
            Stage::Queued => self.queue.retain(|k| *k != key),
            Stage::Blocked => {
                if let Some(dk) = &p.dup_key {
                    if let Some(st) = self.dups.get_mut(dk) {
                        st.blocked.retain(|k| *k != key);
                    }
                    self.drop_dup_state_if_idle(dk);
                }
            }
            Stage::Delayed | Stage::Running => {}
        }
        if p.stage == Stage::Queued {
            if let Some(dk) = &p.dup_key {
                self.release_dup(dk);
            }
        }
        self.record(
            &p.span,
            p.call,
            outcome,
            Some(reason.to_owned()),
            None,
            now_epoch(),
        );
    }

    /// Once a second: expire partial chunked messages, export metrics.
    fn on_tick(&mut self) {
        self.expire_chunks();
        self.flush_finished();
        self.shrink_after_flood();
        self.export_metrics();
        let workers = self.pool.workers();
        self.metrics.gauges(
            self.waiting_count(),
            self.queue.len(),
            self.running,
            self.assembler.partial_count(),
            &workers,
        );
    }

    /// Gives back the room a flood of Calls left in the maps and queues (they never shrink on
    /// their own), once they are mostly empty.
    fn shrink_after_flood(&mut self) {
        const KEEP: usize = 1024;
        if self.pending.capacity() > KEEP && self.pending.len() * 4 < self.pending.capacity() {
            self.pending.shrink_to((self.pending.len() * 2).max(KEEP));
        }
        if self.queue.capacity() > KEEP && self.queue.len() * 4 < self.queue.capacity() {
            self.queue.shrink_to((self.queue.len() * 2).max(KEEP));
        }
        if self.finished_buf.capacity() > KEEP {
            self.finished_buf.shrink_to(KEEP);
        }
    }

    fn export_metrics(&mut self) {
        let c = &self.counters;
        self.metrics.sync(crate::metrics::Counts {
            received: c.received,
            control: c.control,
            dispatched: c.dispatched,
            finished: &c.by_outcome,
        });
    }

    fn expire_chunks(&mut self) {
        for e in self.assembler.expire(Instant::now()) {
            self.counters.received += 1;
            self.reject_payload("", e.to_string());
        }
    }

    // ----- control commands -----

    fn control(&mut self, msg: ControlMessage) -> Value {
        // Replies read the history: it must hold every Call finished so far.
        self.flush_finished();
        self.counters.control += 1;
        let data = msg.control_data;
        match msg.control.as_str() {
            "alive" => json!({}),
            "main" => self.main_status(),
            "workers" => self.workers_status(),
            "running" => self.running(&data),
            "cancel" => self.cancel(&data),
            "history" => self.history(&data),
            "metrics" => self.metrics(),
            "status" => json!({
                "alive": {},
                "main": self.main_status(),
                "workers": self.workers_status(),
                "running": self.running(&Map::new()),
                "metrics": self.metrics(),
                // The newest Calls only: the whole history is the `history` command's.
                "history": self.history(&[("limit".to_owned(), json!(STATUS_HISTORY))].into_iter().collect()),
            }),
            "run" => match serde_json::from_value::<TaskMessage>(Value::Object(data.clone())) {
                Ok(mut m) => {
                    let uuid = m.uuid.get_or_insert_with(new_uuid).clone();
                    match self.accept_task(m, LOCAL_CHANNEL, None) {
                        Ok(()) => {
                            let mut ack = data;
                            ack.insert("uuid".into(), Value::from(uuid));
                            json!({ "ack": ack })
                        }
                        Err(reason) => json!({ "error": reason }),
                    }
                }
                Err(e) => json!({ "error": format!("control_data is not a task message: {e}") }),
            },
            "set_log_level" => match (
                data.get("level").and_then(|l| match l {
                    // dispatcherd also takes Python's numeric levels (logging.WARNING is 30).
                    Value::Number(n) => Some(n.to_string()),
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                }),
                &self.log_control,
            ) {
                (Some(level), Some(ctl)) => match ctl.set_level(&level) {
                    Ok(previous) => {
                        tracing::info!(%level, %previous, "log level changed");
                        json!({ "level": level, "previous_level": previous })
                    }
                    Err(e) => json!({ "error": format!("log level {level:?} refused: {e}") }),
                },
                (None, _) => {
                    json!({ "error": "set_log_level needs control_data {\"level\": \"<filter>\"}, e.g. {\"level\": \"debug\"}" })
                }
                (Some(_), None) => {
                    json!({ "error": "this service has no log level control (ServiceBuilder::log_control)" })
                }
            },
            other => json!({ "error": format!("No control method {other}") }),
        }
    }

    fn main_status(&self) -> Value {
        let c = &self.counters;
        let running = self
            .pending
            .values()
            .filter(|p| p.stage == Stage::Running)
            .count();
        json!({
            "node_id": self.config.node_id,
            "pid": std::process::id(),
            "received_count": c.received,
            "control_count": c.control,
            "uptime": self.started.elapsed().as_secs_f64(),
            "registered_tasks": self.registry.names(),
            "brokers": self.brokers.iter().map(|b| b.status()).collect::<Vec<_>>(),
            "pool": {
                "finished_count": c.by_outcome.iter().sum::<u64>(),
                "dispatched_count": c.dispatched,
                "canceled_count": c.by_outcome[Outcome::Canceled as usize],
                "discard_count": c.by_outcome[Outcome::Discarded as usize],
                "rejected_count": c.by_outcome[Outcome::Rejected as usize],
                "running_count": running,
                "queued_count": self.queue.len(),
                "blocked_count": self.dups.values().map(|d| d.blocked.len()).sum::<usize>(),
                "delayed_count": self.pending.values().filter(|p| p.stage == Stage::Delayed).count(),
                "workers": self.pool.workers().len(),
            },
        })
    }

    fn workers_status(&self) -> Value {
        let mut m = Map::new();
        for w in self.pool.workers() {
            let v = serde_json::to_value(&w).unwrap_or(Value::Null);
            m.insert(format!("worker-{}", w.worker_id), v);
        }
        Value::Object(m)
    }

    fn metrics(&self) -> Value {
        let c = &self.counters;
        let mut finished = Map::new();
        for o in Outcome::ALL {
            finished.insert(o.as_str().to_owned(), Value::from(c.by_outcome[o as usize]));
        }
        json!({
            "received": c.received,
            "control": c.control,
            "dispatched": c.dispatched,
            "ignored_fields": c.ignored_fields,
            "signature_failures": c.signature_failures,
            "finished": finished,
            "waiting": self.waiting_count(),
            "queue_depth": self.queue.len(),
            "partial_chunked_messages": self.assembler.partial_count(),
            "history_size": self.shared.history().len(),
            // dispatcherd's `metrics` reply: is an HTTP metrics endpoint serving, and where.
            "enabled": self.config.metrics_endpoint.is_some(),
            "status": self.config.metrics_endpoint.as_deref().map(|addr| {
                let (host, port) = addr.rsplit_once(':').unwrap_or((addr, ""));
                json!({ "host": host, "port": port.parse::<u16>().ok(), "ready": true })
            }),
        })
    }

    fn matching(&self, data: &Map<String, Value>) -> std::result::Result<Vec<CallKey>, String> {
        for k in data.keys() {
            if !matches!(k.as_str(), "task" | "uuid" | "args" | "kwargs") {
                return Err(format!(
                    "unknown filter field {k:?}; use any of task, uuid, args, kwargs"
                ));
            }
        }
        let mut keys: Vec<CallKey> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                data.get("task")
                    .is_none_or(|t| t.as_str() == Some(p.call.task.as_str()))
                    && data
                        .get("uuid")
                        .is_none_or(|u| u.as_str() == Some(p.call.uuid.as_str()))
                    && data.get("args").is_none_or(|a| *a == p.call.args)
                    && data.get("kwargs").is_none_or(|k| *k == p.call.kwargs)
            })
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        Ok(keys)
    }

    fn describe(&self, keys: &[CallKey]) -> Value {
        let mut out = Map::new();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for k in keys {
            let Some(p) = self.pending.get(k) else {
                continue;
            };
            let name = match p.stage {
                Stage::Running => match p.call.worker_id {
                    Some(w) if !out.contains_key(&format!("worker-{w}")) => format!("worker-{w}"),
                    // A pool without worker ids, or two Calls on one worker: keep both.
                    _ => {
                        let n = counts.entry("running").or_default();
                        let name = format!("running-{n}");
                        *n += 1;
                        name
                    }
                },
                other => {
                    let prefix = match other {
                        Stage::Delayed => "delayed",
                        Stage::Blocked => "blocked",
                        _ => "queued",
                    };
                    let n = counts.entry(prefix).or_default();
                    let name = format!("{prefix}-{n}");
                    *n += 1;
                    name
                }
            };
            out.insert(name, message_json(&p.call));
        }
        Value::Object(out)
    }

    fn running(&self, data: &Map<String, Value>) -> Value {
        match self.matching(data) {
            Ok(keys) => self.describe(&keys),
            Err(e) => json!({ "error": e }),
        }
    }

    fn cancel(&mut self, data: &Map<String, Value>) -> Value {
        let keys = match self.matching(data) {
            Ok(k) => k,
            Err(e) => return json!({ "error": e }),
        };
        let reply = self.describe(&keys);
        for key in keys {
            let running = self
                .pending
                .get(&key)
                .is_some_and(|p| p.stage == Stage::Running);
            if running {
                if !self.pool.cancel(key) {
                    tracing::warn!(key, "pool did not know a running Call to cancel");
                }
            } else {
                self.remove_waiting(key, Outcome::Canceled, "canceled before it started");
            }
        }
        reply
    }

    fn history(&self, data: &Map<String, Value>) -> Value {
        let mut filter = CallFilter::default();
        for (k, v) in data {
            match (k.as_str(), v) {
                ("task", Value::String(s)) => filter.task = Some(s.clone()),
                ("uuid", Value::String(s)) => filter.uuid = Some(s.clone()),
                ("outcome", Value::String(s)) => match Outcome::parse(s) {
                    Some(o) => filter.outcome = Some(o),
                    None => {
                        return json!({ "error": format!("unknown outcome {s:?}; use one of ok, error, panic, timeout, canceled, worker_lost, discarded, rejected") })
                    }
                },
                ("limit", v) if v.as_u64().is_some() => {
                    filter.limit = v.as_u64().map(|n| n as usize)
                }
                (k, v) => {
                    return json!({ "error": format!("bad history filter {k:?} = {v}; use task (string), uuid (string), outcome (string), limit (integer)") })
                }
            }
        }
        json!({ "calls": self.shared.history().select(&filter) })
    }
}

fn message_json(call: &Call) -> Value {
    json!({
        "task": call.task,
        "uuid": call.uuid,
        "args": call.args,
        "kwargs": call.kwargs,
        "time_pub": call.time_pub,
    })
}

/// The span of one Call, at debug level: the events logged about a Call (rejected, failed,
/// finished) name its uuid and task themselves, so at `info` the span would add nothing but its
/// cost (about 2 µs per Call with the fmt subscriber, a fifth of the service's work per Call).
fn call_span(uuid: &str, task: &str) -> tracing::Span {
    tracing::debug_span!("call", uuid = %uuid, task = %task)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Subscription;
    use crate::task::{Invocation, TaskConfig, TaskFuture};
    use crate::{InProcessPool, TaskRegistry};

    fn nap_run(_: Invocation) -> TaskFuture {
        Box::pin(async {
            std::thread::sleep(Duration::from_millis(20));
            Ok(Value::Null)
        })
    }

    static NAP: TaskDescriptor =
        TaskDescriptor::new("t.nap", &[], TaskConfig::new(), |_| Ok(()), nap_run);

    struct Nap;

    impl Task for Nap {
        const NAME: &'static str = "t.nap";
        fn descriptor() -> &'static TaskDescriptor {
            &NAP
        }
    }

    /// A broker whose one subscription is a channel the test fills, so the test sees what the
    /// service has not taken yet.
    struct Feed(Mutex<Option<mpsc::Receiver<Incoming>>>);

    #[async_trait::async_trait]
    impl Broker for Feed {
        async fn publish(&self, _channel: &str, _payload: &str) -> Result<()> {
            Ok(())
        }

        async fn subscribe(&self, _channels: &[String]) -> Result<Subscription> {
            let rx = self
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .ok_or_else(|| Error::broker("one subscription only"))?;
            Ok(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|m| (m, rx))
            })
            .boxed())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_leaves_messages_in_the_broker() {
        let (tx, rx) = mpsc::channel(100);
        for _ in 0..10 {
            tx.send(Incoming {
                channel: "c".into(),
                payload: r#"{"task":"t.nap"}"#.into(),
            })
            .await
            .unwrap();
        }
        let service = Service::builder()
            .registry(TaskRegistry::new().register::<Nap>())
            .pool(InProcessPool::new(1))
            .broker(Arc::new(Feed(Mutex::new(Some(rx)))))
            .channels(["c"])
            .intake_pause_at(2)
            .max_waiting(3)
            .start()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        let unread = tx.max_capacity() - tx.capacity();
        assert!(unread >= 4, "the service took {} of 10", 10 - unread);
        service
            .wait_for_finished(10, Duration::from_secs(10))
            .await
            .unwrap();
        let calls = service.history(&CallFilter::default());
        assert_eq!(calls.len(), 10);
        assert!(
            calls.iter().all(|c| c.outcome == Some(Outcome::Ok)),
            "none rejected for max_waiting: {calls:?}"
        );
        assert!(calls.iter().all(|c| c.channel == "c"));
        assert!(
            std::ptr::eq(calls[0].channel.as_str(), calls[9].channel.as_str()),
            "Calls share their channel name"
        );
        service.shutdown().await.unwrap();
    }
}
