//! The [`Broker`] trait: how messages travel between publishers and services.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::delivery::{ConsumerInfo, Delivery};
use futures_core::stream::BoxStream;
use futures_util::StreamExt;

use crate::error::Result;

/// Longest channel name, in bytes (PostgreSQL's identifier limit).
pub const MAX_CHANNEL_LEN: usize = 63;

/// What a [`Broker`] method may fail with: the whole list a broker author returns from and a
/// caller handles.
///
/// Pick the variant by what a caller can do about it: fix the request ([`InvalidChannel`],
/// [`TooLarge`]), try again later ([`Unavailable`], [`Timeout`]), give up on this broker
/// ([`Closed`]), or nothing specific ([`Other`]). Every message names the offending value.
///
/// What the service does with one:
///
/// * when it starts, any error from `subscribe` fails `ServiceBuilder::start`;
/// * when a subscription has ended, it subscribes again with backoff (100 ms doubling up to 5 s)
///   after every error but [`Closed`], which ends the retries (logged): nothing arrives from that
///   broker any more;
/// * a control reply it cannot publish is logged and dropped;
/// * the [`crate::Publisher`] returns the error to its caller, wrapped in
///   [`Error::Broker`](crate::Error::Broker), and retries nothing: the caller decides.
///
/// [`InvalidChannel`]: BrokerError::InvalidChannel
/// [`TooLarge`]: BrokerError::TooLarge
/// [`Unavailable`]: BrokerError::Unavailable
/// [`Timeout`]: BrokerError::Timeout
/// [`Closed`]: BrokerError::Closed
/// [`Other`]: BrokerError::Other
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A channel name the broker cannot use. [`validate_channel`] returns it for names outside
    /// the contract's rules (1 to 63 bytes, no NUL); a broker with stricter rules of its own
    /// returns it too, with its reason. Retrying the same name fails again.
    #[error("invalid channel name {name:?}: {reason}")]
    InvalidChannel {
        /// The channel name given (cut after its first 100 bytes).
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A payload larger than the transport carries. A broker whose [`Broker::max_payload`] is
    /// `Some(max)` refuses payloads of `max` bytes or more with it, never cuts them;
    /// [`send`] and [`send_batch`] split payloads into chunks under the limit first, so only a
    /// caller that publishes directly (or a broker that misreports its limit) sees it.
    #[error("payload of {size} bytes exceeds the broker's limit of {limit} bytes")]
    TooLarge {
        /// The payload's size, in bytes.
        size: usize,
        /// The largest payload the broker carries, in bytes (`max_payload() - 1`).
        limit: usize,
    },
    /// No working connection now (refused, reset, closed under the call, the server shutting
    /// down); a retry may succeed once the broker has reconnected. Build it with
    /// [`BrokerError::unavailable`].
    #[error("broker unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A call, or the self-check, took longer than its bound: the bound and what was waited for.
    /// A retry may succeed.
    #[error("broker timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// The broker is closed for good (shut down, its background task gone): no call on it will
    /// succeed again.
    #[error("the broker is closed")]
    Closed,
    /// Anything else: the server refused a statement, a misconfiguration found late, a bug in
    /// the transport. Whether a retry helps is unknown. Build it with [`BrokerError::other`].
    #[error("broker error: {0}")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl BrokerError {
    /// No working connection now: wraps the transport's error (or a message) as
    /// [`BrokerError::Unavailable`].
    pub fn unavailable(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        BrokerError::Unavailable(e.into())
    }

    /// Wraps any error (or a message) as [`BrokerError::Other`].
    pub fn other(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        BrokerError::Other(e.into())
    }
}

/// One payload received on a channel. Build it with [`Incoming::new`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Incoming {
    /// The channel it arrived on.
    pub channel: String,
    /// The payload text, as published (possibly one chunk envelope).
    pub payload: String,
    /// Set by durable brokers only: the handle the service settles when the Call ends
    /// ([`crate::delivery`]). Fire-and-forget brokers leave it `None`.
    pub delivery: Option<Delivery>,
}

impl Incoming {
    /// A payload received on `channel`, with no delivery to settle.
    pub fn new(channel: impl Into<String>, payload: impl Into<String>) -> Self {
        Incoming {
            channel: channel.into(),
            payload: payload.into(),
            delivery: None,
        }
    }

