//! The [`Broker`] trait: how messages travel between publishers and services.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_core::stream::BoxStream;
use futures_util::StreamExt;

use crate::error::{Error, Result};

/// Longest channel name, in bytes (PostgreSQL's identifier limit).
pub const MAX_CHANNEL_LEN: usize = 63;

/// One payload received on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The channel it arrived on.
    pub channel: String,
    /// The payload text, as published (possibly one chunk envelope).
    pub payload: String,
}

/// A stream of payloads from the channels subscribed to. It ends when the broker closes.
pub type Subscription = BoxStream<'static, Incoming>;

/// Moves payloads between publishers and services.
///
/// Brokers carry raw text: chunking of large payloads ([`crate::chunk`]) is done by the core on
/// both sides, using [`Broker::max_payload`]. A broker must deliver the payloads one publisher
/// sends on one channel in the order they were sent.
///
/// Implement it outside this workspace to plug in another transport; the testkit's conformance
/// suite checks an implementation (`dispatcher_testkit::broker_conformance!`), and the
/// repository's `examples/custom-broker` is a complete one with a walk-through.
///
/// # Writing one
///
/// A broker depends on this crate alone for the contract, plus `async-trait` for the trait's
/// async methods, `futures-util` (or `futures`) for streams, and its transport (here tokio's
/// channels). A [`Subscription`] is a [`BoxStream`] of [`Incoming`]: build any
/// `Stream<Item = Incoming> + Send + 'static` (from a channel receiver with
/// `futures_util::stream::unfold`, several merged with `stream::select_all`) and call
/// `StreamExt::boxed` on it. The stream ends only when the broker closes.
///
/// **Buffering.** A subscriber may read late: the conformance suite publishes bursts of 1,000
/// payloads on one channel before it reads any, and the service pauses its intake while its queue
/// is full. Hold at least that many per subscription (or make publishers wait for room); a broker
/// that loses payloads under a burst fails the suite's ordering check.
///
/// ```
/// use async_trait::async_trait;
/// use dispatcher_core::{Broker, Incoming, Result, Subscription};
/// use futures_util::StreamExt;
/// use tokio::sync::broadcast;
///
/// /// One queue for every channel, filtered per subscription; it holds 4,096 payloads for the
/// /// slowest subscriber (the oldest are lost beyond that).
/// struct OneBus(broadcast::Sender<Incoming>);
///
/// #[async_trait]
/// impl Broker for OneBus {
///     async fn publish(&self, channel: &str, payload: &str) -> Result<()> {
///         dispatcher_core::broker::validate_channel(channel)?;
///         let message = Incoming { channel: channel.into(), payload: payload.into() };
///         let _ = self.0.send(message); // an error only means nobody listens
///         Ok(())
///     }
///
///     async fn subscribe(&self, channels: &[String]) -> Result<Subscription> {
///         let wanted = channels.to_vec();
///         let stream = futures_util::stream::unfold(self.0.subscribe(), |mut rx| async move {
///             loop {
///                 match rx.recv().await {
///                     Ok(m) => return Some((m, rx)),
///                     Err(broadcast::error::RecvError::Lagged(_)) => continue,
///                     Err(broadcast::error::RecvError::Closed) => return None,
///                 }
///             }
///         });
///         let mine = stream.filter(move |m| std::future::ready(wanted.contains(&m.channel)));
///         Ok(mine.boxed())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// let bus = OneBus(broadcast::channel(4096).0);
/// let mut sub = bus.subscribe(&["jobs".to_owned()]).await?;
/// bus.publish("other", "not for us").await?;
/// bus.publish("jobs", "hello").await?;
/// assert_eq!(sub.next().await.map(|m| m.payload).as_deref(), Some("hello"));
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Sends `payload` to every subscriber of `channel`.
    async fn publish(&self, channel: &str, payload: &str) -> Result<()>;

    /// Sends several payloads, at once where the transport allows it. The default sends them one
    /// after another.
    async fn publish_batch(&self, messages: &[(String, String)]) -> Result<()> {
        for (channel, payload) in messages {
            self.publish(channel, payload).await?;
        }
        Ok(())
    }

    /// Starts receiving from `channels`.
    async fn subscribe(&self, channels: &[String]) -> Result<Subscription>;

    /// Payloads of this many bytes or more must be split into chunks. `None`: no limit.
    fn max_payload(&self) -> Option<usize> {
        None
    }

    /// Health and statistics for the `main`, `status` and `producers` control commands (e.g.
    /// self-check round trips, reconnects). The default reports only the broker's kind.
    fn status(&self) -> BrokerStatus {
        BrokerStatus::new("broker")
    }

    /// Sends a payload to a fresh channel of its own and waits to receive it, within `bound`;
    /// returns the round trip. Brokers with a connection of their own to check override it.
    async fn self_check(&self, bound: Duration) -> Result<Duration> {
        let channel = format!("selfcheck_{}", uuid::Uuid::new_v4().simple());
        let mut sub = self.subscribe(std::slice::from_ref(&channel)).await?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let start = Instant::now();
        self.publish(&channel, &token).await?;
        let wait = async {
            while let Some(msg) = sub.next().await {
                if msg.channel == channel && msg.payload == token {
                    return Ok(start.elapsed());
                }
            }
            Err(Error::broker("subscription ended during self-check"))
        };
        tokio::time::timeout(bound, wait)
            .await
            .map_err(|_| Error::Timeout(bound, format!("self-check message on {channel}")))?
    }
}

