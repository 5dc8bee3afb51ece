//! [`MemoryBroker`]: the runtime's in-process bus ([`dispatcher_runtime::MemoryBroker`]) with
//! fault injection through [`Faults`], and counters.
//!
//! ```
//! use std::sync::Arc;
//! use dispatcher_core::Broker;
//! use dispatcher_testkit::MemoryBroker;
//! use futures_util::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> dispatcher_core::Result<()> {
//! let bus = MemoryBroker::new();
//! // Clones share the bus: a service can hold one, a publisher another.
//! let listener: Arc<dyn Broker> = Arc::new(bus.clone());
//! let mut sub = listener.subscribe(&["jobs".to_owned()]).await?;
//! bus.publish("jobs", "hello").await?;
//! assert_eq!(sub.next().await.map(|m| m.payload), Some("hello".to_owned()));
//!
//! bus.faults().drop_next(1);
//! bus.publish("jobs", "lost").await?;
//! assert_eq!(bus.dropped_count(), 1);
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! The bus itself (broadcast per channel, bounded per-subscription queues with backpressure, the
//! payload limit) is the runtime's [`dispatcher_runtime::MemoryBroker`], which applications
//! embed; it has no test-only knobs. This type wraps it and implements [`Broker`] by applying
//! the faults, then delegating:
//!
//! * a publish is checked as the bus would (channel name, size) and counted; then a pending
//!   [`Faults::drop_next`] swallows it, [`Faults::duplicate_next`] hands it to the bus twice, and
//!   [`Faults::delay`] passes it to a queue that hands it to the bus at its due time;
//! * a subscription is the bus's, wrapped in a stream that ends at a disconnect;
//! * [`Faults::disconnect`] replaces the bus by a fresh one, as a broker that reconnects gets a
//!   new connection: the old bus, its subscriptions and what they still had queued are gone, a
//!   publisher waiting on one of its full queues is released with an error, and nothing
//!   published after [`Faults::reconnect`] can wait behind a stale subscription that nobody reads
//!   any more.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use dispatcher_core::{Broker, BrokerError, Subscription};
use dispatcher_runtime::MemoryBroker as Bus;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

pub use dispatcher_runtime::memory::{DEFAULT_CAPACITY, DEFAULT_MAX_PAYLOAD};

/// Capacity of the queue of messages held back by [`Faults::delay`]; publish waits when it is
/// full.
pub const DELAY_QUEUE_CAPACITY: usize = 10_000;

/// The runtime's in-process bus ([`dispatcher_runtime::MemoryBroker`]) with fault injection;
/// implements [`Broker`]. See the [module docs](self) for how the two fit together.
///
/// * **Sharing.** Clones share one bus (through an inner `Arc`), so `Arc::new(broker.clone())` is
///   an `Arc<dyn Broker>` connected to the same bus; a service and a publisher can each hold one.
/// * **Delivery.** Every subscription of a channel gets every payload published on it after the
///   subscription was made (broadcast, like NOTIFY). The payloads one publisher sends on one
///   channel arrive in the order they were sent.
/// * **Backpressure.** Each subscription has a bounded queue ([`MemoryBroker::with_capacity`],
///   default [`DEFAULT_CAPACITY`]). When a subscriber's queue is full, `publish` waits until it
///   has room: nothing is ever dropped silently (only [`Faults::drop_next`] loses messages, and
///   it counts them). A subscription that is never read therefore stalls publishers once its
///   queue is full; drop it to unsubscribe.
/// * **Size limit.** Payloads of [`Broker::max_payload`] bytes or more are refused with
///   [`BrokerError::TooLarge`] (default [`DEFAULT_MAX_PAYLOAD`], like PostgreSQL), so the core's
///   chunking is exercised; `with_max_payload(None)` lifts the limit.
/// * **Faults.** [`MemoryBroker::faults`] drops, delays and duplicates messages and simulates a
///   lost connection; [`MemoryBroker::published_count`] and its siblings count what happened.
#[derive(Clone)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
    capacity: usize,
    max_payload: Option<usize>,
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("capacity", &self.capacity)
            .field("max_payload", &self.max_payload)
            .field("subscriptions", &self.subscription_count())
            .field("published", &self.published_count())
            .field("dropped", &self.dropped_count())
            .field("connected", &self.shared.lock().connected)
            .finish()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        MemoryBroker::new()
    }
}

