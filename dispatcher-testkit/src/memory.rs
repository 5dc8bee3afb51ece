//! [`MemoryBroker`]: an in-process pub/sub bus implementing [`dispatcher_core::Broker`], with
//! fault injection through [`Faults`].
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

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use dispatcher_core::broker::validate_channel;
use dispatcher_core::{Broker, Error, Incoming, Result, Subscription};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

/// Queue capacity of each subscription unless [`MemoryBroker::with_capacity`] says otherwise.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// The default payload limit, PostgreSQL's: payloads of this many bytes or more are refused, so
/// the core splits them into chunks.
pub const DEFAULT_MAX_PAYLOAD: usize = dispatcher_core::chunk::DEFAULT_MAX_PAYLOAD;

/// Capacity of the queue of messages held back by [`Faults::delay`]; publish waits when it is
/// full.
pub const DELAY_QUEUE_CAPACITY: usize = 10_000;

/// An in-process pub/sub bus implementing [`Broker`].
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
/// * **Size limit.** Payloads of [`MemoryBroker::max_payload`] bytes or more are refused with
///   [`Error::TooLarge`] (default [`DEFAULT_MAX_PAYLOAD`], like PostgreSQL), so the core's
///   chunking is exercised; `with_max_payload(None)` lifts the limit.
/// * **Faults.** [`MemoryBroker::faults`] drops, delays and duplicates messages and simulates a
///   lost connection.
#[derive(Clone)]
pub struct MemoryBroker {
    bus: Arc<Bus>,
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
            .field("connected", &self.bus.lock().connected)
            .finish()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        MemoryBroker::new()
    }
}

/// The state shared by all clones of one [`MemoryBroker`].
struct Bus {
    state: Mutex<State>,
    /// Bumped at every disconnect; subscriptions made in an older epoch end.
    epoch: watch::Sender<u64>,
    published: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    /// Messages handed to the delay queue and not yet delivered.
    in_flight: Arc<AtomicUsize>,
}

struct State {
    subscribers: Vec<Subscriber>,
    connected: bool,
    drop_next: usize,
    duplicate_next: usize,
    delay: Duration,
    delay_tx: Option<mpsc::Sender<Delayed>>,
}

struct Subscriber {
    channels: HashSet<String>,
    tx: mpsc::Sender<Incoming>,
}

/// One message on its way to its subscribers.
struct Delivery {
    targets: Vec<mpsc::Sender<Incoming>>,
    message: Incoming,
    copies: usize,
    epoch: u64,
}

struct Delayed {
    due: tokio::time::Instant,
    delivery: Delivery,
}