    /// The same payload, to be settled through `delivery` when its Call ends.
    pub fn with_delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = Some(delivery);
        self
    }
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
/// **Errors.** Every method fails with a [`BrokerError`]; its documentation says which variant
/// fits which failure and what the service does with each.
///
/// ```
/// use async_trait::async_trait;
/// use dispatcher_core::{Broker, BrokerError, Incoming, Subscription};
/// use futures_util::StreamExt;
/// use tokio::sync::broadcast;
///
/// /// One queue for every channel, filtered per subscription; it holds 4,096 payloads for the
/// /// slowest subscriber (the oldest are lost beyond that).
/// struct OneBus(broadcast::Sender<Incoming>);
///
/// #[async_trait]
/// impl Broker for OneBus {
///     async fn publish(&self, channel: &str, payload: &str) -> Result<(), BrokerError> {
///         dispatcher_core::broker::validate_channel(channel)?;
///         let message = Incoming::new(channel, payload);
///         let _ = self.0.send(message); // an error only means nobody listens
///         Ok(())
///     }
///
///     async fn subscribe(&self, channels: &[String]) -> Result<Subscription, BrokerError> {
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
/// # async fn main() -> Result<(), BrokerError> {
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
    ///
    /// Fails with [`BrokerError::InvalidChannel`] for a name it cannot use and
    /// [`BrokerError::TooLarge`] for a payload of [`Broker::max_payload`] bytes or more.
    async fn publish(&self, channel: &str, payload: &str) -> Result<(), BrokerError>;

    /// Sends several payloads, at once where the transport allows it. The default sends them one
    /// after another.
    async fn publish_batch(&self, messages: &[(String, String)]) -> Result<(), BrokerError> {
        for (channel, payload) in messages {
            self.publish(channel, payload).await?;
        }
        Ok(())
    }

    /// Starts receiving from `channels`.
    async fn subscribe(&self, channels: &[String]) -> Result<Subscription, BrokerError>;

    /// Starts receiving from `channels`, then sends `messages` (a request and where its answers
    /// come back: a control command and its `reply_to`). The subscription is in effect before any
    /// message can be received by anyone, so no answer to them is missed.
    ///
    /// The default subscribes ([`Broker::subscribe`]), then publishes the batch
    /// ([`Broker::publish_batch`]). A broker that can do both at once overrides it (`PgBroker`:
    /// the LISTEN and the NOTIFYs in one transaction, one round trip). An override must send the
    /// messages at most once: a failure after they may have gone out is an error, never a retry
    /// (a control command sent twice runs twice).
    async fn subscribe_and_publish(
        &self,
        channels: &[String],
        messages: &[(String, String)],
    ) -> Result<Subscription, BrokerError> {
        let sub = self.subscribe(channels).await?;
        self.publish_batch(messages).await?;
        Ok(sub)
    }

    /// Starts receiving from `channels` (a service's control channels,
    /// [`control_channel`](crate::control::control_channel)) on a path that the subscriptions of
    /// [`Broker::subscribe`] cannot hold up: a service reads it even while its intake is paused
    /// behind a flood of tasks, so control commands sent there are answered at once.
    ///
    /// `Ok(None)` (the default) means the broker has no such path; the service then reads control
    /// commands from its channels only, in order with the tasks. A broker that implements it
    /// must not let a full or slow [`Broker::subscribe`] subscription delay this one (e.g. a
    /// connection of its own). Payloads on it are handled like any other (a task message sent
    /// there is run), and it may carry few: it has no intake pause. A service holds this
    /// subscription only while its intake is paused (and a while after), so it may be costly to
    /// open.
    async fn subscribe_control(
        &self,
        channels: &[String],
    ) -> Result<Option<Subscription>, BrokerError> {
        let _ = channels;
        Ok(None)
    }

    /// Payloads of this many bytes or more must be split into chunks. `None`: no limit.
    fn max_payload(&self) -> Option<usize> {
        None
    }

    /// Called once by a service before it subscribes, with its capacity and the tasks that have
    /// a cluster-wide concurrency limit. Durable brokers size their claims by it; the default
    /// ignores it.
    fn consumer(&self, info: &ConsumerInfo) {
        let _ = info;
    }

    /// Health and statistics for the `main`, `status` and `producers` control commands (e.g.
    /// self-check round trips, reconnects). The default reports only the broker's kind.
    fn status(&self) -> BrokerStatus {
        BrokerStatus::new("broker")
    }

    /// Sends a payload to a fresh channel of its own and waits to receive it, within `bound`;
    /// returns the round trip. Brokers with a connection of their own to check override it.
    ///
    /// Fails with [`BrokerError::Timeout`] naming `bound` when the payload does not come back
    /// in time, and with [`BrokerError::Unavailable`] when the subscription ends first.
    async fn self_check(&self, bound: Duration) -> Result<Duration, BrokerError> {
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
            Err(BrokerError::unavailable(format!(
                "the subscription to {channel} ended during the self-check"
            )))
        };
        tokio::time::timeout(bound, wait).await.map_err(|_| {
            BrokerError::Timeout(bound, format!("the self-check payload on {channel}"))
        })?
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

