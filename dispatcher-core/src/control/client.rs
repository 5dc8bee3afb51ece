//! The client side of control commands: send a command, collect the replies, read them typed.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Map, Value};

use serde::de::DeserializeOwned;

use crate::broker::{self, Broker};
use crate::chunk::{Assembler, AssemblerLimits};
use crate::error::{Error, Result};
use crate::message::{decode, ControlMessage, Decoded};
use crate::signing::SigningKey;

/// Sends `command` with `data` on `channel` and collects replies until `expected` arrived (when
/// given) or `timeout` passed. Replies are returned in arrival order; fewer than `expected` is not
/// an error here (the caller decides). [`request_with`] takes the other options (a quiet window,
/// a signing key).
///
/// The client listens on a fresh `reply_to_<uuid hex>` channel before it sends, so no reply is
/// missed. Large replies arrive as chunks and are reassembled.
pub async fn request(
    broker: &dyn Broker,
    channel: &str,
    command: &str,
    data: Map<String, Value>,
    expected: Option<usize>,
    timeout: Duration,
) -> Result<Vec<Value>> {
    let options = RequestOptions::new(timeout).expected(expected);
    request_with(broker, channel, command, data, &options).await
}

/// Like [`request`], signing the command with `signing` and accepting only replies signed with
/// it (others are logged and dropped) when a key is given.
pub async fn request_signed(
    broker: &dyn Broker,
    channel: &str,
    command: &str,
    data: Map<String, Value>,
    expected: Option<usize>,
    timeout: Duration,
    signing: Option<&SigningKey>,
) -> Result<Vec<Value>> {
    let options = RequestOptions::new(timeout)
        .expected(expected)
        .signing(signing.cloned());
    request_with(broker, channel, command, data, &options).await
}

/// How [`request_with`] sends a command and when it stops collecting replies.
///
/// It stops at the first of: `expected` replies arrived; `quiet` passed since the last reply
/// (once at least one arrived); `timeout` passed since the command was sent.
///
/// ```
/// use std::time::Duration;
/// use dispatcher_core::control::RequestOptions;
///
/// // Every service that answers within 5 s, stopping 150 ms after the replies go quiet.
/// let options = RequestOptions::new(Duration::from_secs(5)).quiet(Some(Duration::from_millis(150)));
/// assert_eq!(options.quiet_window(), Some(Duration::from_millis(150)));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RequestOptions {
    timeout: Duration,
    expected: Option<usize>,
    quiet: Option<Duration>,
    signing: Option<SigningKey>,
    fast_path: bool,
}

impl RequestOptions {
    /// Waits up to `timeout` for replies; no expected count, no quiet window, unsigned, sent on
    /// the control channel as well (see [`RequestOptions::control_channel`]).
    pub fn new(timeout: Duration) -> RequestOptions {
        RequestOptions {
            timeout,
            expected: None,
            quiet: None,
            signing: None,
            fast_path: true,
        }
    }

    /// Stops as soon as this many replies arrived.
    pub fn expected(mut self, expected: Option<usize>) -> Self {
        self.expected = expected;
        self
    }

    /// Stops once no reply arrived for this long after the last one (at least one must arrive).
    pub fn quiet(mut self, quiet: Option<Duration>) -> Self {
        self.quiet = quiet;
        self
    }

    /// Signs the command with this key and accepts only replies signed with it.
    pub fn signing(mut self, signing: Option<SigningKey>) -> Self {
        self.signing = signing;
        self
    }

    /// Whether the command is also sent on the channel's control channel
    /// ([`control_channel`](crate::control::control_channel)), which services read ahead of
    /// tasks, so a flood of tasks does not hold it up. Default true. The service answers a
    /// command once whichever copy it reads first.
    pub fn control_channel(mut self, on: bool) -> Self {
        self.fast_path = on;
        self
    }

    /// The whole wait.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The quiet window, if any.
    pub fn quiet_window(&self) -> Option<Duration> {
        self.quiet
    }
}

