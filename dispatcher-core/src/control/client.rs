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
/// The client listens on a fresh `reply_to_<uuid hex>` channel before (or, with
/// [`Broker::subscribe_and_publish`], as) it sends, so no reply is missed. Large replies arrive as chunks and are reassembled.
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
///
/// The reply channel and the command go through [`Broker::subscribe_and_publish`] in one call
/// (with PostgreSQL one round trip). When the broker fails it, the error is returned and the
/// command is not sent again: it may have gone out already, and a command sent twice runs
/// twice.
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
    let mut copies = Vec::with_capacity(2);
    if options.fast_path {
        if let Some(fast) = super::control_channel(channel) {
            copies.push((fast, payload.clone()));
        }
    }
    copies.push((channel.to_owned(), payload));
    // The reply channel and both copies at once (with PostgreSQL: the LISTEN and the NOTIFYs in
    // one transaction, one round trip); the subscription is in effect before any service can
    // read the command, and a failure is returned, never retried (the command may have gone).
    let mut replies =
        broker::subscribe_and_send(broker, std::slice::from_ref(&reply_to), copies).await?;
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use futures_util::StreamExt;

    use super::*;
    use crate::broker::{BrokerError, Incoming, Subscription};

    /// What a request asked of the broker: `subscribe_and_publish` calls (channels, messages),
    /// and whether the separate `subscribe`/`publish` were used.
    /// One `subscribe_and_publish` call: its channels and messages.
    type CombinedCall = (Vec<String>, Vec<(String, String)>);

    #[derive(Default)]
    struct Log {
        combined: Vec<CombinedCall>,
        separate: usize,
    }

    /// A broker with a combined path: it answers `{"ok": true}` on the reply channel, or fails
    /// the combined call when `fail` is set. Separate subscribes and publishes are counted.
    struct Combined {
        log: Arc<Mutex<Log>>,
        fail: bool,
        max: Option<usize>,
    }

    #[async_trait]
    impl Broker for Combined {
        async fn publish(&self, _channel: &str, _payload: &str) -> Result<(), BrokerError> {
            self.log.lock().unwrap().separate += 1;
            Ok(())
        }

        async fn subscribe(&self, _channels: &[String]) -> Result<Subscription, BrokerError> {
            self.log.lock().unwrap().separate += 1;
            Ok(futures_util::stream::pending().boxed())
        }

        async fn subscribe_and_publish(
            &self,
            channels: &[String],
            messages: &[(String, String)],
        ) -> Result<Subscription, BrokerError> {
            self.log
                .lock()
                .unwrap()
                .combined
                .push((channels.to_vec(), messages.to_vec()));
            if self.fail {
                return Err(BrokerError::unavailable(
                    "the connection failed mid-request",
                ));
            }
            let reply = Incoming::new(channels[0].clone(), r#"{"ok": true}"#);
            Ok(futures_util::stream::iter([reply])
                .chain(futures_util::stream::pending())
                .boxed())
        }

        fn max_payload(&self) -> Option<usize> {
            self.max
        }
    }

    #[tokio::test]
    async fn a_request_subscribes_and_sends_both_copies_in_one_call() {
        let log = Arc::new(Mutex::new(Log::default()));
        let broker = Combined {
            log: log.clone(),
            fail: false,
            max: None,
        };
        let options = RequestOptions::new(Duration::from_secs(5)).expected(Some(1));
        let replies = request_with(&broker, "svc", "alive", Map::new(), &options)
            .await
            .unwrap();
        assert_eq!(replies, vec![serde_json::json!({"ok": true})]);
        let log = log.lock().unwrap();
        assert_eq!(log.separate, 0, "no separate subscribe or publish");
        assert_eq!(log.combined.len(), 1);
        let (channels, messages) = &log.combined[0];
        assert_eq!(channels.len(), 1);
        assert!(channels[0].starts_with(crate::control::REPLY_CHANNEL_PREFIX));
        let sent: Vec<&str> = messages.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(sent, ["svc_control", "svc"]);
        let msg: Value = serde_json::from_str(&messages[1].1).unwrap();
        assert_eq!(msg["reply_to"], channels[0].as_str());
        assert_eq!(messages[0].1, messages[1].1);
    }

    #[tokio::test]
    async fn large_commands_go_in_chunks_through_the_combined_call() {
        let log = Arc::new(Mutex::new(Log::default()));
        let broker = Combined {
            log: log.clone(),
            fail: false,
            max: Some(300),
        };
        let mut data = Map::new();
        data.insert("text".into(), Value::from("x".repeat(1000)));
        let options = RequestOptions::new(Duration::from_secs(5))
            .expected(Some(1))
            .control_channel(false);
        request_with(&broker, "svc", "run", data, &options)
            .await
            .unwrap();
        let log = log.lock().unwrap();
        let (_, messages) = &log.combined[0];
        assert!(messages.len() > 5, "{} pieces", messages.len());
        assert!(messages.iter().all(|(c, p)| c == "svc" && p.len() < 300));
    }

    #[tokio::test]
    async fn a_failed_request_is_an_error_and_nothing_is_sent_again() {
        let log = Arc::new(Mutex::new(Log::default()));
        let broker = Combined {
            log: log.clone(),
            fail: true,
            max: None,
        };
        let options = RequestOptions::new(Duration::from_secs(5)).expected(Some(1));
        let e = request_with(&broker, "svc", "alive", Map::new(), &options)
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Broker(BrokerError::Unavailable(_))),
            "{e:?}"
        );
        let log = log.lock().unwrap();
        assert_eq!(log.combined.len(), 1, "sent once");
        assert_eq!(log.separate, 0, "no second path");
    }
}