/// Checks a channel name: 1 to 63 bytes, no NUL. The error is a
/// [`BrokerError::InvalidChannel`] naming the channel and the rule it breaks.
pub fn validate_channel(name: &str) -> Result<(), BrokerError> {
    let reason = if name.is_empty() {
        "it is empty; channel names are 1 to 63 bytes"
    } else if name.len() > MAX_CHANNEL_LEN {
        "it is longer than 63 bytes"
    } else if name.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(BrokerError::InvalidChannel {
        name: crate::error::preview(name, 100),
        reason,
    })
}

/// Publishes `payload` on `channel`, split into chunk envelopes when the broker needs it.
///
/// Fails with [`Error::Broker`](crate::Error::Broker) when the broker does, and with the
/// chunking's error when the payload cannot be split.
pub async fn send(broker: &dyn Broker, channel: &str, payload: &str) -> Result<()> {
    validate_channel(channel)?;
    match broker.max_payload() {
        Some(max) if payload.len() >= max => {
            let pieces = crate::chunk::split(payload, max)?;
            let batch: Vec<(String, String)> = pieces
                .into_iter()
                .map(|p| (channel.to_owned(), p))
                .collect();
            Ok(broker.publish_batch(&batch).await?)
        }
        _ => Ok(broker.publish(channel, payload).await?),
    }
}

/// Splits every payload of `messages` as [`send`] would and publishes them as one batch.
pub async fn send_batch(broker: &dyn Broker, messages: Vec<(String, String)>) -> Result<()> {
    let batch = split_batch(broker, messages)?;
    Ok(broker.publish_batch(&batch).await?)
}

/// Subscribes to `channels` and sends `messages` (split as [`send_batch`] splits them) through
/// [`Broker::subscribe_and_publish`]: what a client that waits for answers to its messages calls.
pub async fn subscribe_and_send(
    broker: &dyn Broker,
    channels: &[String],
    messages: Vec<(String, String)>,
) -> Result<Subscription> {
    let batch = split_batch(broker, messages)?;
    Ok(broker.subscribe_and_publish(channels, &batch).await?)
}

