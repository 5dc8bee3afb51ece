//! The conformance suite on `MemoryBroker` (several configurations) and on `BroadcastBroker`, a
//! broker written in this test crate; and broken brokers, which the suite must catch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dispatcher_core::{Broker, BrokerError, Incoming, Subscription};
use dispatcher_testkit::conformance::{run_broker_conformance, run_check_blocking, Check};
use dispatcher_testkit::{broker_conformance, MemoryBroker, TestkitError};
use futures_util::StreamExt;

use crate::custom_broker::BroadcastBroker;
use crate::panic_site::panic_site;

broker_conformance!(memory_broker, {
    let bus = MemoryBroker::new();
    move || {
        let b = bus.clone();
        async move { Arc::new(b) as Arc<dyn Broker> }
    }
});

// Tiny queues: publishers wait for subscribers all the time, nothing may be lost.
broker_conformance!(memory_broker_tiny_queues, {
    let bus = MemoryBroker::new().with_capacity(2);
    move || {
        let b = bus.clone();
        async move { Arc::new(b) as Arc<dyn Broker> }
    }
});

broker_conformance!(memory_broker_without_payload_limit, {
    let bus = MemoryBroker::new().with_max_payload(None);
    move || {
        let b = bus.clone();
        async move { Arc::new(b) as Arc<dyn Broker> }
    }
});

broker_conformance!(custom_broadcast_broker, {
    let bus = BroadcastBroker::new();
    move || {
        let b = bus.clone();
        async move { Arc::new(b) as Arc<dyn Broker> }
    }
});