/// Sends `command` with `data` on `channel` (and on its control channel, see
/// [`RequestOptions::control_channel`]) and collects the replies as `options` say. Replies are
/// returned in arrival order.
pub async fn request_with(
    broker: &dyn Broker,
    channel: &str,
    command: &str,
    data: Map<String, Value>,
    options: &RequestOptions,
) -> Result<Vec<Value>> {
    broker::validate_channel(channel)?;
    let signing = options.signing.as_ref();
    let reply_to = format!(
        "{}{}",
        super::REPLY_CHANNEL_PREFIX,
        uuid::Uuid::new_v4().simple()
    );
    let mut replies = broker.subscribe(std::slice::from_ref(&reply_to)).await?;
    let msg = ControlMessage {
        control: command.to_owned(),
        control_data: data,
        reply_to: Some(reply_to.clone()),
    };
    let payload = serde_json::to_string(&msg).map_err(|source| Error::Serialize {
        what: format!("control message {command:?}"),
        source,
    })?;
    let payload = match signing {
        Some(k) => k.sign(&payload)?,
        None => payload,
    };
    let deadline = Instant::now() + options.timeout;
    // Both copies in one batch: with PostgreSQL one statement, one round trip.
    let mut copies = Vec::with_capacity(2);
    if options.fast_path {
        if let Some(fast) = super::control_channel(channel) {
            copies.push((fast, payload.clone()));
        }
    }
    copies.push((channel.to_owned(), payload));
    broker::send_batch(broker, copies).await?;
    let mut assembler = Assembler::new(AssemblerLimits::default());
    let mut out = Vec::new();
    while options.expected.is_none_or(|n| out.len() < n) {
        let mut left = deadline.saturating_duration_since(Instant::now());
        if let (Some(q), false) = (options.quiet, out.is_empty()) {
            left = left.min(q);
        }
        let next = match tokio::time::timeout(left, replies.next()).await {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => break,
        };
        let text = match decode(&next.payload) {
            Ok((Decoded::Chunk(env), _)) => match assembler.push(env, Instant::now()) {
                Ok(Some(whole)) => whole,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "bad chunk in a control reply");
                    continue;
                }
            },
            _ => next.payload,
        };
        let text = match signing {
            Some(k) => match k.verify(&text) {
                Ok(inner) => inner,
                Err(e) => {
                    tracing::warn!(error = %e, channel = %reply_to, "control reply dropped");
                    continue;
                }
            },
            None => text,
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => out.push(v),
            Err(e) => tracing::warn!(error = %e, channel = %reply_to, "control reply is not JSON"),
        }
    }
    Ok(out)
}

/// One service's reply: who answered, and the rest of the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The answering service (`""` when the reply did not say).
    pub node_id: String,
    /// The reply without its `node_id`.
    pub body: Value,
}

impl Reply {
    /// Splits a raw reply into node id and body.
    pub fn from_value(value: Value) -> Reply {
        match value {
            Value::Object(mut m) => {
                let node_id = match m.remove("node_id") {
                    Some(Value::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                Reply {
                    node_id,
                    body: Value::Object(m),
                }
            }
            other => Reply {
                node_id: String::new(),
                body: other,
            },
        }
    }

    /// The error the service answered with, if it did (`{"error": "..."}`).
    pub fn error(&self) -> Option<&str> {
        self.body.get("error").and_then(Value::as_str)
    }

    /// Reads the body as the typed reply `T`; an error reply is an error carrying its text.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        if let Some(e) = self.error() {
            return Err(Error::Config(format!(
                "service {} answered with an error: {e}",
                self.node_id
            )));
        }
        serde_json::from_value(self.body.clone()).map_err(|e| {
            Error::malformed(
                format!(
                    "reply of service {} is not of the expected shape: {e}",
                    self.node_id
                ),
                &self.body.to_string(),
            )
        })
    }
}
