//! A conformance suite for [`Broker`] implementations: what the service relies on.
//!
//! Give it a `make` function that returns a fresh broker instance connected to the same bus or
//! database each time it is called; the checks publish through one instance and subscribe through
//! others. Every check uses channels of its own (a uuid suffix), waits at most
//! [`MESSAGE_WAIT`] for any one message or broker call and [`CHECK_TIMEOUT`] in all, and fails
//! with a message naming the check and what the broker did wrong; it never hangs.
//!
//! What a broker must do (one [`Check`] each):
//!
//! * deliver a payload published after `subscribe` returned, unchanged, with its channel;
//! * keep channels apart (no cross-talk), and deliver a channel's payloads to every subscription
//!   of it (broadcast, like NOTIFY);
//! * carry a 100 KB message sent with [`dispatcher_core::broker::send`] (as chunks under
//!   [`Broker::max_payload`] when it has a limit);
//! * keep the order of the payloads one publisher sends on one channel, also while another
//!   publisher sends on the same channel;
//! * deliver all of a `publish_batch`, in order;
//! * answer `self_check` in time.
//!
//! Delivery of payloads published *before* a subscription was made is not checked either way.
//!
//! Run it as one test with [`run_broker_conformance`], or as one test per check with
//! [`broker_conformance!`](crate::broker_conformance):
//!
//! ```
//! use std::sync::Arc;
//! use dispatcher_core::Broker;
//! use dispatcher_testkit::conformance::run_broker_conformance;
//! use dispatcher_testkit::MemoryBroker;
//!
//! # #[tokio::main]
//! # async fn main() {
//! let bus = MemoryBroker::new();
//! run_broker_conformance(move || {
//!     let broker = bus.clone();
//!     async move { Arc::new(broker) as Arc<dyn Broker> }
//! })
//! .await;
//! # }
//! ```

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher_core::chunk::{Assembler, AssemblerLimits};
use dispatcher_core::message::{decode, Decoded};
use dispatcher_core::{Broker, Incoming, Subscription, TaskMessage};
use futures_util::StreamExt;

use crate::error::TestkitError;

/// Longest wait for any one message, by default.
pub const MESSAGE_WAIT: Duration = Duration::from_secs(5);

/// Longest any one check may take in all.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// The bound given to [`Broker::self_check`].
pub const SELF_CHECK_BOUND: Duration = Duration::from_secs(5);

/// Messages of the ordering check (per publisher: one sends all of them, then two send half each
/// at the same time).
pub const ORDERING_MESSAGES: usize = 1000;

/// Size of the argument of the large-payload check.
pub const LARGE_PAYLOAD_BYTES: usize = 100 * 1024;

/// One conformance check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Check {
    /// A payload published after `subscribe` returned arrives unchanged (quotes, backslashes,
    /// newlines, non-ASCII) with its channel.
    RoundTrip,
    /// A subscription gets the payloads of its channels and no others.
    Channels,
    /// Two subscriptions of one channel both get every payload, in order.
    Broadcast,
    /// A 100 KB message sent with [`dispatcher_core::broker::send`] arrives whole (as chunks
    /// under [`Broker::max_payload`], reassembled with [`Assembler`]).
    LargePayload,
    /// [`ORDERING_MESSAGES`] payloads from one publisher arrive in order; so do those of two
    /// publishers sending on one channel at the same time.
    Ordering,
    /// `publish_batch` delivers every payload, in order per channel; an empty batch is fine.
    Batch,
    /// `self_check` succeeds within [`SELF_CHECK_BOUND`].
    SelfCheck,
}

impl Check {
    /// Every check, in the order [`run_broker_conformance`] runs them.
    pub const ALL: [Check; 7] = [
        Check::RoundTrip,
        Check::Channels,
        Check::Broadcast,
        Check::LargePayload,
        Check::Ordering,
        Check::Batch,
        Check::SelfCheck,
    ];

