//! `subscribe_and_publish`: the LISTEN of a reply channel and the NOTIFYs of a request in one
//! transaction on the listener's connection. The reply is never missed, reply channels ride the
//! control listener while it runs, and a request whose connection fails is an error, never sent
//! a second time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dispatcher_broker_pg::{PgBroker, PgBrokerConfig};
use dispatcher_core::{Broker, BrokerError, Subscription};
use dispatcher_testkit::postgres::PgFixture;

use dispatcher_testkit::postgres::Frozen;
use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

/// What a responder saw on the command channel: payload and the sending backend's pid.
type Seen = Arc<Mutex<Vec<(String, i32)>>>;

/// Another session that LISTENs on `channel`, records every notification there, and answers a
/// payload `<reply channel>|<token>` at once with `<token>` on the reply channel (from a second
/// session of its own), as a service answers a control command.
async fn responder(fx: &PgFixture, channel: &str) -> Seen {
    let (listen, mut conn) = fx.config().connect(NoTls).await.unwrap();
    let answer = fx.client().await.unwrap();
    let seen: Seen = Arc::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, i32)>();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send((n.payload().to_owned(), n.process_id()));
            }
        }
    });
    listen
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .unwrap();
    let record = seen.clone();
    tokio::spawn(async move {
        // The LISTEN connection stays open as long as its handle lives.
        let _listen = listen;
        while let Some((payload, pid)) = rx.recv().await {
            record.lock().unwrap().push((payload.clone(), pid));
            if let Some((reply_to, token)) = payload.split_once('|') {
                answer
                    .execute("SELECT pg_notify($1, $2)", &[&reply_to, &token])
                    .await
                    .unwrap();
            }
        }
    });
    seen
}

/// How often `payload` arrived, and from which backends.
fn copies(seen: &Seen, payload: &str) -> Vec<i32> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == payload)
        .map(|(_, pid)| *pid)
        .collect()
}

async fn next_reply(sub: &mut Subscription, what: &str) -> String {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap_or_else(|_| panic!("no reply to {what}"))
        .unwrap_or_else(|| panic!("subscription ended before the reply to {what}"))
        .payload
}

async fn broker_with(fx: &PgFixture, f: impl FnOnce(&mut PgBrokerConfig)) -> PgBroker {
    let mut config = PgBrokerConfig::new(fx.config().clone());
    f(&mut config);
    PgBroker::with_config(config).await.unwrap()
}

#[tokio::test]
async fn the_reply_channel_is_listened_in_the_same_transaction_and_no_reply_is_missed() {
    let fx = PgFixture::new().await.unwrap();
    let b = broker_with(&fx, |_| {}).await;
    let seen = responder(&fx, "req_cmd").await;
    // Payloads that need quoting (quotes, backslashes, a statement separator, dollar quotes,
    // non-ASCII) arrive exactly as sent.
    let tricky = [
        "plain",
        "it's",
        r"back\slash\\ and \' quote",
        "'); SELECT pg_sleep(10); --",
        "$$ $tag$ ; NOTIFY x",
        "ünïcödé ✓ \u{1F600}",
        r#"{"control":"alive","reply_to":"x"}"#,
    ];
    for i in 0..200 {
        let reply_to = format!("reply_to_req_{i}");
        let token = format!("{}#{i}", tricky[i % tricky.len()]);
        let payload = format!("{reply_to}|{token}");
        let mut sub = b
            .subscribe_and_publish(
                std::slice::from_ref(&reply_to),
                &[("req_cmd".to_string(), payload.clone())],
            )
            .await
            .unwrap();
        // The responder answers as soon as it sees the command; the reply is there.
        assert_eq!(next_reply(&mut sub, &token).await, token);
        // Sent once, from the listener's own backend: the LISTEN and the NOTIFY were one query.
        assert_eq!(copies(&seen, &payload), vec![b.listener_pid()], "{payload}");
    }
}

