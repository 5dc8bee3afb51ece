//! An example [`Broker`] written against `dispatcher-core` alone: [`ChannelBroker`], an
//! in-process bus with one `tokio::sync::broadcast` channel per channel name.
//!
//! It shows what a broker has to do (see this crate's README for the walk-through): check channel
//! names, refuse payloads over its limit so that the core splits them into chunks, keep the order
//! of one publisher's payloads on a channel, buffer bursts, and hand out subscriptions as a boxed
//! stream of [`Incoming`]. Its tests run the testkit's broker conformance suite on it, and a real
//! service with it.
//!
//! ```
//! use std::sync::Arc;
//! use dispatcher_core::Broker;
//! use dispatcher_example_custom_broker::ChannelBroker;
//! use futures_util::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> dispatcher_core::Result<()> {
//! let bus = ChannelBroker::new();
//! // Clones share the bus: a service holds one, a publisher another.
//! let service_side: Arc<dyn Broker> = Arc::new(bus.clone());
//! let mut sub = service_side.subscribe(&["jobs".to_owned()]).await?;
//! bus.publish("jobs", "hello").await?;
//! assert_eq!(sub.next().await.map(|m| m.payload), Some("hello".to_owned()));
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use dispatcher_core::broker::validate_channel;
use dispatcher_core::{Broker, BrokerError, BrokerStatus, Incoming, Subscription};
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast;

/// Payloads each channel holds for its slowest subscription, by default. The broker
/// conformance suite publishes 1,000 payloads on one channel before it reads any.
pub const DEFAULT_CAPACITY: usize = 4096;

/// The payload limit, by default (PostgreSQL's): payloads of this many bytes or more are refused,
/// so the core splits them into chunks.
pub const DEFAULT_MAX_PAYLOAD: usize = dispatcher_core::chunk::DEFAULT_MAX_PAYLOAD;

/// An in-process pub/sub bus: one `tokio::sync::broadcast` channel per channel name.
///
/// * **Sharing.** Clones share one bus; `Arc::new(broker.clone())` is another
///   `Arc<dyn Broker>` on it.
/// * **Delivery.** Every subscription of a channel gets every payload published on it after the
///   subscription was made, in the order it was published. A payload published on a channel
///   nobody subscribes to is dropped, as NOTIFY drops it.
/// * **Buffering.** Each channel holds up to `capacity` payloads for its slowest subscription
///   ([`DEFAULT_CAPACITY`]). A subscription that falls further behind loses the oldest ones; they
///   are counted ([`ChannelBroker::lost_count`], and `lost` in [`Broker::status`]). Publishers
///   never wait. A broker that must never lose anything applies backpressure instead (the
///   testkit's `MemoryBroker` makes publishers wait for room).
/// * **Size limit.** Payloads of `max_payload` bytes or more are refused with
///   [`BrokerError::TooLarge`]; [`dispatcher_core::broker::send`] splits them into chunks first.
/// * **Errors.** Only [`BrokerError::InvalidChannel`] (from
///   [`validate_channel`]) and [`BrokerError::TooLarge`]: an in-process bus has no connection
///   to lose, so it never returns `Unavailable`, `Timeout` or `Closed` (see the README's
///   "Errors" section for a broker that does).
#[derive(Debug, Clone)]
pub struct ChannelBroker {
    bus: Arc<Bus>,
}

#[derive(Debug)]
struct Bus {
    channels: Mutex<HashMap<String, broadcast::Sender<String>>>,
    capacity: usize,
    max_payload: Option<usize>,
    published: AtomicU64,
    lost: AtomicU64,
}

impl ChannelBroker {
    /// A bus with [`DEFAULT_CAPACITY`] and [`DEFAULT_MAX_PAYLOAD`].
    pub fn new() -> Self {
        ChannelBroker::with_limits(DEFAULT_CAPACITY, Some(DEFAULT_MAX_PAYLOAD))
    }

    /// A bus holding `capacity` payloads per channel (at least 1) and refusing payloads of
    /// `max_payload` bytes or more (`None`: no limit).
    pub fn with_limits(capacity: usize, max_payload: Option<usize>) -> Self {
        ChannelBroker {
            bus: Arc::new(Bus {
                channels: Mutex::new(HashMap::new()),
                capacity: capacity.max(1),
                max_payload: max_payload.map(|m| m.max(1)),
                published: AtomicU64::new(0),
                lost: AtomicU64::new(0),
            }),
        }
    }