#[tokio::test]
async fn whole_suite_as_one_call_on_memory_broker() {
    let bus = MemoryBroker::new();
    run_broker_conformance(move || {
        let b = bus.clone();
        async move { Arc::new(b) as Arc<dyn Broker> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_as_one_call_on_custom_broker() {
    let bus = BroadcastBroker::new();
    run_broker_conformance(move || {
        let b = bus.clone();
        async move { Arc::new(b) as Arc<dyn Broker> }
    })
    .await;
}

#[test]
fn check_names_are_unique() {
    let names: std::collections::HashSet<_> = Check::ALL.iter().map(|c| c.name()).collect();
    assert_eq!(names.len(), Check::ALL.len());
}

// ----- broken brokers -----

/// Wraps a `MemoryBroker` and misbehaves in one way.
#[derive(Debug, Clone)]
struct Broken {
    inner: MemoryBroker,
    fault: Fault,
    count: Arc<AtomicUsize>,
    held: Arc<Mutex<Option<(String, String)>>>,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Loses every 7th publish.
    Lossy,
    /// Swaps every two publishes.
    Reordering,
    /// Every subscription gets every channel's messages.
    CrossTalk,
    /// Cuts payloads to 10 bytes.
    Truncating,
    /// Claims no payload limit but refuses payloads over 8000 bytes.
    LyingLimit,
    /// `self_check` never returns.
    HangingSelfCheck,
    /// `publish_batch` sends only the first message.
    ShortBatch,
    /// `subscribe` never returns.
    HangingSubscribe,
    /// `subscribe_and_publish` publishes, then subscribes a moment later.
    SubscribesLate,
    /// `subscribe_and_publish` sends its messages twice.
    RequestsTwice,
}

const EVERYTHING: &str = "everything";

impl Broken {
    fn bus(fault: Fault) -> impl Fn() -> std::future::Ready<Arc<dyn Broker>> {
        let proto = Broken {
            inner: MemoryBroker::new().with_max_payload(None),
            fault,
            count: Arc::new(AtomicUsize::new(0)),
            held: Arc::new(Mutex::new(None)),
        };
        move || std::future::ready(Arc::new(proto.clone()) as Arc<dyn Broker>)
    }
}

#[async_trait]
impl Broker for Broken {
    async fn publish(&self, channel: &str, payload: &str) -> Result<(), BrokerError> {
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        match self.fault {
            Fault::Lossy if n % 7 == 6 => Ok(()),
            Fault::Reordering => {
                let held = self.held.lock().unwrap().take();
                match held {
                    None => {
                        *self.held.lock().unwrap() = Some((channel.to_owned(), payload.to_owned()));
                        Ok(())
                    }
                    Some((c, p)) => {
                        self.inner.publish(channel, payload).await?;
                        self.inner.publish(&c, &p).await
                    }
                }
            }
            Fault::CrossTalk => {
                self.inner
                    .publish(EVERYTHING, &format!("{channel}\u{1}{payload}"))
                    .await
            }
            Fault::Truncating => {
                let cut: String = payload.chars().take(10).collect();
                self.inner.publish(channel, &cut).await
            }
            Fault::LyingLimit if payload.len() >= 8000 => Err(BrokerError::TooLarge {
                size: payload.len(),
                limit: 7999,
            }),
            _ => self.inner.publish(channel, payload).await,
        }
    }

    async fn publish_batch(&self, messages: &[(String, String)]) -> Result<(), BrokerError> {
        let messages = match self.fault {
            Fault::ShortBatch => &messages[..messages.len().min(1)],
            _ => messages,
        };
        for (c, p) in messages {
            self.publish(c, p).await?;
        }
        Ok(())
    }

    async fn subscribe(&self, channels: &[String]) -> Result<Subscription, BrokerError> {
        match self.fault {
            Fault::HangingSubscribe => std::future::pending().await,
            Fault::CrossTalk => {
                let sub = self.inner.subscribe(&[EVERYTHING.to_owned()]).await?;
                Ok(sub
                    .map(|m| {
                        let (channel, payload) = m.payload.split_once('\u{1}').unwrap_or_default();
                        Incoming::new(channel.to_owned(), payload.to_owned())
                    })
                    .boxed())
            }
            _ => self.inner.subscribe(channels).await,
        }
    }

    async fn subscribe_and_publish(
        &self,
        channels: &[String],
        messages: &[(String, String)],
    ) -> Result<Subscription, BrokerError> {
        match self.fault {
            Fault::SubscribesLate => {
                self.publish_batch(messages).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.subscribe(channels).await
            }
            Fault::RequestsTwice => {
                let sub = self.subscribe(channels).await?;
                self.publish_batch(messages).await?;
                self.publish_batch(messages).await?;
                Ok(sub)
            }
            _ => self.inner.subscribe_and_publish(channels, messages).await,
        }
    }

    async fn self_check(&self, bound: Duration) -> Result<Duration, BrokerError> {
        match self.fault {
            Fault::HangingSelfCheck => std::future::pending().await,
            _ => self.inner.self_check(bound).await,
        }
    }
}

async fn failure(check: Check, fault: Fault) -> String {
    let make = Broken::bus(fault);
    match check.run_within(&make, Duration::from_millis(500)).await {
        Ok(()) => panic!(
            "check {} passed on a broker with fault {fault:?}",
            check.name()
        ),
        Err(e @ TestkitError::Conformance { .. }) => e.to_string(),
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

#[tokio::test]
async fn a_lossy_broker_fails_ordering_broadcast_and_batch() {
    let e = failure(Check::Ordering, Fault::Lossy).await;
    assert!(
        e.contains("`ordering` failed") && e.contains("payloads 6..=6 were lost or reordered"),
        "{e}"
    );
    let e = failure(Check::Broadcast, Fault::Lossy).await;
    assert!(e.contains("`broadcast` failed"), "{e}");
    let e = failure(Check::Batch, Fault::Lossy).await;
    assert!(e.contains("`batch` failed"), "{e}");
}

#[tokio::test]
async fn a_reordering_broker_fails_ordering() {
    let e = failure(Check::Ordering, Fault::Reordering).await;
    assert!(
        e.contains("publisher p's payload 1 arrived where 0 was expected"),
        "{e}"
    );
    let e = failure(Check::Broadcast, Fault::Reordering).await;
    assert!(e.contains("`broadcast` failed"), "{e}");
}

#[tokio::test]
async fn a_cross_talking_broker_fails_channels() {
    let e = failure(Check::Channels, Fault::CrossTalk).await;
    assert!(e.contains("cross-talk"), "{e}");
}

#[tokio::test]
async fn a_truncating_broker_fails_round_trip_and_large_payload() {
    let e = failure(Check::RoundTrip, Fault::Truncating).await;
    assert!(e.contains("changed in transit"), "{e}");
    let e = failure(Check::LargePayload, Fault::Truncating).await;
    assert!(e.contains("changed in transit"), "{e}");
}

#[tokio::test]
async fn a_broker_hiding_its_payload_limit_fails_large_payload() {
    let e = failure(Check::LargePayload, Fault::LyingLimit).await;
    assert!(
        e.contains("broker::send of a") && e.contains("exceeds the broker's limit"),
        "{e}"
    );
}

#[tokio::test]
async fn a_short_batch_fails_batch() {
    let e = failure(Check::Batch, Fault::ShortBatch).await;
    assert!(
        e.contains("timed out") && e.contains("lost or never sent"),
        "{e}"
    );
}

#[tokio::test]
async fn a_broker_that_subscribes_after_sending_or_sends_twice_fails_request() {
    let e = failure(Check::Request, Fault::SubscribesLate).await;
    assert!(
        e.contains("`request` failed") && e.contains("the answer to request 0"),
        "{e}"
    );
    let e = failure(Check::Request, Fault::RequestsTwice).await;
    assert!(
        e.contains("20 requests were sent, 40 payloads arrived"),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_self_check_times_out_with_a_message() {
    let e = failure(Check::SelfCheck, Fault::HangingSelfCheck).await;
    assert!(e.contains("did not return within"), "{e}");
}

#[tokio::test]
async fn run_broker_conformance_panics_naming_the_failed_checks() {
    let make = Broken::bus(Fault::Truncating);
    let line = line!() + 2;
    let outcome = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
        run_broker_conformance(make),
    ))
    .await;
    let payload = outcome.expect_err("the suite must fail on a truncating broker");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(msg.contains("checks failed"), "{msg}");
    assert!(msg.contains("`round_trip` failed"), "{msg}");
    assert!(msg.contains("`large_payload` failed"), "{msg}");
    assert!(
        !msg.contains("`ordering` failed"),
        "short payloads survive: {msg}"
    );
    assert!(
        msg.contains(&format!("conformance suite called at {}:{line}:", file!())),
        "the message names the caller: {msg}"
    );
}

#[test]
fn a_failing_check_is_reported_at_the_callers_line() {
    let line = line!() + 2;
    let site = panic_site(|| {
        run_check_blocking(Check::RoundTrip, async { Broken::bus(Fault::Truncating) })
    });
    assert_eq!(site.file, file!(), "{site:?}");
    assert_eq!(site.line, line, "{site:?}");
    assert!(
        site.message
            .contains("broker conformance check `round_trip` failed"),
        "{site:?}"
    );
}

#[tokio::test]
async fn a_hanging_subscribe_fails_with_a_message_instead_of_hanging() {
    let e = failure(Check::RoundTrip, Fault::HangingSubscribe).await;
    assert!(
        e.contains("subscribe to [\"conf_rt_") && e.contains("did not return within 500ms"),
        "{e}"
    );
}