    /// The check's name (`round_trip`, `channels`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Check::RoundTrip => "round_trip",
            Check::Channels => "channels",
            Check::Broadcast => "broadcast",
            Check::LargePayload => "large_payload",
            Check::Ordering => "ordering",
            Check::Batch => "batch",
            Check::SelfCheck => "self_check",
        }
    }

    /// Runs the check with the default [`MESSAGE_WAIT`].
    pub async fn run<F, Fut>(self, make: &F) -> Result<(), TestkitError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Arc<dyn Broker>>,
    {
        self.run_within(make, MESSAGE_WAIT).await
    }

    /// Runs the check, waiting at most `wait` for any one message or broker call.
    pub async fn run_within<F, Fut>(self, make: &F, wait: Duration) -> Result<(), TestkitError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Arc<dyn Broker>>,
    {
        let limit = CHECK_TIMEOUT.max(wait.saturating_mul(4));
        let started = Instant::now();
        let body = async {
            match self {
                Check::RoundTrip => round_trip(make, wait).await,
                Check::Channels => channels(make, wait).await,
                Check::Broadcast => broadcast(make, wait).await,
                Check::LargePayload => large_payload(make, wait).await,
                Check::Ordering => ordering(make, wait).await,
                Check::Batch => batch(make, wait).await,
                Check::SelfCheck => self_check(make).await,
            }
        };
        let result = match tokio::time::timeout(limit, body).await {
            Ok(r) => r,
            Err(_) => Err(format!("did not finish within {limit:?}")),
        };
        match result {
            Ok(()) => {
                tracing::debug!(check = self.name(), elapsed = ?started.elapsed(), "conformance check passed");
                Ok(())
            }
            Err(problem) => Err(TestkitError::Conformance {
                check: self.name(),
                problem,
            }),
        }
    }
}

/// Runs every [`Check`] and panics, listing each failed check and why, when any failed.
///
/// `make` returns a fresh broker instance connected to the same bus or database each time.
pub async fn run_broker_conformance<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let mut failures = Vec::new();
    for check in Check::ALL {
        if let Err(e) = check.run(&make).await {
            failures.push(e.to_string());
        }
    }
    if !failures.is_empty() {
        panic!(
            "broker conformance: {} of {} checks failed:\n  - {}",
            failures.len(),
            Check::ALL.len(),
            failures.join("\n  - ")
        );
    }
}

/// Runs one check on a fresh multi-threaded tokio runtime and panics when it fails; what
/// [`broker_conformance!`](crate::broker_conformance) generates tests with.
///
/// `setup` runs on that runtime first and returns the `make` function.
pub fn run_check_blocking<S, F, Fut>(check: Check, setup: S)
where
    S: Future<Output = F>,
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("could not build a tokio runtime for the conformance check: {e}"),
    };
    let result = runtime.block_on(async {
        let make = setup.await;
        check.run(&make).await
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Generates one `#[test]` per conformance [`Check`](crate::conformance::Check) in a module named
/// `$module`.
///
/// The second argument is an expression, evaluated afresh in each test (on its own tokio
/// runtime, so it may `.await`), that yields the `make` function: `Fn() -> impl Future<Output =
/// Arc<dyn Broker>>`, each call returning a new instance on one shared bus. Names from the
/// enclosing module are in scope (`use super::*`).
///
/// ```
/// use std::sync::Arc;
/// use dispatcher_core::Broker;
/// use dispatcher_testkit::{broker_conformance, MemoryBroker};
///
/// broker_conformance!(memory_broker_conformance, {
///     let bus = MemoryBroker::new();
///     move || {
///         let broker = bus.clone();
///         async move { Arc::new(broker) as Arc<dyn Broker> }
///     }
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! broker_conformance {
    ($module:ident, $make:expr $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $crate::broker_conformance!(@test $make; round_trip => RoundTrip);
            $crate::broker_conformance!(@test $make; channels => Channels);
            $crate::broker_conformance!(@test $make; broadcast => Broadcast);
            $crate::broker_conformance!(@test $make; large_payload => LargePayload);
            $crate::broker_conformance!(@test $make; ordering => Ordering);
            $crate::broker_conformance!(@test $make; batch => Batch);
            $crate::broker_conformance!(@test $make; self_check => SelfCheck);
        }
    };
    (@test $make:expr; $name:ident => $check:ident) => {
        #[test]
        fn $name() {
            $crate::conformance::run_check_blocking(
                $crate::conformance::Check::$check,
                async { $make },
            );
        }
    };
}

// ----- helpers -----

/// A fresh channel name: `conf_<tag>_<uuid>`, at most 63 bytes.
fn channel_name(tag: &str) -> String {
    let mut name = format!("conf_{tag}_{}", uuid::Uuid::new_v4().simple());
    name.truncate(dispatcher_core::broker::MAX_CHANNEL_LEN);
    name
}

fn preview(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        return format!("{s:?}");
    }
    let cut: String = s.chars().take(MAX).collect();
    format!("{cut:?}… ({} bytes)", s.len())
}

