//! The broker checks, one function each; [`super::Check::run_within`] picks one.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dispatcher_core::chunk::{Assembler, AssemblerLimits};
use dispatcher_core::message::{decode, Decoded};
use dispatcher_core::{Broker, Subscription, TaskMessage};
use futures_util::StreamExt;

use super::{
    channel_name, expect_quiet, next, publish, subscribe, LARGE_PAYLOAD_BYTES, ORDERING_MESSAGES,
    REQUESTS, SELF_CHECK_BOUND,
};
use crate::conformance::{bounded, preview};

pub(super) async fn round_trip<F, Fut>(make: &F, wait: Duration) -> Result<(), String>
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

pub(super) async fn channels<F, Fut>(make: &F, wait: Duration) -> Result<(), String>
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

pub(super) async fn broadcast<F, Fut>(make: &F, wait: Duration) -> Result<(), String>
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

pub(super) async fn large_payload<F, Fut>(make: &F, wait: Duration) -> Result<(), String>
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

pub(super) async fn ordering<F, Fut>(make: &F, wait: Duration) -> Result<(), String>
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

pub(super) async fn batch<F, Fut>(make: &F, wait: Duration) -> Result<(), String>
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

pub(super) async fn self_check<F, Fut>(make: &F) -> Result<(), String>
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

pub(super) async fn request<F, Fut>(make: &F, wait: Duration) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let requests = channel_name("req");
    let requester = make().await;
    let responder = make().await;
    let mut incoming = subscribe(&*responder, std::slice::from_ref(&requests), wait).await?;
    // The responder records every request and answers it the moment it reads it, as a service
    // answers a control command.
    let seen: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let answering = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(m) = incoming.next().await {
                if let Some((reply_to, token)) = m.payload.split_once('|') {
                    // A failed answer shows as a missing one on the requester's side.
                    let _ = responder
                        .publish(reply_to, &format!("answer {token}"))
                        .await;
                }
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((m.channel, m.payload));
            }
        })
    };
    let outcome =
        async {
            let mut sent = Vec::new();
            for i in 0..REQUESTS {
                let reply_to = channel_name("reply");
                let request = format!("{reply_to}|{i} 'quoted' \\ \"double\" ✓");
                let mut replies = bounded(
                    wait,
                    || format!("subscribe_and_publish of request {i}"),
                    requester.subscribe_and_publish(
                        std::slice::from_ref(&reply_to),
                        &[(requests.clone(), request.clone())],
                    ),
                )
                .await?;
                let m = next(&mut replies, wait, || {
                    format!(
                        "the answer to request {i} on {reply_to} (the reply channel must be \
                     subscribed before the request can be read)"
                    )
                })
                .await?;
                let want = format!("answer {}", request.split_once('|').map_or("", |(_, t)| t));
                if m.channel != reply_to || m.payload != want {
                    return Err(format!(
                        "expected {} on {reply_to}, got {} on {}",
                        preview(&want),
                        preview(&m.payload),
                        m.channel
                    ));
                }
                sent.push((requests.clone(), request));
            }
            // Anything sent twice has arrived by now.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if seen != sent {
                return Err(format!(
                "{} requests were sent, {} payloads arrived on {requests}: each must arrive once, \
                 unchanged and in order (first arrivals: {:?})",
                sent.len(),
                seen.len(),
                seen.iter().take(3).map(|(_, p)| preview(p)).collect::<Vec<_>>()
            ));
            }
            Ok(())
        }
        .await;
    answering.abort();
    outcome
}