/// `messages` with every payload the broker cannot take whole split into chunk envelopes.
fn split_batch(
    broker: &dyn Broker,
    messages: Vec<(String, String)>,
) -> Result<Vec<(String, String)>> {
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
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

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

    #[test]
    fn invalid_channel_errors_name_the_channel_and_the_rule() {
        let long = "y".repeat(64);
        let e = validate_channel(&long).unwrap_err();
        assert!(
            matches!(&e, BrokerError::InvalidChannel { name, .. } if *name == long),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("invalid channel name {long:?}: it is longer than 63 bytes")
        );
        assert_eq!(
            validate_channel("").unwrap_err().to_string(),
            "invalid channel name \"\": it is empty; channel names are 1 to 63 bytes"
        );
        assert_eq!(
            validate_channel("a\0b").unwrap_err().to_string(),
            "invalid channel name \"a\\0b\": it contains a NUL byte"
        );
        // A huge name is cut in the message.
        let huge = "z".repeat(10_000);
        let shown = validate_channel(&huge).unwrap_err().to_string();
        assert!(shown.len() < 300, "{shown}");
        assert!(shown.contains(&"z".repeat(100)), "{shown}");
    }

    #[test]
    fn broker_error_messages_name_their_values() {
        let e = BrokerError::TooLarge {
            size: 9000,
            limit: 7999,
        };
        assert_eq!(
            e.to_string(),
            "payload of 9000 bytes exceeds the broker's limit of 7999 bytes"
        );
        let e = BrokerError::Timeout(Duration::from_millis(1500), "a round trip".into());
        assert_eq!(
            e.to_string(),
            "broker timed out after 1.5s waiting for a round trip"
        );
        assert_eq!(BrokerError::Closed.to_string(), "the broker is closed");
        assert_eq!(
            BrokerError::other("the server said no").to_string(),
            "broker error: the server said no"
        );
    }

    #[test]
    fn unavailable_and_other_keep_their_cause() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = BrokerError::unavailable(refused);
        assert!(matches!(e, BrokerError::Unavailable(_)), "{e:?}");
        assert_eq!(e.to_string(), "broker unavailable: refused");
        let source = std::error::Error::source(&e).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("refused"));

        let e = BrokerError::other(std::fmt::Error);
        assert!(matches!(e, BrokerError::Other(_)), "{e:?}");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn the_contract_error_wraps_and_shows_a_broker_error() {
        let e = Error::from(BrokerError::Closed);
        assert!(matches!(e, Error::Broker(BrokerError::Closed)), "{e:?}");
        assert_eq!(e.to_string(), "the broker is closed");

        let e = Error::from(BrokerError::Timeout(Duration::from_secs(3), "x".into()));
        assert_eq!(e.to_string(), "broker timed out after 3s waiting for x");

        // `Error::broker` is the shorthand for `Other`.
        let e = Error::broker("boom");
        assert!(matches!(e, Error::Broker(BrokerError::Other(_))), "{e:?}");
        assert_eq!(e.to_string(), "broker error: boom");

        // The cause stays reachable through the contract's error.
        let e = Error::from(BrokerError::unavailable(std::io::Error::other("reset")));
        let source = std::error::Error::source(&e).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("reset"));

        // `?` converts.
        fn check(name: &str) -> Result<()> {
            validate_channel(name)?;
            Ok(())
        }
        let e = check("").unwrap_err();
        assert!(
            matches!(e, Error::Broker(BrokerError::InvalidChannel { .. })),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with("invalid channel name \"\""),
            "{e}"
        );
    }

    /// A broker whose publishes go nowhere and whose subscriptions end at once or never.
    struct Void {
        ends: bool,
    }

    #[async_trait]
    impl Broker for Void {
        async fn publish(&self, channel: &str, _payload: &str) -> Result<(), BrokerError> {
            validate_channel(channel)
        }

        async fn subscribe(&self, _channels: &[String]) -> Result<Subscription, BrokerError> {
            if self.ends {
                Ok(futures_util::stream::empty().boxed())
            } else {
                Ok(futures_util::stream::pending().boxed())
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_default_self_check_names_its_bound() {
        let bound = Duration::from_millis(250);
        let e = Void { ends: false }.self_check(bound).await.unwrap_err();
        assert!(
            matches!(&e, BrokerError::Timeout(d, what) if *d == bound && what.contains("selfcheck_")),
            "{e:?}"
        );
        assert!(e.to_string().contains("250ms"), "{e}");

        let e = Void { ends: true }.self_check(bound).await.unwrap_err();
        assert!(matches!(e, BrokerError::Unavailable(_)), "{e:?}");
        assert!(e.to_string().contains("ended during the self-check"), "{e}");
    }

    #[tokio::test]
    async fn send_wraps_the_brokers_error() {
        let e = send(&Void { ends: true }, "", "x").await.unwrap_err();
        assert!(
            matches!(e, Error::Broker(BrokerError::InvalidChannel { .. })),
            "{e:?}"
        );
        let e = send_batch(&Void { ends: true }, vec![("x".repeat(64), "p".into())])
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Broker(BrokerError::InvalidChannel { .. })),
            "{e:?}"
        );
    }
}