/// Awaits a broker call, within `wait`.
async fn bounded<T>(
    wait: Duration,
    what: impl FnOnce() -> String,
    call: impl Future<Output = dispatcher_core::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(wait, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{} failed: {e}", what())),
        Err(_) => Err(format!("{} did not return within {wait:?}", what())),
    }
}

async fn subscribe(
    broker: &dyn Broker,
    channels: &[String],
    wait: Duration,
) -> Result<Subscription, String> {
    bounded(
        wait,
        || format!("subscribe to {channels:?}"),
        broker.subscribe(channels),
    )
    .await
}

async fn publish(
    broker: &dyn Broker,
    channel: &str,
    payload: &str,
    wait: Duration,
) -> Result<(), String> {
    bounded(
        wait,
        || format!("publish on {channel}"),
        broker.publish(channel, payload),
    )
    .await
}

/// The next message, within `wait`; `what` names it for the error.
async fn next(
    sub: &mut Subscription,
    wait: Duration,
    what: impl FnOnce() -> String,
) -> Result<Incoming, String> {
    match tokio::time::timeout(wait, sub.next()).await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(format!(
            "the subscription ended while waiting for {}",
            what()
        )),
        Err(_) => Err(format!(
            "timed out after {wait:?} waiting for {} (lost or never sent)",
            what()
        )),
    }
}

/// Fails when anything arrives within a short quiet period.
async fn expect_quiet(sub: &mut Subscription, label: &str) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
        Ok(Some(m)) => Err(format!(
            "{label} received an unexpected extra payload {} on channel {} (cross-talk or duplicate)",
            preview(&m.payload),
            m.channel
        )),
        _ => Ok(()),
    }
}

// ----- checks -----

async fn round_trip<F, Fut>(make: &F, wait: Duration) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let ch = channel_name("rt");
    let subscriber = make().await;
    let publisher = make().await;
    let mut sub = subscribe(&*subscriber, std::slice::from_ref(&ch), wait).await?;
    let payloads = [
        format!("hello {}", uuid::Uuid::new_v4()),
        r#"{"task":"conformance.echo","args":["quote \" backslash \\ tab \t"],"kwargs":{"ü":"✓ 😀 日本"}}"#.to_owned(),
        "line one\nline two\r\n\ttabbed 'single' \"double\" \\ $1 %s".to_owned(),
    ];
    let send = async {
        for p in &payloads {
            publish(&*publisher, &ch, p, wait).await?;
        }
        Ok(())
    };
    let receive = async {
        for (i, p) in payloads.iter().enumerate() {
            let m = next(&mut sub, wait, || {
                format!("payload {} of {} on {ch}", i + 1, payloads.len())
            })
            .await?;
            if m.channel != ch {
                return Err(format!(
                    "payload {} arrived with channel {:?}, expected {ch:?}",
                    i + 1,
                    m.channel
                ));
            }
            if m.payload != *p {
                return Err(format!(
                    "payload {} changed in transit: sent {}, received {}",
                    i + 1,
                    preview(p),
                    preview(&m.payload)
                ));
            }
        }
        Ok(())
    };
    futures_util::future::try_join(send, receive).await?;
    Ok(())
}

