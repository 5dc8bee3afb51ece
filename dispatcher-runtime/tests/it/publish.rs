//! The publisher and its hooks.

use std::time::Duration;

use dispatcher_core::{HookDecision, Outcome, Outgoing, PublishHook, Published};
use dispatcher_testkit::expect::{assert_history, call};
use dispatcher_testkit::hooks::{RecordingHook, SkipAllHook};
use serde_json::json;

use crate::tasks::*;
use crate::{service, WAIT};

struct Rewrite;
impl PublishHook for Rewrite {
    fn before_publish(&self, out: &mut Outgoing) -> HookDecision {
        if out.message.task == "t.double" {
            out.message.args = vec![json!(50)];
            out.message.guid = Some("rewritten".into());
        }
        HookDecision::Continue
    }
}

struct SkipFailures;
impl PublishHook for SkipFailures {
    fn before_publish(&self, out: &mut Outgoing) -> HookDecision {
        if out.message.task == "t.fail" {
            HookDecision::Skip("failures are not published here".into())
        } else {
            HookDecision::Continue
        }
    }
}

#[tokio::test]
async fn hooks_modify_and_cancel() {
    let svc = service(2).await;
    let recorder = RecordingHook::new();
    let p = svc
        .publisher()
        .with_hook(Rewrite)
        .with_hook(SkipFailures)
        .with_hook(recorder.clone());
    let sent = p.publish(double::call(1)).await.unwrap();
    assert!(sent.was_sent());
    let skipped = p.publish(fail::call("x".into())).await.unwrap();
    assert!(
        matches!(&skipped, Published::Skipped { reason, .. } if reason == "failures are not published here"),
        "{skipped:?}"
    );
    let calls = svc.wait_for_calls(1, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_history(&svc.history()).count(1).has(
        call()
            .task("t.double")
            .args(json!([50]))
            .outcome(Outcome::Ok),
    );
    assert_eq!(calls[0].guid.as_deref(), Some("rewritten"));
    assert_eq!(calls[0].uuid, sent.uuid());
    // the recorder ran after the rewrite and never saw the skipped message
    assert_eq!(recorder.tasks(), vec!["t.double".to_string()]);
    assert_eq!(recorder.recorded()[0].message.args, vec![json!(50)]);
    svc.shutdown().await;
}

#[tokio::test]
async fn skip_all_hook_publishes_nothing() {
    let svc = service(1).await;
    let p = svc.publisher().with_hook(SkipAllHook::new());
    let r = p.publish(double::call(1)).await.unwrap();
    assert!(!r.was_sent());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(svc.memory_broker().unwrap().published_count(), 0);
    assert!(svc.history().is_empty());
    svc.shutdown().await;
}

#[tokio::test]
async fn chosen_uuid_and_channel_routing() {
    let svc = service(1).await;
    let p = svc.publisher();
    let r = p
        .publish(double::call(3).uuid("my-own-uuid"))
        .await
        .unwrap();
    assert_eq!(r.uuid(), "my-own-uuid");
    let calls = svc.wait_for_calls(1, WAIT).await.unwrap();
    assert_eq!(calls[0].uuid, "my-own-uuid");
    let bad = p
        .publish(double::call(3).channel("x".repeat(64)))
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("longer than 63 bytes"), "{bad}");
    svc.shutdown().await;
}

#[tokio::test]
async fn batch_publish() {
    let svc = service(2).await;
    let p = svc.publisher();
    let results = p.publish_batch((0..50).map(double::call)).await.unwrap();
    assert_eq!(results.len(), 50);
    let calls = svc.wait_for_calls(50, WAIT).await.unwrap();
    assert_history(&calls).has_exactly(50, call().task("t.double").outcome(Outcome::Ok));
    svc.shutdown().await;
}