impl Bus {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere while holding it; the state stays usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn disconnected() -> Error {
    Error::broker(
        "memory broker is disconnected (fault injected with Faults::disconnect); \
         it accepts messages again after Faults::reconnect",
    )
}

/// Resolves when the bus's epoch is no longer `epoch` (a disconnect happened); never when the bus
/// is gone.
async fn disconnect_after(mut rx: watch::Receiver<u64>, epoch: u64) {
    if rx.wait_for(|e| *e != epoch).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Hands `delivery` to each target, waiting for room in full queues; stops with an error when
/// the bus disconnects meanwhile.
async fn deliver(delivery: Delivery, epoch_rx: &watch::Receiver<u64>) -> Result<()> {
    let Delivery {
        targets,
        message,
        copies,
        epoch,
    } = delivery;
    for tx in &targets {
        for _ in 0..copies {
            tokio::select! {
                biased;
                _ = disconnect_after(epoch_rx.clone(), epoch) => return Err(disconnected()),
                sent = tx.send(message.clone()) => {
                    if sent.is_err() {
                        // The subscription was dropped: it unsubscribed.
                        break;
                    }
                }
            }
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
    /// A fresh bus with the default queue capacity and payload limit.
    pub fn new() -> Self {
        let (epoch, _) = watch::channel(0u64);
        MemoryBroker {
            bus: Arc::new(Bus {
                state: Mutex::new(State {
                    subscribers: Vec::new(),
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
            bus: self.bus.clone(),
        }
    }

    /// Payloads accepted by `publish` and `publish_batch` on this bus (each chunk counts),
    /// including those a fault then dropped; publishes refused (disconnected, too large, bad
    /// channel) do not count.
    pub fn published_count(&self) -> u64 {
        self.bus.published.load(Ordering::SeqCst)
    }

    /// Payloads lost to [`Faults::drop_next`].
    pub fn dropped_count(&self) -> u64 {
        self.bus.dropped.load(Ordering::SeqCst)
    }

    /// Payloads delivered twice because of [`Faults::duplicate_next`].
    pub fn duplicated_count(&self) -> u64 {
        self.bus.duplicated.load(Ordering::SeqCst)
    }

    /// Live subscriptions on the bus (dropped ones are not counted).
    pub fn subscription_count(&self) -> usize {
        let mut state = self.bus.lock();
        state.subscribers.retain(|s| !s.tx.is_closed());
        state.subscribers.len()
    }

    fn check_payload(&self, channel: &str, payload: &str) -> Result<()> {
        validate_channel(channel)?;
        match self.max_payload {
            Some(max) if payload.len() >= max => Err(Error::TooLarge {
                what: "notification payload",
                size: payload.len(),
                limit: max.saturating_sub(1),
            }),
            _ => Ok(()),
        }
    }

    /// Applies the faults to one accepted payload and finds its subscribers; `None` when a fault
    /// dropped it. Returns the delay to apply too.
    fn route(&self, channel: &str, payload: &str) -> Result<Option<(Delivery, Duration)>> {
        let mut state = self.bus.lock();
        if !state.connected {
            return Err(disconnected());
        }
        self.bus.published.fetch_add(1, Ordering::SeqCst);
        if state.drop_next > 0 {
            state.drop_next -= 1;
            self.bus.dropped.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(%channel, "memory broker dropped a message (Faults::drop_next)");
            return Ok(None);
        }
        let copies = if state.duplicate_next > 0 {
            state.duplicate_next -= 1;
            self.bus.duplicated.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(%channel, "memory broker duplicates a message (Faults::duplicate_next)");
            2
        } else {
            1
        };
        state.subscribers.retain(|s| !s.tx.is_closed());
        let targets = state
            .subscribers
            .iter()
            .filter(|s| s.channels.contains(channel))
            .map(|s| s.tx.clone())
            .collect();
        let delivery = Delivery {
            targets,
            message: Incoming {
                channel: channel.to_owned(),
                payload: payload.to_owned(),
            },
            copies,
            epoch: *self.bus.epoch.borrow(),
        };
        Ok(Some((delivery, state.delay)))
    }

    /// The sender of the delay queue, starting its task when there is none (or its runtime is
    /// gone).
    fn delay_queue(&self) -> Result<mpsc::Sender<Delayed>> {
        let mut state = self.bus.lock();
        if let Some(tx) = state.delay_tx.as_ref().filter(|tx| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::broker(format!(
                "memory broker: Faults::delay needs a tokio runtime to deliver later: {e}"
            ))
        })?;
        let (tx, rx) = mpsc::channel(DELAY_QUEUE_CAPACITY);
        runtime.spawn(run_delay_queue(
            rx,
            self.bus.epoch.subscribe(),
            self.bus.in_flight.clone(),
        ));
        state.delay_tx = Some(tx.clone());
        Ok(tx)
    }

    async fn send_one(&self, channel: &str, payload: &str) -> Result<()> {
        let Some((delivery, delay)) = self.route(channel, payload)? else {
            return Ok(());
        };
        // While delayed messages are in flight, later ones queue behind them to keep the order.
        if delay.is_zero() && self.bus.in_flight.load(Ordering::SeqCst) == 0 {
            return deliver(delivery, &self.bus.epoch.subscribe()).await;
        }
        let mut item = Delayed {
            due: tokio::time::Instant::now() + delay,
            delivery,
        };
        self.bus.in_flight.fetch_add(1, Ordering::SeqCst);
        // One retry: the queue's task may have ended with the runtime that ran it.
        for _ in 0..2 {
            let tx = match self.delay_queue() {
                Ok(tx) => tx,
                Err(e) => {
                    self.bus.in_flight.fetch_sub(1, Ordering::SeqCst);
                    return Err(e);
                }
            };
            match tx.send(item).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => item = back,
            }
        }
        self.bus.in_flight.fetch_sub(1, Ordering::SeqCst);
        Err(Error::broker(
            "memory broker: the delay queue's task is not running",
        ))
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, channel: &str, payload: &str) -> Result<()> {
        self.check_payload(channel, payload)?;
        self.send_one(channel, payload).await
    }

    /// Checks every message first (nothing is sent when one is invalid), then sends them in
    /// order.
    async fn publish_batch(&self, messages: &[(String, String)]) -> Result<()> {
        for (channel, payload) in messages {
            self.check_payload(channel, payload)?;
        }
        if !self.bus.lock().connected {
            return Err(disconnected());
        }
        for (channel, payload) in messages {
            self.send_one(channel, payload).await?;
        }
        Ok(())
    }

    async fn subscribe(&self, channels: &[String]) -> Result<Subscription> {
        for c in channels {
            validate_channel(c)?;
        }
        let (tx, rx) = mpsc::channel(self.capacity);
        let (epoch, epoch_rx) = {
            let mut state = self.bus.lock();
            if !state.connected {
                return Err(disconnected());
            }
            state.subscribers.push(Subscriber {
                channels: channels.iter().cloned().collect(),
                tx,
            });
            (*self.bus.epoch.borrow(), self.bus.epoch.subscribe())
        };
        let stream = futures_util::stream::unfold(
            (rx, epoch_rx, epoch),
            |(mut rx, epoch_rx, epoch)| async move {
                if *epoch_rx.borrow() != epoch {
                    return None;
                }
                tokio::select! {
                    biased;
                    _ = disconnect_after(epoch_rx.clone(), epoch) => None,
                    m = rx.recv() => m.map(|m| (m, (rx, epoch_rx, epoch))),
                }
            },
        );
        Ok(stream.boxed())
    }

    fn max_payload(&self) -> Option<usize> {
        self.max_payload
    }
}

/// Fault injection for one [`MemoryBroker`] bus (all its clones). Changes apply to messages
/// published after them; each publish of `publish_batch` counts as one message.
#[derive(Clone)]
pub struct Faults {
    bus: Arc<Bus>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.bus.lock();
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
        self.bus.lock().drop_next = n;
    }

    /// Delivers each message published from now on `delay` after it was published (zero turns
    /// it off). Publish returns at once; order is preserved, also between delayed messages and
    /// the undelayed ones that follow them. Up to [`DELAY_QUEUE_CAPACITY`] messages wait at once;
    /// beyond that, publish waits. Needs a tokio runtime.
    pub fn delay(&self, delay: Duration) {
        self.bus.lock().delay = delay;
    }

    /// Delivers each of the next `n` messages twice in a row (replacing any count still
    /// pending).
    pub fn duplicate_next(&self, n: usize) {
        self.bus.lock().duplicate_next = n;
    }

    /// Simulates a lost connection: every current subscription stream ends (messages still
    /// queued or delayed for it are lost), a publisher waiting on a full queue gets an error,
    /// and `publish` and `subscribe` fail with an error saying the memory broker is
    /// disconnected until [`Faults::reconnect`].
    pub fn disconnect(&self) {
        let mut state = self.bus.lock();
        state.connected = false;
        state.subscribers.clear();
        self.bus.epoch.send_modify(|e| *e += 1);
        tracing::debug!("memory broker disconnected (Faults::disconnect)");
    }

    /// Accepts publishes and subscriptions again. Subscriptions ended by the disconnect stay
    /// ended: subscribe again.
    pub fn reconnect(&self) {
        self.bus.lock().connected = true;
        tracing::debug!("memory broker reconnected (Faults::reconnect)");
    }

    /// False between [`Faults::disconnect`] and [`Faults::reconnect`].
    pub fn is_connected(&self) -> bool {
        self.bus.lock().connected
    }

    /// Clears pending drops and duplicates and the delay (the connection state is kept).
    pub fn clear(&self) {
        let mut state = self.bus.lock();
        state.drop_next = 0;
        state.duplicate_next = 0;
        state.delay = Duration::ZERO;
    }
}