/// Receives exactly the payloads of `sent` published on `mine`, in any order, and nothing else.
async fn receive_exactly(
    sub: &mut Subscription,
    label: &str,
    mine: &[&String],
    sent: &[(String, String)],
    wait: Duration,
) -> Result<(), String> {
    let mut expected: HashSet<&(String, String)> =
        sent.iter().filter(|(ch, _)| mine.contains(&ch)).collect();
    let total = expected.len();
    for n in 0..total {
        let m = next(sub, wait, || {
            format!("payload {} of {total} for {label}", n + 1)
        })
        .await?;
        let key = (m.channel.clone(), m.payload.clone());
        if expected.remove(&key) {
            continue;
        }
        let origin = m.payload.split('|').next().unwrap_or_default();
        let was_sent = sent.iter().any(|(_, p)| *p == m.payload);
        return Err(if !mine.iter().any(|ch| **ch == m.channel) {
            format!(
                "cross-talk: {label} received {} on channel {}, which it did not subscribe to",
                preview(&m.payload),
                m.channel
            )
        } else if was_sent && origin != m.channel {
            format!(
                "cross-talk: {label} received {} with channel {}, but it was published on {origin}",
                preview(&m.payload),
                m.channel
            )
        } else if was_sent {
            format!("{label} received {} twice", preview(&m.payload))
        } else {
            format!(
                "{label} received {} on channel {}, which is not a payload that was sent",
                preview(&m.payload),
                m.channel
            )
        });
    }
    Ok(())
}

async fn channels<F, Fut>(make: &F, wait: Duration) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|t| channel_name(&format!("ch{t}")));
    let first = make().await;
    let second = make().await;
    let publisher = make().await;
    let mut sub_ab = subscribe(&*first, &[a.clone(), b.clone()], wait).await?;
    let mut sub_c = subscribe(&*second, std::slice::from_ref(&c), wait).await?;
    // Interleaved, including a channel nobody listens on.
    let sent: Vec<(String, String)> = (0..5)
        .flat_map(|i| [&a, &c, &d, &b].map(|ch| (ch.clone(), format!("{ch}|{i}"))))
        .collect();
    let send = async {
        for (ch, p) in &sent {
            publish(&*publisher, ch, p, wait).await?;
        }
        Ok(())
    };
    let label_ab = format!("the subscription to [{a}, {b}]");
    let label_c = format!("the subscription to [{c}]");
    futures_util::future::try_join3(
        send,
        receive_exactly(&mut sub_ab, &label_ab, &[&a, &b], &sent, wait),
        receive_exactly(&mut sub_c, &label_c, &[&c], &sent, wait),
    )
    .await?;
    expect_quiet(&mut sub_ab, &label_ab).await?;
    expect_quiet(&mut sub_c, &label_c).await?;
    Ok(())
}

async fn broadcast<F, Fut>(make: &F, wait: Duration) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let ch = channel_name("bc");
    let one = make().await;
    let two = make().await;
    let publisher = make().await;
    let mut sub_one = subscribe(&*one, std::slice::from_ref(&ch), wait).await?;
    let mut sub_two = subscribe(&*two, std::slice::from_ref(&ch), wait).await?;
    const N: usize = 20;
    futures_util::future::try_join3(
        publish_sequence(&*publisher, &ch, "p", N, wait),
        receive_in_order(
            &mut sub_one,
            &format!("subscription 1 of 2 to {ch}"),
            &[("p", N)],
            wait,
        ),
        receive_in_order(
            &mut sub_two,
            &format!("subscription 2 of 2 to {ch}"),
            &[("p", N)],
            wait,
        ),
    )
    .await?;
    Ok(())
}