/// The state shared by all clones of one [`MemoryBroker`].
struct Shared {
    state: Mutex<State>,
    /// Bumped at every disconnect; subscriptions and deliveries of an older epoch end.
    epoch: watch::Sender<u64>,
    published: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    /// Messages handed to the delay queue and not yet delivered.
    in_flight: Arc<AtomicUsize>,
}

struct State {
    /// The bus of the current "connection"; replaced at every disconnect.
    bus: Bus,
    connected: bool,
    drop_next: usize,
    duplicate_next: usize,
    delay: Duration,
    delay_tx: Option<mpsc::Sender<Delayed>>,
}

/// One accepted message on its way to the bus.
struct Delivery {
    bus: Bus,
    channel: String,
    payload: String,
    copies: usize,
    epoch: u64,
}

struct Delayed {
    due: tokio::time::Instant,
    delivery: Delivery,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere while holding it; the state stays usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The error of a call while disconnected: [`BrokerError::Unavailable`], since
/// [`Faults::reconnect`] makes a retry succeed.
fn disconnected() -> BrokerError {
    BrokerError::unavailable(
        "memory broker is disconnected (fault injected with Faults::disconnect); \
         it accepts messages again after Faults::reconnect",
    )
}

/// Resolves when the epoch is no longer `epoch` (a disconnect happened); never when the broker
/// is gone.
async fn disconnect_after(mut rx: watch::Receiver<u64>, epoch: u64) {
    if rx.wait_for(|e| *e != epoch).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Hands `delivery` to its bus (`copies` times), waiting for room in full queues; stops with an
/// error when a disconnect happens meanwhile.
async fn deliver(delivery: Delivery, epoch_rx: &watch::Receiver<u64>) -> Result<(), BrokerError> {
    let Delivery {
        bus,
        channel,
        payload,
        copies,
        epoch,
    } = delivery;
    for _ in 0..copies {
        tokio::select! {
            biased;
            _ = disconnect_after(epoch_rx.clone(), epoch) => return Err(disconnected()),
            sent = bus.publish(&channel, &payload) => sent?,
        }
    }
    Ok(())
}

/// Delivers delayed messages one after another, each at its due time, so their order holds.
async fn run_delay_queue(
    mut rx: mpsc::Receiver<Delayed>,
    epoch_rx: watch::Receiver<u64>,
    in_flight: Arc<AtomicUsize>,
) {
    while let Some(Delayed { due, delivery }) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if *epoch_rx.borrow() == delivery.epoch {
            if let Err(e) = deliver(delivery, &epoch_rx).await {
                tracing::debug!(error = %e, "delayed message lost to a disconnect");
            }
        } else {
            tracing::debug!("delayed message lost to a disconnect");
        }
        in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl MemoryBroker {
    /// A fresh bus with the default queue capacity and payload limit, and no faults.
    pub fn new() -> Self {
        let (epoch, _) = watch::channel(0u64);
        MemoryBroker {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    bus: Bus::new(),
                    connected: true,
                    drop_next: 0,
                    duplicate_next: 0,
                    delay: Duration::ZERO,
                    delay_tx: None,
                }),
                epoch,
                published: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                duplicated: AtomicU64::new(0),
                in_flight: Arc::new(AtomicUsize::new(0)),
            }),
            capacity: DEFAULT_CAPACITY,
            max_payload: Some(DEFAULT_MAX_PAYLOAD),
        }
    }

    /// Sets the payload limit of this handle (`None`: no limit). Payloads of `max` bytes or more
    /// are refused, and [`Broker::max_payload`] reports it so the core sends chunks.
    pub fn with_max_payload(mut self, max: Option<usize>) -> Self {
        self.max_payload = max;
        self
    }

    /// Sets the queue capacity (at least 1) of subscriptions made through this handle. When a
    /// subscription's queue is full, publishers wait.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// The queue capacity of subscriptions made through this handle.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The fault-injection handle of the bus (shared by all clones). Faults apply to messages
    /// published after the change.
    pub fn faults(&self) -> Faults {
        Faults {
            shared: self.shared.clone(),
        }
    }

    /// Payloads accepted by `publish` and `publish_batch` on this bus (each chunk counts),
    /// including those a fault then dropped; publishes refused (disconnected, too large, bad
    /// channel) do not count.
    pub fn published_count(&self) -> u64 {
        self.shared.published.load(Ordering::SeqCst)
    }

    /// Payloads lost to [`Faults::drop_next`].
    pub fn dropped_count(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Payloads delivered twice because of [`Faults::duplicate_next`].
    pub fn duplicated_count(&self) -> u64 {
        self.shared.duplicated.load(Ordering::SeqCst)
    }

    /// Live subscriptions on the bus (dropped ones, and those ended by a disconnect, are not
    /// counted).
    pub fn subscription_count(&self) -> usize {
        self.shared.lock().bus.subscription_count()
    }

    /// The current bus, with this handle's capacity and payload limit.
    fn bus(&self, state: &State) -> Bus {
        state
            .bus
            .clone()
            .with_capacity(self.capacity)
            .with_max_payload(self.max_payload)
    }

    fn check(&self, channel: &str, payload: &str) -> Result<(), BrokerError> {
        let bus = self.bus(&self.shared.lock());
        bus.check(channel, payload)
    }

    /// Applies the faults to one checked payload; `None` when a fault dropped it. Returns the
    /// delay to apply too.
    fn route(
        &self,
        channel: &str,
        payload: &str,
    ) -> Result<Option<(Delivery, Duration)>, BrokerError> {
        let mut state = self.shared.lock();
        if !state.connected {
            return Err(disconnected());
        }
        self.shared.published.fetch_add(1, Ordering::SeqCst);
        if state.drop_next > 0 {
            state.drop_next -= 1;
            self.shared.dropped.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(%channel, "memory broker dropped a message (Faults::drop_next)");
            return Ok(None);
        }
        let copies = if state.duplicate_next > 0 {
            state.duplicate_next -= 1;
            self.shared.duplicated.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(%channel, "memory broker duplicates a message (Faults::duplicate_next)");
            2
        } else {
            1
        };
        let delivery = Delivery {
            bus: self.bus(&state),
            channel: channel.to_owned(),
            payload: payload.to_owned(),
            copies,
            epoch: *self.shared.epoch.borrow(),
        };
        Ok(Some((delivery, state.delay)))
    }

    /// The sender of the delay queue, starting its task when there is none (or its runtime is
    /// gone).
    fn delay_queue(&self) -> Result<mpsc::Sender<Delayed>, BrokerError> {
        let mut state = self.shared.lock();
        if let Some(tx) = state.delay_tx.as_ref().filter(|tx| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            BrokerError::other(format!(
                "memory broker: Faults::delay needs a tokio runtime to deliver later: {e}"
            ))
        })?;
        let (tx, rx) = mpsc::channel(DELAY_QUEUE_CAPACITY);
        runtime.spawn(run_delay_queue(
            rx,
            self.shared.epoch.subscribe(),
            self.shared.in_flight.clone(),
        ));
        state.delay_tx = Some(tx.clone());
        Ok(tx)
    }

    async fn send_one(&self, channel: &str, payload: &str) -> Result<(), BrokerError> {
        let Some((delivery, delay)) = self.route(channel, payload)? else {
            return Ok(());
        };
        // While delayed messages are in flight, later ones queue behind them to keep the order.
        if delay.is_zero() && self.shared.in_flight.load(Ordering::SeqCst) == 0 {
            return deliver(delivery, &self.shared.epoch.subscribe()).await;
        }
        let mut item = Delayed {
            due: tokio::time::Instant::now() + delay,
            delivery,
        };
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        // One retry: the queue's task may have ended with the runtime that ran it.
        for _ in 0..2 {
            let tx = match self.delay_queue() {
                Ok(tx) => tx,
                Err(e) => {
                    self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                    return Err(e);
                }
            };
            match tx.send(item).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => item = back,
            }
        }
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        Err(BrokerError::other(
            "memory broker: the delay queue's task is not running",
        ))
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, channel: &str, payload: &str) -> Result<(), BrokerError> {
        self.check(channel, payload)?;
        self.send_one(channel, payload).await
    }

    /// Checks every message first (nothing is sent when one is invalid), then sends them in
    /// order.
    async fn publish_batch(&self, messages: &[(String, String)]) -> Result<(), BrokerError> {
        for (channel, payload) in messages {
            self.check(channel, payload)?;
        }
        if !self.shared.lock().connected {
            return Err(disconnected());
        }
        for (channel, payload) in messages {
            self.send_one(channel, payload).await?;
        }
        Ok(())
    }

    async fn subscribe(&self, channels: &[String]) -> Result<Subscription, BrokerError> {
        let (bus, epoch, epoch_rx) = {
            let state = self.shared.lock();
            if !state.connected {
                return Err(disconnected());
            }
            (
                self.bus(&state),
                *self.shared.epoch.borrow(),
                self.shared.epoch.subscribe(),
            )
        };
        let inner = bus.subscribe(channels).await?;
        let stream = futures_util::stream::unfold(
            (inner, epoch_rx, epoch),
            |(mut inner, epoch_rx, epoch)| async move {
                if *epoch_rx.borrow() != epoch {
                    return None;
                }
                tokio::select! {
                    biased;
                    _ = disconnect_after(epoch_rx.clone(), epoch) => None,
                    m = inner.next() => m.map(|m| (m, (inner, epoch_rx, epoch))),
                }
            },
        );
        Ok(stream.boxed())
    }

    /// A subscription of its own: a full subscription of the service's channels (its intake
    /// paused behind a flood) does not hold it up.
    async fn subscribe_control(
        &self,
        channels: &[String],
    ) -> Result<Option<Subscription>, BrokerError> {
        self.subscribe(channels).await.map(Some)
    }

    fn max_payload(&self) -> Option<usize> {
        self.max_payload
    }

    /// The bus's status, plus the connection state and the counters.
    fn status(&self) -> dispatcher_core::BrokerStatus {
        let (mut status, connected) = {
            let state = self.shared.lock();
            (self.bus(&state).status(), state.connected)
        };
        status.connected = Some(connected);
        let fields = &mut status.details;
        fields.insert("published".into(), self.published_count().into());
        fields.insert("dropped".into(), self.dropped_count().into());
        fields.insert("duplicated".into(), self.duplicated_count().into());
        status
    }
}