#[tokio::test]
async fn the_copies_are_sent_in_order_and_a_bad_message_sends_nothing() {
    let fx = PgFixture::new().await.unwrap();
    let b = broker_with(&fx, |_| {}).await;
    let seen = responder(&fx, "req_order").await;
    let batch: Vec<(String, String)> = (0..20)
        .map(|i| ("req_order".to_string(), format!("m{i}")))
        .collect();
    let _sub = b
        .subscribe_and_publish(&["reply_to_order".to_string()], &batch)
        .await
        .unwrap();
    let start = Instant::now();
    while seen.lock().unwrap().len() < 20 {
        assert!(start.elapsed() < Duration::from_secs(5), "not all arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    let want: Vec<String> = batch.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(got, want);

    // An invalid message anywhere in the batch: refused before anything is sent.
    let bad = vec![
        ("req_order".to_string(), "never".to_string()),
        ("req_order".to_string(), "x".repeat(8000)),
    ];
    let e = b
        .subscribe_and_publish(&["reply_to_bad".to_string()], &bad)
        .await
        .map(drop)
        .unwrap_err();
    assert!(matches!(e, BrokerError::TooLarge { .. }), "{e:?}");
    let nul = vec![("req_order".to_string(), "a\0b".to_string())];
    assert!(b
        .subscribe_and_publish(&["reply_to_bad".to_string()], &nul)
        .await
        .is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(copies(&seen, "never").is_empty());
}

#[tokio::test]
async fn reply_channels_ride_the_control_listener_while_it_runs() {
    let fx = PgFixture::new().await.unwrap();
    let b = broker_with(&fx, |_| {}).await;
    let seen = responder(&fx, "req_ctl").await;
    let _control = b
        .subscribe_control(&["req_ctl_control".to_string()])
        .await
        .unwrap()
        .unwrap();
    let control_pid = b.control_listener_pid().unwrap();
    assert!(control_pid > 0 && control_pid != b.listener_pid());
    let mut sub = b
        .subscribe_and_publish(
            &["reply_to_ctl".to_string()],
            &[("req_ctl".to_string(), "reply_to_ctl|pong".to_string())],
        )
        .await
        .unwrap();
    assert_eq!(next_reply(&mut sub, "the request").await, "pong");
    assert_eq!(copies(&seen, "reply_to_ctl|pong"), vec![control_pid]);

    // Other channels stay on the main listener.
    let mut sub = b
        .subscribe_and_publish(
            &["other_reply".to_string()],
            &[("req_ctl".to_string(), "other_reply|pong2".to_string())],
        )
        .await
        .unwrap();
    assert_eq!(next_reply(&mut sub, "the second request").await, "pong2");
    assert_eq!(copies(&seen, "other_reply|pong2"), vec![b.listener_pid()]);
}

#[tokio::test]
async fn a_request_on_a_frozen_listener_fails_and_is_never_sent_again() {
    let fx = PgFixture::new().await.unwrap();
    let b = broker_with(&fx, |c| {
        c.call_timeout = Duration::from_secs(1);
        // No self-check during the test: the request alone must find the frozen connection.
        c.self_check_interval = Duration::from_secs(600);
    })
    .await;
    let seen = responder(&fx, "req_frozen").await;
    let mut sub = b
        .subscribe_and_publish(
            &["reply_to_f1".to_string()],
            &[("req_frozen".to_string(), "reply_to_f1|one".to_string())],
        )
        .await
        .unwrap();
    assert_eq!(next_reply(&mut sub, "the first request").await, "one");
    let old = b.listener_pid();

    // The request is sent to a backend that does not answer: the call fails within
    // call_timeout, the connection is recycled, and the request is not sent on the new one.
    let frozen = Frozen::freeze(old).unwrap();
    let e = b
        .subscribe_and_publish(
            &["reply_to_f2".to_string()],
            &[("req_frozen".to_string(), "reply_to_f2|two".to_string())],
        )
        .await
        .map(drop)
        .unwrap_err();
    assert!(
        matches!(&e, BrokerError::Timeout(d, _) if *d == Duration::from_secs(1)),
        "{e:?}"
    );
    let start = Instant::now();
    while b.listener_pid() == old || b.listener_pid() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "listener not replaced"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.recycles(), 1);
    // The old backend, resumed, may still run what it had read (once); nothing else sends it.
    drop(frozen);
    let mut sub = b
        .subscribe_and_publish(
            &["reply_to_f3".to_string()],
            &[("req_frozen".to_string(), "reply_to_f3|three".to_string())],
        )
        .await
        .unwrap();
    assert_eq!(
        next_reply(&mut sub, "the request after the recycle").await,
        "three"
    );
    assert_eq!(copies(&seen, "reply_to_f3|three"), vec![b.listener_pid()]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let two = copies(&seen, "reply_to_f2|two");
    assert!(
        two.is_empty() || two == vec![old],
        "the failed request was sent again: copies from backends {two:?} (old {old})"
    );
}

#[tokio::test]
async fn requests_while_the_listener_backend_is_terminated_are_sent_at_most_once() {
    let fx = PgFixture::new().await.unwrap();
    let b = broker_with(&fx, |c| {
        c.self_check_interval = Duration::from_secs(600);
    })
    .await;
    let seen = responder(&fx, "req_term").await;
    let admin = fx.client().await.unwrap();
    let mut outcomes = Vec::new();
    for round in 0..3 {
        let answered_before = outcomes.iter().filter(|(_, ok)| *ok).count();
        let pid = b.listener_pid();
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        // Requests right after: some find the connection dead (an error), some wait for the
        // next one; each is sent at most once, and each that succeeded is answered.
        for i in 0..10 {
            let reply_to = format!("reply_to_t{round}_{i}");
            let payload = format!("{reply_to}|t{round}_{i}");
            let r = b
                .subscribe_and_publish(
                    std::slice::from_ref(&reply_to),
                    &[("req_term".to_string(), payload.clone())],
                )
                .await;
            match r {
                Ok(mut sub) => {
                    let token = payload.split_once('|').unwrap().1.to_owned();
                    assert_eq!(next_reply(&mut sub, &payload).await, token);
                    outcomes.push((payload, true));
                }
                Err(_) => outcomes.push((payload, false)),
            }
        }
        let answered = outcomes.iter().filter(|(_, ok)| *ok).count() - answered_before;
        assert!(
            answered >= 1,
            "round {round}: no request went through: {outcomes:?}"
        );
        let start = Instant::now();
        while b.listener_pid() == pid || b.listener_pid() == 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "not replaced");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (payload, ok) in &outcomes {
        let n = copies(&seen, payload).len();
        if *ok {
            assert_eq!(n, 1, "{payload} answered, so sent exactly once");
        } else {
            assert!(n <= 1, "{payload} failed and was sent {n} times");
        }
    }
}

/// A listener whose task waits for room in a full subscription (a paused service in the same
/// process as the client) reads nothing from its connection. A request then takes the other path
/// and never costs the listener its connection, which would lose what PostgreSQL delivers while
/// it reconnects.
#[tokio::test]
async fn a_request_never_recycles_a_listener_waiting_for_a_full_subscription() {
    let fx = PgFixture::new().await.unwrap();
    let b = Arc::new(
        broker_with(&fx, |c| {
            c.call_timeout = Duration::from_secs(1);
            c.subscriber_capacity = 1;
            c.self_check_interval = Duration::from_secs(600);
        })
        .await,
    );
    let mut full = b.subscribe(&["req_full".to_string()]).await.unwrap();
    let n = 50;
    for i in 0..n {
        b.publish("req_full", &format!("m{i}")).await.unwrap();
    }
    // The listener has read what fits and waits for room.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let request = {
        let b = b.clone();
        tokio::spawn(async move {
            b.subscribe_and_publish(
                &["reply_to_w1".to_string()],
                &[("req_elsewhere".to_string(), "x".to_string())],
            )
            .await
            .map(drop)
        })
    };
    // Longer than call_timeout: a request sent on the connection would have timed out by now.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for i in 0..n {
        assert_eq!(next_reply(&mut full, "a message").await, format!("m{i}"));
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), request).await;
    assert_eq!(b.recycles(), 0, "the listener was replaced");
    b.publish("req_full", "after").await.unwrap();
    assert_eq!(next_reply(&mut full, "a message after").await, "after");
}