    /// Payloads subscriptions lost by falling more than the capacity behind.
    pub fn lost_count(&self) -> u64 {
        self.bus.lost.load(Ordering::Relaxed)
    }

    fn channels(&self) -> MutexGuard<'_, HashMap<String, broadcast::Sender<String>>> {
        // A poisoned lock only means a panic elsewhere while holding it; the map stays usable.
        self.bus.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_size(&self, payload: &str) -> Result<(), BrokerError> {
        match self.bus.max_payload {
            Some(max) if payload.len() >= max => Err(BrokerError::TooLarge {
                size: payload.len(),
                limit: max - 1,
            }),
            _ => Ok(()),
        }
    }

    /// Sends on `channel` with the map locked; forgets a channel nobody subscribes to anymore.
    fn send_locked(
        &self,
        channels: &mut HashMap<String, broadcast::Sender<String>>,
        channel: &str,
        payload: &str,
    ) {
        if let Some(tx) = channels.get(channel) {
            if tx.send(payload.to_owned()).is_err() {
                channels.remove(channel);
            }
        }
        self.bus.published.fetch_add(1, Ordering::Relaxed);
    }
}

impl Default for ChannelBroker {
    fn default() -> Self {
        ChannelBroker::new()
    }
}

/// One channel's payloads as a stream; it ends when the channel's sender is gone.
fn receive(
    channel: String,
    rx: broadcast::Receiver<String>,
    bus: Arc<Bus>,
) -> impl Stream<Item = Incoming> + Send + 'static {
    stream::unfold((channel, rx, bus), |(channel, mut rx, bus)| async move {
        loop {
            match rx.recv().await {
                Ok(payload) => {
                    let message = Incoming::new(channel.clone(), payload);
                    return Some((message, (channel, rx, bus)));
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    bus.lost.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

#[async_trait]
impl Broker for ChannelBroker {
    async fn publish(&self, channel: &str, payload: &str) -> Result<(), BrokerError> {
        validate_channel(channel)?;
        self.check_size(payload)?;
        self.send_locked(&mut self.channels(), channel, payload);
        Ok(())
    }

    /// Checks every payload first, then sends them all under one lock: a batch is all or
    /// nothing, and no other publisher's payload lands in its middle.
    async fn publish_batch(&self, messages: &[(String, String)]) -> Result<(), BrokerError> {
        for (channel, payload) in messages {
            validate_channel(channel)?;
            self.check_size(payload)?;
        }
        let mut channels = self.channels();
        for (channel, payload) in messages {
            self.send_locked(&mut channels, channel, payload);
        }
        Ok(())
    }

    async fn subscribe(&self, channels: &[String]) -> Result<Subscription, BrokerError> {
        for channel in channels {
            validate_channel(channel)?;
        }
        // Each name once: a channel listed twice is still delivered once.
        let names: BTreeSet<&String> = channels.iter().collect();
        let receivers: Vec<(String, broadcast::Receiver<String>)> = {
            let mut map = self.channels();
            names
                .into_iter()
                .map(|name| {
                    let tx = map
                        .entry(name.clone())
                        .or_insert_with(|| broadcast::channel(self.bus.capacity).0);
                    (name.clone(), tx.subscribe())
                })
                .collect()
        };
        let streams = receivers
            .into_iter()
            .map(|(channel, rx)| receive(channel, rx, self.bus.clone()).boxed());
        Ok(stream::select_all(streams).boxed())
    }

    fn max_payload(&self) -> Option<usize> {
        self.bus.max_payload
    }

    fn status(&self) -> BrokerStatus {
        // The kind names the broker's producer in the `producers` control command.
        let mut status = BrokerStatus::new("channel");
        let details = &mut status.details;
        details.insert("channels".into(), self.channels().len().into());
        details.insert(
            "published".into(),
            self.bus.published.load(Ordering::Relaxed).into(),
        );
        details.insert("lost".into(), self.lost_count().into());
        status
    }

    // `self_check` keeps the trait's default: it subscribes to a fresh channel, publishes a
    // token and waits for it within its bound, which is a real round trip through this bus. A
    // broker with a connection of its own to check (a socket, a database session) overrides it.
}
