//! [`MemoryBroker`]: an in-process pub/sub bus implementing [`Broker`], for a service and its
//! publishers living in one process.
//!
//! Use it to embed the dispatcher in a single-process application (a service and the code that
//! publishes to it share one bus, no server to run), for quickstarts and examples, and as the
//! default broker of tests. It is a plain bus: no persistence, nothing crosses the process, and,
//! like PostgreSQL's NOTIFY, a payload published while nobody subscribes to its channel is gone.
//! To reach services in other processes, use a networked broker (`dispatcher-broker-pg`).
//!
//! Tests that need a misbehaving bus (lost, late or duplicated messages, a dropped connection)
//! use the testkit's `MemoryBroker`, which injects those faults on top of this one.
//!
//! A service and a publisher on one bus:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use dispatcher_core::{task, Broker, CallFilter, Outcome, Publisher, TaskRegistry};
//! use dispatcher_runtime::{InProcessPool, MemoryBroker, Service};
//!
//! /// Greets someone.
//! #[task(name = "app.greet")]
//! fn greet(name: String) -> String {
//!     format!("hello, {name}")
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
//! let service = Service::builder()
//!     .registry(TaskRegistry::new().register::<greet>())
//!     .broker(bus.clone())
//!     .channels(["app"])
//!     .pool(InProcessPool::new(2))
//!     .start()
//!     .await?;
//!
//! // Anything holding the bus publishes to the service, as another process would over PostgreSQL.
//! let publisher = Publisher::new(bus, "app")?;
//! publisher.publish(greet::call("world".into())).await?;
//!
//! service.wait_for_finished(1, Duration::from_secs(5)).await?;
//! let calls = service.history(&CallFilter::default());
//! assert_eq!(calls[0].outcome, Some(Outcome::Ok));
//! assert_eq!(calls[0].result, Some("hello, world".into()));
//! service.shutdown().await?;
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use dispatcher_core::broker::validate_channel;
use dispatcher_core::{Broker, BrokerError, Incoming, Subscription};
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// Queue capacity of each subscription unless [`MemoryBroker::with_capacity`] says otherwise.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// The default payload limit, PostgreSQL's: payloads of this many bytes or more are refused, so
/// the core splits them into chunks, as it would for PostgreSQL.
pub const DEFAULT_MAX_PAYLOAD: usize = dispatcher_core::chunk::DEFAULT_MAX_PAYLOAD;

/// An in-process pub/sub bus implementing [`Broker`]; see the [module docs](self).
///
/// * **Sharing.** Clones share one bus (through an inner `Arc`), so `Arc::new(broker.clone())` is
///   an `Arc<dyn Broker>` connected to the same bus; a service and a publisher can each hold one.
///   When the last clone is dropped, every subscription stream ends.
/// * **Delivery.** Every subscription of a channel gets every payload published on it after the
///   subscription was made (broadcast, like NOTIFY). The payloads one publisher sends on one
///   channel arrive in the order they were sent.
/// * **Backpressure.** Each subscription has a bounded queue ([`MemoryBroker::with_capacity`],
///   default [`DEFAULT_CAPACITY`]). When a subscriber's queue is full, `publish` waits until it
///   has room: nothing is ever dropped. A subscription that is never read therefore stalls
///   publishers of its channels once its queue is full; drop it to unsubscribe.
/// * **Size limit.** Payloads of [`Broker::max_payload`] bytes or more are refused with
///   [`BrokerError::TooLarge`] (default [`DEFAULT_MAX_PAYLOAD`], like PostgreSQL), and the core splits
///   larger messages into chunks; `with_max_payload(None)` lifts the limit.
#[derive(Clone)]
pub struct MemoryBroker {
    bus: Arc<Bus>,
    capacity: usize,
    max_payload: Option<usize>,
}

/// The state shared by all clones of one [`MemoryBroker`].
struct Bus {
    subscribers: Mutex<Vec<Subscriber>>,
}

struct Subscriber {
    channels: HashSet<String>,
    tx: mpsc::Sender<Incoming>,
}

impl Bus {
    fn lock(&self) -> MutexGuard<'_, Vec<Subscriber>> {
        // A poisoned lock only means a panic elsewhere while holding it; the list stays usable.
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("capacity", &self.capacity)
            .field("max_payload", &self.max_payload)
            .field("subscriptions", &self.subscription_count())
            .finish()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        MemoryBroker::new()
    }
}

impl MemoryBroker {
    /// A fresh bus with the default queue capacity and payload limit.
    pub fn new() -> Self {
        MemoryBroker {
            bus: Arc::new(Bus {
                subscribers: Mutex::new(Vec::new()),
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

    /// Live subscriptions on the bus (dropped ones are not counted).
    pub fn subscription_count(&self) -> usize {
        let mut subscribers = self.bus.lock();
        subscribers.retain(|s| !s.tx.is_closed());
        subscribers.len()
    }

    /// What `publish` checks before sending through this handle: a valid channel name and a
    /// payload under the limit. Lets a caller refuse a whole batch before sending any of it.
    ///
    /// Fails with [`BrokerError::InvalidChannel`] or [`BrokerError::TooLarge`].
    pub fn check(&self, channel: &str, payload: &str) -> Result<(), BrokerError> {
        validate_channel(channel)?;
        match self.max_payload {
            Some(max) if payload.len() >= max => Err(BrokerError::TooLarge {
                size: payload.len(),
                limit: max.saturating_sub(1),
            }),
            _ => Ok(()),
        }
    }

    /// The queues of the live subscriptions of `channel`.
    fn targets(&self, channel: &str) -> Vec<mpsc::Sender<Incoming>> {
        let mut subscribers = self.bus.lock();
        subscribers.retain(|s| !s.tx.is_closed());
        subscribers
            .iter()
            .filter(|s| s.channels.contains(channel))
            .map(|s| s.tx.clone())
            .collect()
    }

    /// Hands one checked payload to every subscription of its channel, waiting for room in full
    /// queues.
    async fn deliver(&self, channel: &str, payload: &str) {
        let targets = self.targets(channel);
        if targets.is_empty() {
            return;
        }
        let message = Incoming::new(channel.to_owned(), payload.to_owned());
        for tx in targets {
            // An error means the subscription was dropped meanwhile: it unsubscribed.
            let _ = tx.send(message.clone()).await;
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, channel: &str, payload: &str) -> Result<(), BrokerError> {
        self.check(channel, payload)?;
        self.deliver(channel, payload).await;
        Ok(())
    }

    /// Checks every message first (nothing is sent when one is invalid), then sends them in
    /// order.
    async fn publish_batch(&self, messages: &[(String, String)]) -> Result<(), BrokerError> {
        for (channel, payload) in messages {
            self.check(channel, payload)?;
        }
        for (channel, payload) in messages {
            self.deliver(channel, payload).await;
        }
        Ok(())
    }

    async fn subscribe(&self, channels: &[String]) -> Result<Subscription, BrokerError> {
        for c in channels {
            validate_channel(c)?;
        }
        let (tx, rx) = mpsc::channel(self.capacity);
        self.bus.lock().push(Subscriber {
            channels: channels.iter().cloned().collect(),
            tx,
        });
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
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

    fn status(&self) -> dispatcher_core::BrokerStatus {
        let mut status = dispatcher_core::BrokerStatus::new("memory");
        status.connected = Some(true);
        let details = &mut status.details;
        details.insert(
            "subscriptions".into(),
            serde_json::json!(self.subscription_count()),
        );
        details.insert("capacity".into(), serde_json::json!(self.capacity));
        details.insert("max_payload".into(), serde_json::json!(self.max_payload));
        status
    }
}