async fn large_payload<F, Fut>(make: &F, wait: Duration) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let ch = channel_name("large");
    let subscriber = make().await;
    let publisher = make().await;
    let mut sub = subscribe(&*subscriber, std::slice::from_ref(&ch), wait).await?;
    // Characters that need escaping and several bytes, so cuts must respect both.
    let unit = "abcdefgh \"quoted\" \\ é✓😀\n";
    let text: String = unit.repeat(LARGE_PAYLOAD_BYTES / unit.len() + 1);
    let mut message = TaskMessage::new("conformance.large");
    message.args = vec![serde_json::Value::String(text)];
    message.uuid = Some(uuid::Uuid::new_v4().to_string());
    let payload = message
        .to_json()
        .map_err(|e| format!("could not encode the test message: {e}"))?;
    let send = bounded(
        wait,
        || format!("broker::send of a {} byte payload on {ch}", payload.len()),
        dispatcher_core::broker::send(&*publisher, &ch, &payload),
    );
    let receive = receive_large(&mut sub, &ch, &payload, publisher.max_payload(), wait);
    futures_util::future::try_join(send, receive).await?;
    Ok(())
}

async fn receive_large(
    sub: &mut Subscription,
    ch: &str,
    payload: &str,
    max_payload: Option<usize>,
    wait: Duration,
) -> Result<(), String> {
    let Some(max) = max_payload else {
        let m = next(sub, wait, || {
            format!("the {} byte payload on {ch}", payload.len())
        })
        .await?;
        if m.payload != payload {
            return Err(format!(
                "the {} byte payload changed in transit: received {} bytes starting {}",
                payload.len(),
                m.payload.len(),
                preview(&m.payload)
            ));
        }
        return Ok(());
    };
    let mut assembler = Assembler::new(AssemblerLimits::default());
    let mut pieces = 0usize;
    loop {
        let m = next(sub, wait, || {
            format!(
                "chunk {} of the {} byte payload on {ch}",
                pieces + 1,
                payload.len()
            )
        })
        .await?;
        pieces += 1;
        if m.payload.len() >= max {
            return Err(format!(
                "chunk {pieces} is {} bytes, not under the broker's max_payload of {max}",
                m.payload.len()
            ));
        }
        let env = match decode(&m.payload) {
            Ok((Decoded::Chunk(env), _)) => env,
            Ok(_) => {
                return Err(format!(
                    "piece {pieces} is not a chunk envelope: {}",
                    preview(&m.payload)
                ))
            }
            Err(e) => return Err(format!("piece {pieces} does not decode: {e}")),
        };
        match assembler.push(env, std::time::Instant::now()) {
            Ok(Some(whole)) if whole == payload => return Ok(()),
            Ok(Some(whole)) => {
                return Err(format!(
                "the reassembled payload differs from the one sent ({} bytes received, {} sent)",
                whole.len(),
                payload.len()
            ))
            }
            Ok(None) => {}
            Err(e) => return Err(format!("chunk {pieces} could not be assembled: {e}")),
        }
    }
}

/// Receives `expected` payloads of the form `<publisher>:<seq>` and checks each publisher's
/// sequence numbers arrive as 0, 1, 2, ...
async fn receive_in_order(
    sub: &mut Subscription,
    label: &str,
    expected: &[(&str, usize)],
    wait: Duration,
) -> Result<(), String> {
    let total: usize = expected.iter().map(|(_, n)| n).sum();
    let mut next_seq: HashMap<&str, usize> = expected.iter().map(|(p, _)| (*p, 0)).collect();
    for n in 0..total {
        let m = next(sub, wait, || {
            let mut progress: Vec<String> = next_seq
                .iter()
                .map(|(p, s)| format!("{s} from publisher {p}"))
                .collect();
            progress.sort();
            format!(
                "payload {} of {total} for {label} (received so far: {})",
                n + 1,
                progress.join(", ")
            )
        })
        .await?;
        let parsed = m
            .payload
            .split_once(':')
            .and_then(|(p, s)| Some((p, s.parse::<usize>().ok()?)));
        let Some((who, seq, want)) =
            parsed.and_then(|(who, seq)| Some((who, seq, next_seq.get_mut(who)?)))
        else {
            return Err(format!(
                "{label} received an unexpected payload {}",
                preview(&m.payload)
            ));
        };
        if seq != *want {
            return Err(if seq > *want {
                format!(
                    "{label}: publisher {who}'s payload {seq} arrived where {} was expected: \
                     payloads {}..={} were lost or reordered",
                    *want,
                    *want,
                    seq - 1
                )
            } else {
                format!(
                    "{label}: publisher {who}'s payload {seq} arrived after {}: reordered or duplicated",
                    *want - 1
                )
            });
        }
        *want += 1;
    }
    Ok(())
}

