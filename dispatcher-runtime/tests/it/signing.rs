//! Message signing: a service that requires signatures runs only what the key holder sent.

use std::time::Duration;

use dispatcher_core::signing::SigningKey;
use dispatcher_core::Outcome;
use dispatcher_testkit::expect::{assert_history, call};
use dispatcher_testkit::TestService;
use serde_json::json;

use crate::tasks::*;
use crate::{registry, WAIT};

fn key(secret: &str) -> SigningKey {
    SigningKey::new(secret.as_bytes()).unwrap()
}

#[tokio::test]
async fn only_signed_messages_run() {
    let k = key("the shared secret of this cluster");
    let svc = TestService::builder()
        .registry(registry())
        .configure({
            let k = k.clone();
            move |b| b.require_signatures(k)
        })
        .start()
        .await
        .unwrap();
    let signed = svc.publisher().with_signing(k.clone());
    signed.publish(double::call(21)).await.unwrap();
    // large: the signed envelope travels in chunks
    signed
        .publish(greet::call("x".repeat(30_000), None))
        .await
        .unwrap();
    // unsigned, forged, and a raw unsigned payload
    svc.publisher().publish(double::call(1)).await.unwrap();
    svc.publisher()
        .with_signing(key("somebody else's secret!!"))
        .publish(double::call(2))
        .await
        .unwrap();
    svc.publish_raw(r#"{"task": "t.double", "args": [3]}"#)
        .await;
    let calls = svc.wait_for_calls(5, WAIT).await.unwrap();
    assert_history(&calls)
        .has_exactly(
            1,
            call()
                .task("t.double")
                .args(json!([21]))
                .outcome(Outcome::Ok),
        )
        .has_exactly(1, call().task("t.greet").outcome(Outcome::Ok))
        .has_exactly(
            2,
            call()
                .outcome(Outcome::Rejected)
                .error_contains("requires signed messages"),
        )
        .has_exactly(
            1,
            call()
                .outcome(Outcome::Rejected)
                .error_contains("bad signature"),
        );

    // control: signed requests get signed replies; unsigned ones are rejected, no reply
    let broker = svc.broker().clone();
    let replies = dispatcher_core::control::request_signed(
        broker.as_ref(),
        svc.channel(),
        "metrics",
        Default::default(),
        Some(1),
        WAIT,
        Some(&k),
    )
    .await
    .unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["signature_failures"], json!(3), "{}", replies[0]);
    let unsigned = dispatcher_core::control::request(
        broker.as_ref(),
        svc.channel(),
        "alive",
        Default::default(),
        Some(1),
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    assert!(
        unsigned.is_empty(),
        "an unsigned control message got a reply"
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn a_client_with_a_key_drops_unsigned_replies() {
    // a service without signing answers in clear; a client that requires signatures ignores it
    let svc = crate::service(1).await;
    let broker = svc.broker().clone();
    let replies = dispatcher_core::control::request_signed(
        broker.as_ref(),
        svc.channel(),
        "alive",
        Default::default(),
        Some(1),
        Duration::from_millis(300),
        Some(&key("the shared secret of this cluster")),
    )
    .await
    .unwrap();
    assert!(replies.is_empty());
    svc.shutdown().await;
}
