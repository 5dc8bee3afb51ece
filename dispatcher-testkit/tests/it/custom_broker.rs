//! A broker written from scratch outside the core crate, on a `tokio::sync::broadcast` channel,
//! to show that any `Broker` implementation plugs in and passes the conformance suite.
//!
//! Deliberately different from `MemoryBroker`: one broadcast queue for all channels, filtered per
//! subscription, and a smaller payload limit. The broadcast channel is bounded
//! ([`BUS_CAPACITY`]); a subscriber that falls that far behind loses the oldest messages (logged),
//! which is acceptable for this test-only broker.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use dispatcher_core::broker::validate_channel;
use dispatcher_core::{Broker, BrokerError, Incoming, Subscription};
use futures_util::StreamExt;
use tokio::sync::broadcast;

/// Messages the bus holds for its slowest subscriber.
pub const BUS_CAPACITY: usize = 8192;

/// Payloads of this many bytes or more must be chunked.
pub const MAX_PAYLOAD: usize = 4000;

/// One bus; clones are instances connected to it.
#[derive(Debug, Clone)]
pub struct BroadcastBroker {
    bus: Arc<broadcast::Sender<Incoming>>,
}

impl BroadcastBroker {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(BUS_CAPACITY);
        BroadcastBroker { bus: Arc::new(tx) }
    }
}

#[async_trait]
impl Broker for BroadcastBroker {
    async fn publish(&self, channel: &str, payload: &str) -> Result<(), BrokerError> {
        validate_channel(channel)?;
        if payload.len() >= MAX_PAYLOAD {
            return Err(BrokerError::TooLarge {
                size: payload.len(),
                limit: MAX_PAYLOAD - 1,
            });
        }
        // No receivers is fine: nobody listens on that channel.
        let _ = self
            .bus
            .send(Incoming::new(channel.to_owned(), payload.to_owned()));
        Ok(())
    }

    async fn subscribe(&self, channels: &[String]) -> Result<Subscription, BrokerError> {
        let wanted: HashSet<String> = channels.iter().cloned().collect();
        let rx = self.bus.subscribe();
        let stream = futures_util::stream::unfold((rx, wanted), |(mut rx, wanted)| async move {
            loop {
                match rx.recv().await {
                    Ok(m) if wanted.contains(&m.channel) => return Some((m, (rx, wanted))),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(lost = n, "broadcast broker subscriber lagged");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(stream.boxed())
    }

    fn max_payload(&self) -> Option<usize> {
        Some(MAX_PAYLOAD)
    }
}
