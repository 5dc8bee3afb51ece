//! The service loop, one file per stage in the order a message travels:
//!
//! 1. `intake`: size → signature → chunk reassembly → decode → registry lookup → argument
//!    binding; control messages branch off to `control`;
//! 2. `admission`: the delay heap and the duplicate table;
//! 3. `dispatch`: the capacity queue → `Pool::try_dispatch` → pool events;
//! 4. `record`: a finished Call → history, counters, metrics.
//!
//! `builder` starts a service, `handle` is what the application holds, `shutdown` stops it.
//! All scheduling state is owned by one task (the loop in this file); nothing in it is shared but
//! the history, which handles read under a mutex.

mod admission;
mod answered;
mod builder;
mod config;
mod control;
mod dispatch;
mod handle;
mod intake;
mod record;
mod shutdown;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher_core::broker::{Broker, BrokerError, Incoming, Subscription};
use dispatcher_core::call::SharedStr;
use dispatcher_core::chunk::Assembler;
use dispatcher_core::pool::{CallKey, Pool, PoolEvent};
use dispatcher_core::signing::SigningKey;
use dispatcher_core::time::sleep_until;
use dispatcher_core::{Call, Registry, TaskDescriptor};
use futures_util::stream::{SelectAll, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use admission::{Delays, Duplicates};
use answered::{control_channels, Answered, ControlAction, ControlPath};
pub use builder::{Service, ServiceBuilder};
pub use config::{LogLevelControl, ServiceConfig, LOCAL_CHANNEL};
use handle::{Command, Shared};
pub use handle::{FinishedCounter, ServiceHandle};
use record::Counters;

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
    /// When a delayed Call is due, epoch seconds.
    due_at: Option<f64>,
    /// The Call's span (uuid, task): its log lines are recorded inside it.
    span: tracing::Span,
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
pub(super) struct Names {
    node_id: SharedStr,
    channels: Vec<SharedStr>,
}

/// Most distinct channel names kept for sharing (a service listens on a few).
const MAX_SHARED_CHANNELS: usize = 64;

impl Names {
    pub(super) fn new(node_id: &str) -> Self {
        Names {
            node_id: SharedStr::from(node_id),
            channels: vec![SharedStr::from(LOCAL_CHANNEL)],
        }
    }

    /// The shared copy of `name` (a new one for a name not seen before).
    pub(super) fn channel(&mut self, name: &str) -> SharedStr {
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

pub(super) struct Loop {
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
    delayed: Delays,
    queue: VecDeque<CallKey>,
    dups: Duplicates,
    assembler: Assembler,
    counters: Counters,
    started: Instant,
    producers: Vec<JoinHandle<()>>,
    stopping: bool,
    /// Counts finished Calls for waiters; dropped with the loop, so waiters learn it stopped.
    finished: watch::Sender<u64>,
    log_control: Option<Arc<dyn LogLevelControl>>,
    signing: Option<SigningKey>,
    /// Calls finished in this turn of the loop, not yet in the history: they go in together
    /// (one lock, one wake-up of waiters) at the end of the turn, see [`Loop::flush_finished`].
    finished_buf: Vec<Call>,
    metrics: crate::metrics::ServiceMetrics,
    /// The durable delivery of the payload being taken in, until a Call takes it.
    delivery: Option<dispatcher_core::Delivery>,
    jitter: record::Jitter,
    /// Control commands answered lately, by `reply_to` (the second copy is dropped).
    answered: Answered,
    /// The payload being taken in came on a control channel's subscription.
    via_control: bool,
    /// When the control subscriptions are held (while the intake pauses, and a while after).
    control_path: ControlPath,
}

/// Most pool events or commands handled in one turn of the service loop.
const BATCH: usize = 64;

/// Most broker payloads taken in one turn of the service loop. Fewer than [`BATCH`]: the loop
/// reads the workers' reports between two batches, so a long run of incoming messages does not
/// leave finished workers idle.
const INCOMING_BATCH: usize = 16;

/// Payloads from every broker, tagged with the broker's index; `None` marks the end of a
/// broker's subscription.
pub(super) type IncomingStream =
    SelectAll<futures_core::stream::BoxStream<'static, (usize, Option<Incoming>)>>;

pub(super) fn tag_subscription(
    broker: usize,
    sub: Subscription,
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

/// Subscribes again after a broker's subscription ended, with backoff, until it works, the
/// broker says it is closed for good ([`BrokerError::Closed`]) or the service stops (the
/// receiver is gone).
fn resubscribe(
    broker: usize,
    b: Arc<dyn Broker>,
    channels: Vec<String>,
    tx: mpsc::Sender<(usize, Subscription)>,
    control: bool,
) {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(100);
        loop {
            tokio::time::sleep(delay).await;
            if tx.is_closed() {
                return;
            }
            let sub = if control {
                b.subscribe_control(&channels).await
            } else {
                b.subscribe(&channels).await.map(Some)
            };
            match sub {
                Ok(None) => return,
                Ok(Some(sub)) => {
                    tracing::info!(broker, "subscribed again after the subscription ended");
                    let _ = tx.send((broker, sub)).await;
                    return;
                }
                Err(BrokerError::Closed) => {
                    tracing::error!(
                        broker,
                        "resubscribe failed: the broker is closed; nothing arrives from it any more"
                    );
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

/// Opens a broker's control subscription (when it has a separate path) and hands it to the loop.
fn open_control(
    broker: usize,
    b: Arc<dyn Broker>,
    channels: Vec<String>,
    tx: mpsc::Sender<(usize, Subscription)>,
) {
    tokio::spawn(async move {
        match b.subscribe_control(&channels).await {
            Ok(Some(sub)) => {
                let _ = tx.send((broker, sub)).await;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                broker,
                error = %e,
                "control channels not subscribed; commands arrive on the channels only, behind the tasks"
            ),
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
        // Control channels, read ahead of tasks while the intake pauses (see `ControlPath`).
        let mut control_incoming: IncomingStream = SelectAll::new();
        let mut expiry = tokio::time::interval(Duration::from_secs(1));
        expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop_at: Option<Instant> = None;
        let (resub_tx, mut resubs) = mpsc::channel(self.brokers.len().max(1));
        let (control_resub_tx, mut control_resubs) = mpsc::channel(self.brokers.len().max(1));
        let mut control_batch = Vec::with_capacity(INCOMING_BATCH);
        let mut event_batch = Vec::with_capacity(BATCH);
        let mut polled = Vec::with_capacity(BATCH);
        let mut command_batch = Vec::with_capacity(BATCH);
        let mut incoming_batch = Vec::with_capacity(BATCH);
        loop {
            let next_delay = self.delayed.next_due();
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
                1.. = commands.recv_many(&mut command_batch, BATCH) => {
                    for cmd in command_batch.drain(..) {
                        if let Some(at) = stop_at {
                            // After shutdown began only a shorter deadline is taken (a second
                            // stop request); the rest is dropped, as if never received.
                            if let Command::Shutdown { grace: Some(g) } = cmd {
                                stop_at = Some(at.min(Instant::now() + g));
                            }
                            continue;
                        }
                        match cmd {
                            Command::Submit { message, origin } => {
                                self.counters.count_origin(origin);
                                let _ = self.accept_task(message, LOCAL_CHANNEL, None);
                            }
                            Command::Control { message, reply } => {
                                let v = self.control(message);
                                let _ = reply.send(v);
                            }
                            Command::Shutdown { grace } => {
                                let grace = grace.unwrap_or(self.config.shutdown_grace);
                                stop_at = Some(Instant::now() + grace);
                                self.begin_shutdown(&mut incoming);
                                control_incoming = SelectAll::new();
                            }
                        }
                    }
                },
                // Control channels ahead of tasks, and read even while the intake is paused:
                // commands are answered at once however many tasks wait behind them.
                1.. = next_incoming(&mut control_incoming, &mut control_batch, INCOMING_BATCH),
                    if !stopping =>
                {
                    for (b, msg) in control_batch.drain(..) {
                        match msg {
                            Some(msg) => {
                                self.via_control = true;
                                self.on_incoming(b, msg);
                                self.via_control = false;
                            }
                            None => {
                                tracing::error!(broker = b, "a broker's control subscription ended; control commands arrive on the channels only until it is subscribed again");
                                if let (Some(broker), true) = (self.brokers.get(b).cloned(), self.control_path.is_open()) {
                                    resubscribe(b, broker, control_channels(&self.config.channels), control_resub_tx.clone(), true);
                                }
                            }
                        }
                    }
                }
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
                                    resubscribe(b, broker, self.config.channels.clone(), resub_tx.clone(), false);
                                }
                            }
                        }
                    }
                }
                Some((b, sub)) = resubs.recv(), if !stopping => incoming.push(tag_subscription(b, sub)),
                Some((b, sub)) = control_resubs.recv(), if !stopping => {
                    // One that arrives after the subscriptions were dropped is dropped too.
                    if self.control_path.is_open() {
                        control_incoming.push(tag_subscription(b, sub));
                    }
                }
                _ = sleep_until(next_delay), if next_delay.is_some() && !stopping => self.release_delayed(),
                _ = expiry.tick() => self.on_tick(),
                _ = sleep_until(stop_at), if stopping => break,
            }
            self.flush_finished();
            if !stopping {
                let paused = self.queue.len() >= self.config.intake_pause_at;
                match self.control_path.after_turn(paused, Instant::now()) {
                    ControlAction::Nothing => {}
                    ControlAction::Open => {
                        let channels = control_channels(&self.config.channels);
                        if !channels.is_empty() {
                            tracing::debug!(
                                "intake paused: reading the control channels ahead of tasks"
                            );
                            for (b, broker) in self.brokers.iter().enumerate() {
                                open_control(
                                    b,
                                    broker.clone(),
                                    channels.clone(),
                                    control_resub_tx.clone(),
                                );
                            }
                        }
                    }
                    ControlAction::Close => {
                        tracing::debug!(
                            "intake running again: control channels left to the brokers' channels"
                        );
                        control_incoming = SelectAll::new();
                    }
                }
            }
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

    fn expire_chunks(&mut self) {
        for e in self.assembler.expire(Instant::now()) {
            self.counters.received += 1;
            self.reject_payload(
                "",
                dispatcher_core::Rejection::new(
                    dispatcher_core::RejectReason::Chunk,
                    e.to_string(),
                ),
            );
        }
    }
}

/// A reply as JSON (serializing our own reply types cannot fail; if it ever did, the client gets
/// an error reply saying so rather than nothing).
fn to_value<T: serde::Serialize>(reply: &T) -> Value {
    serde_json::to_value(reply).unwrap_or_else(
        |e| serde_json::json!({ "error": format!("could not serialize the reply: {e}") }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    use dispatcher_core::task::{Invocation, TaskConfig, TaskFuture};
    use dispatcher_core::{CallFilter, Outcome, Task, TaskRegistry};

    use crate::InProcessPool;

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
        async fn publish(&self, _channel: &str, _payload: &str) -> Result<(), BrokerError> {
            Ok(())
        }

        async fn subscribe(&self, _channels: &[String]) -> Result<Subscription, BrokerError> {
            let rx = self
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .ok_or_else(|| BrokerError::other("one subscription only"))?;
            Ok(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|m| (m, rx))
            })
            .boxed())
        }
    }

    /// A broker whose `subscribe` always fails with the error `make` builds, counting the tries.
    struct Refusing {
        make: fn() -> BrokerError,
        tries: Arc<AtomicUsize>,
    }

    #[async_trait::async_trait]
    impl Broker for Refusing {
        async fn publish(&self, _channel: &str, _payload: &str) -> Result<(), BrokerError> {
            Ok(())
        }

        async fn subscribe(&self, _channels: &[String]) -> Result<Subscription, BrokerError> {
            self.tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err((self.make)())
        }
    }

    /// How many times `resubscribe` tries a broker failing with `make` within 30 s.
    async fn resubscribe_tries(make: fn() -> BrokerError) -> usize {
        let tries = Arc::new(AtomicUsize::new(0));
        let broker = Arc::new(Refusing {
            make,
            tries: tries.clone(),
        });
        let (tx, mut rx) = mpsc::channel(1);
        resubscribe(0, broker, vec!["c".into()], tx, false);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(rx.try_recv().is_err(), "no subscription was handed over");
        tries.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn a_broker_closed_for_good_is_not_subscribed_again() {
        assert_eq!(resubscribe_tries(|| BrokerError::Closed).await, 1);
        let unavailable = resubscribe_tries(|| BrokerError::unavailable("refused")).await;
        assert!(unavailable > 5, "retried with backoff: {unavailable} tries");
        let other = resubscribe_tries(|| BrokerError::other("no idea")).await;
        assert!(other > 5, "retried with backoff: {other} tries");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_leaves_messages_in_the_broker() {
        let (tx, rx) = mpsc::channel(100);
        for _ in 0..10 {
            tx.send(Incoming::new("c", r#"{"task":"t.nap"}"#))
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