/// Fault injection for one [`MemoryBroker`] bus (all its clones). Changes apply to messages
/// published after them; each publish of `publish_batch` counts as one message.
#[derive(Clone)]
pub struct Faults {
    shared: Arc<Shared>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Faults")
            .field("connected", &state.connected)
            .field("drop_next", &state.drop_next)
            .field("duplicate_next", &state.duplicate_next)
            .field("delay", &state.delay)
            .finish()
    }
}

impl Faults {
    /// Silently loses the next `n` published messages (replacing any count still pending);
    /// publish reports success. They are counted in [`MemoryBroker::dropped_count`].
    pub fn drop_next(&self, n: usize) {
        self.shared.lock().drop_next = n;
    }

    /// Delivers each message published from now on `delay` after it was published (zero turns
    /// it off). Publish returns at once; order is preserved, also between delayed messages and
    /// the undelayed ones that follow them. Up to [`DELAY_QUEUE_CAPACITY`] messages wait at once;
    /// beyond that, publish waits. Needs a tokio runtime.
    pub fn delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// Delivers each of the next `n` messages twice in a row (replacing any count still
    /// pending).
    pub fn duplicate_next(&self, n: usize) {
        self.shared.lock().duplicate_next = n;
    }

    /// Simulates a lost connection: every current subscription stream ends (messages still
    /// queued or delayed for it are lost), a publisher waiting on a full queue gets an error,
    /// and `publish` and `subscribe` fail with [`BrokerError::Unavailable`], saying the memory
    /// broker is disconnected, until [`Faults::reconnect`].
    pub fn disconnect(&self) {
        let mut state = self.shared.lock();
        state.connected = false;
        // The old bus goes with the old connection (see the module docs).
        state.bus = Bus::new();
        self.shared.epoch.send_modify(|e| *e += 1);
        tracing::debug!("memory broker disconnected (Faults::disconnect)");
    }

    /// Accepts publishes and subscriptions again. Subscriptions ended by the disconnect stay
    /// ended: subscribe again.
    pub fn reconnect(&self) {
        self.shared.lock().connected = true;
        tracing::debug!("memory broker reconnected (Faults::reconnect)");
    }

    /// False between [`Faults::disconnect`] and [`Faults::reconnect`].
    pub fn is_connected(&self) -> bool {
        self.shared.lock().connected
    }

    /// Clears pending drops and duplicates and the delay (the connection state is kept).
    pub fn clear(&self) {
        let mut state = self.shared.lock();
        state.drop_next = 0;
        state.duplicate_next = 0;
        state.delay = Duration::ZERO;
    }
}