async fn publish_sequence(
    broker: &dyn Broker,
    channel: &str,
    who: &str,
    count: usize,
    wait: Duration,
) -> Result<(), String> {
    for i in 0..count {
        publish(broker, channel, &format!("{who}:{i}"), wait).await?;
    }
    Ok(())
}

async fn ordering<F, Fut>(make: &F, wait: Duration) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    // One publisher.
    let ch = channel_name("order");
    let subscriber = make().await;
    let publisher = make().await;
    let mut sub = subscribe(&*subscriber, std::slice::from_ref(&ch), wait).await?;
    futures_util::future::try_join(
        publish_sequence(&*publisher, &ch, "p", ORDERING_MESSAGES, wait),
        receive_in_order(
            &mut sub,
            &format!("the subscription to {ch}"),
            &[("p", ORDERING_MESSAGES)],
            wait,
        ),
    )
    .await?;
    // Two publishers at once on one channel: each one's order holds.
    let ch = channel_name("order2");
    let mut sub = subscribe(&*subscriber, std::slice::from_ref(&ch), wait).await?;
    let other = make().await;
    let half = ORDERING_MESSAGES / 2;
    futures_util::future::try_join3(
        publish_sequence(&*publisher, &ch, "a", half, wait),
        publish_sequence(&*other, &ch, "b", half, wait),
        receive_in_order(
            &mut sub,
            &format!("the subscription to {ch}"),
            &[("a", half), ("b", half)],
            wait,
        ),
    )
    .await?;
    Ok(())
}

async fn batch<F, Fut>(make: &F, wait: Duration) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let a = channel_name("batcha");
    let b = channel_name("batchb");
    let subscriber = make().await;
    let publisher = make().await;
    let mut sub_a = subscribe(&*subscriber, std::slice::from_ref(&a), wait).await?;
    let mut sub_b = subscribe(&*subscriber, std::slice::from_ref(&b), wait).await?;
    bounded(
        wait,
        || "an empty publish_batch".to_owned(),
        publisher.publish_batch(&[]),
    )
    .await?;
    const N: usize = 200;
    let messages: Vec<(String, String)> = (0..N)
        .map(|i| {
            let (ch, who) = if i % 2 == 0 { (&a, "a") } else { (&b, "b") };
            (ch.clone(), format!("{who}:{}", i / 2))
        })
        .collect();
    let publish_all = bounded(
        wait,
        || format!("publish_batch of {N} payloads"),
        publisher.publish_batch(&messages),
    );
    futures_util::future::try_join3(
        publish_all,
        receive_in_order(
            &mut sub_a,
            &format!("the subscription to {a}"),
            &[("a", N / 2)],
            wait,
        ),
        receive_in_order(
            &mut sub_b,
            &format!("the subscription to {b}"),
            &[("b", N / 2)],
            wait,
        ),
    )
    .await?;
    Ok(())
}

async fn self_check<F, Fut>(make: &F) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let broker = make().await;
    let outer = SELF_CHECK_BOUND + Duration::from_secs(2);
    match tokio::time::timeout(outer, broker.self_check(SELF_CHECK_BOUND)).await {
        Err(_) => Err(format!(
            "self_check({SELF_CHECK_BOUND:?}) did not return within {outer:?}: it must respect its bound"
        )),
        Ok(Err(e)) => Err(format!("self_check({SELF_CHECK_BOUND:?}) failed: {e}")),
        Ok(Ok(rtt)) if rtt > SELF_CHECK_BOUND => Err(format!(
            "self_check({SELF_CHECK_BOUND:?}) reported a round trip of {rtt:?}, over its bound"
        )),
        Ok(Ok(_)) => Ok(()),
    }
}
