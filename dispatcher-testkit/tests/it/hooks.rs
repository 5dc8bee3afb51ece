//! `RecordingHook` and `SkipAllHook`.

use std::sync::Arc;

use dispatcher_core::{Broker, Published, Publisher};
use dispatcher_testkit::hooks::SKIP_REASON;
use dispatcher_testkit::{MemoryBroker, RecordingHook, SkipAllHook};
use futures_util::StreamExt;

use crate::harness::add;

#[tokio::test]
async fn recording_hook_records_and_lets_messages_through() {
    let bus = MemoryBroker::new();
    let mut sub = bus.subscribe(&["app".to_owned()]).await.unwrap();
    let rec = RecordingHook::new();
    let p = Publisher::new(Arc::new(bus.clone()), "app")
        .unwrap()
        .with_hook(rec.clone());
    assert!(rec.is_empty());
    p.publish(add::call(1, 2)).await.unwrap();
    p.publish_batch([add::call(3, 4), add::call(5, 6).channel("elsewhere")])
        .await
        .unwrap();
    assert_eq!(rec.len(), 3);
    assert_eq!(rec.tasks(), ["tk.add", "tk.add", "tk.add"]);
    let recorded = rec.recorded();
    assert_eq!(
        recorded[0].message.args,
        vec![serde_json::json!(1), serde_json::json!(2)]
    );
    assert_eq!(recorded[2].channel, "elsewhere");
    assert_eq!(bus.published_count(), 3, "all were sent");
    let first = sub.next().await.unwrap();
    assert!(first.payload.contains("tk.add"));
    rec.clear();
    assert!(rec.is_empty());
}

#[tokio::test]
async fn skip_all_hook_turns_publishing_off_and_records() {
    let bus = MemoryBroker::new();
    let skip = SkipAllHook::new();
    let rec = RecordingHook::new();
    // Hooks run in order: the recorder before the skip sees it; nothing reaches the broker.
    let p = Publisher::new(Arc::new(bus.clone()), "app")
        .unwrap()
        .with_hook(rec.clone())
        .with_hook(skip.clone());
    let out = p.publish(add::call(1, 2)).await.unwrap();
    match &out {
        Published::Skipped { reason, .. } => assert_eq!(reason, SKIP_REASON),
        other => panic!("expected Skipped, got {other:?}"),
    }
    assert!(!out.was_sent());
    let batch = p.publish_batch([add::call(3, 4)]).await.unwrap();
    assert!(batch.iter().all(|b| !b.was_sent()));
    assert_eq!(skip.len(), 2);
    assert_eq!(skip.tasks(), ["tk.add", "tk.add"]);
    assert_eq!(skip.skipped()[0].message.uuid.as_deref(), Some(out.uuid()));
    assert_eq!(rec.len(), 2);
    assert_eq!(bus.published_count(), 0, "nothing was published");
    assert_eq!(SKIP_REASON, "publishing is disabled (SkipAllHook)");
}