/// A broker's health, as the `main` control command lists it.
///
/// Build one with [`BrokerStatus::new`] and set the fields the broker knows.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct BrokerStatus {
    /// The broker's kind (`pg_notify`, `memory`, ...); producers are named after it.
    pub broker: String,
    /// Whether its connection is up, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
    /// Times its connection was replaced.
    pub recycles: u64,
    /// Why it was last replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_recycle_reason: Option<String>,
    /// Its self-check, when it checks itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_check: Option<SelfCheckStatus>,
    /// Anything else the broker reports (e.g. its channels, a backend pid).
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl BrokerStatus {
    /// A status naming the broker's kind, with nothing else known.
    pub fn new(kind: impl Into<String>) -> Self {
        BrokerStatus {
            broker: kind.into(),
            ..Default::default()
        }
    }
}

/// A broker's self-check statistics.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SelfCheckStatus {
    /// Checks made.
    pub count: u64,
    /// Checks that failed (and made the broker replace its connection).
    pub failures: u64,
    /// The last round trip, in milliseconds.
    pub last_rtt_ms: Option<f64>,
    /// The mean round trip of the successful checks, in milliseconds.
    pub mean_rtt_ms: Option<f64>,
    /// The longest round trip, in milliseconds.
    pub max_rtt_ms: Option<f64>,
    /// Seconds between checks.
    pub interval_s: Option<f64>,
}

impl SelfCheckStatus {
    /// Statistics of `count` checks of which `failures` failed.
    pub fn new(count: u64, failures: u64) -> Self {
        SelfCheckStatus {
            count,
            failures,
            ..Default::default()
        }
    }
}

/// Checks a channel name: 1 to 63 bytes, no NUL.
pub fn validate_channel(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "it is empty; channel names are 1 to 63 bytes"
    } else if name.len() > MAX_CHANNEL_LEN {
        "it is longer than 63 bytes"
    } else if name.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(Error::InvalidChannel {
        name: crate::error::preview(name, 100),
        reason,
    })
}

/// Publishes `payload` on `channel`, split into chunk envelopes when the broker needs it.
pub async fn send(broker: &dyn Broker, channel: &str, payload: &str) -> Result<()> {
    validate_channel(channel)?;
    match broker.max_payload() {
        Some(max) if payload.len() >= max => {
            let pieces = crate::chunk::split(payload, max)?;
            let batch: Vec<(String, String)> = pieces
                .into_iter()
                .map(|p| (channel.to_owned(), p))
                .collect();
            broker.publish_batch(&batch).await
        }
        _ => broker.publish(channel, payload).await,
    }
}

/// Splits every payload of `messages` as [`send`] would and publishes them as one batch.
pub async fn send_batch(broker: &dyn Broker, messages: Vec<(String, String)>) -> Result<()> {
    let max = broker.max_payload();
    let mut batch = Vec::with_capacity(messages.len());
    for (channel, payload) in messages {
        validate_channel(&channel)?;
        match max {
            Some(max) if payload.len() >= max => {
                for p in crate::chunk::split(&payload, max)? {
                    batch.push((channel.clone(), p));
                }
            }
            _ => batch.push((channel, payload)),
        }
    }
    broker.publish_batch(&batch).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        assert!(validate_channel("dispatcher_demo").is_ok());
        assert!(validate_channel(&"x".repeat(63)).is_ok());
        let e = validate_channel(&"x".repeat(64)).unwrap_err().to_string();
        assert!(e.contains("longer than 63"), "{e}");
        assert!(validate_channel("").is_err());
        assert!(
            validate_channel("a\"b").is_ok(),
            "quotes are the broker's to escape"
        );
    }
}
