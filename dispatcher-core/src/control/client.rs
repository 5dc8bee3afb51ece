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
/// an error here (the caller decides).
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
    request_signed(broker, channel, command, data, expected, timeout, None).await
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
    broker::validate_channel(channel)?;
    let reply_to = format!("reply_to_{}", uuid::Uuid::new_v4().simple());
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
    broker::send(broker, channel, &payload).await?;
    let deadline = Instant::now() + timeout;
    let mut assembler = Assembler::new(AssemblerLimits::default());
    let mut out = Vec::new();
    while expected.is_none_or(|n| out.len() < n) {
        let left = deadline.saturating_duration_since(Instant::now());
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
