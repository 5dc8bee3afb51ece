//! The history's byte bound: large rejected payloads pass through a real service, the history
//! keeps their fields cut with the marker, and its byte total stays under the bound.

use std::time::Duration;

use dispatcher_core::{CallFilter, Outcome};
use dispatcher_runtime::history::TRUNCATED_MARKER;
use dispatcher_testkit::TestService;
use serde_json::json;

use crate::{registry, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_rejected_payloads_keep_the_history_under_its_byte_bound() {
    const MAX_BYTES: usize = 1024 * 1024;
    const FIELD: usize = 16 * 1024;
    const CALLS: usize = 40;
    let svc = TestService::builder()
        .registry(registry())
        .configure(|b| {
            b.history_max_bytes(MAX_BYTES)
                .history_field_max_bytes(FIELD)
                .shutdown_grace(Duration::from_secs(2))
        })
        .start()
        .await
        .unwrap();
    // `t.double` takes an integer: a half-megabyte string is rejected (bad arguments), and the
    // Call keeps the argument as received.
    let big = "x".repeat(512 * 1024);
    for i in 0..CALLS {
        let payload = json!({
            "task": "t.double",
            "uuid": format!("big-{i}"),
            "args": [big],
            "kwargs": {"note": big},
        })
        .to_string();
        svc.publish_raw(&payload).await;
    }
    let calls = svc
        .wait_for_calls(1, WAIT)
        .await
        .expect("a rejected Call is recorded");
    assert!(!calls.is_empty());
    // Wait until every Call has finished (some are no longer in the history).
    svc.handle()
        .wait_for_finished(CALLS as u64, WAIT)
        .await
        .unwrap();
    let bytes = svc.handle().history_bytes();
    assert!(
        bytes <= MAX_BYTES,
        "history holds {bytes} bytes, bound {MAX_BYTES}"
    );
    let history = svc.handle().history(&CallFilter::default());
    // Each Call counts about 2 × 16 KiB: not all 40 fit in 1 MiB, so the oldest went.
    assert!(history.len() < CALLS, "{} Calls kept", history.len());
    assert!(history.len() >= 10, "only {} Calls kept", history.len());
    assert_eq!(
        history.last().map(|c| c.uuid.as_str()),
        Some(format!("big-{}", CALLS - 1).as_str()),
        "the newest Call is kept"
    );
    for call in &history {
        assert_eq!(call.outcome, Some(Outcome::Rejected), "{}", call.uuid);
        for field in [&call.args, &call.kwargs] {
            let text = field.as_str().expect("a cut field is a string");
            assert!(
                text.contains(TRUNCATED_MARKER),
                "{}",
                &text[text.len() - 80..]
            );
            assert!(text.len() < FIELD + 100, "{} bytes kept", text.len());
        }
    }
    // A small Call afterwards is kept whole.
    svc.publish_raw(r#"{"task": "t.double", "uuid": "small", "args": ["x"]}"#)
        .await;
    svc.handle()
        .wait_for_finished(CALLS as u64 + 1, WAIT)
        .await
        .unwrap();
    let small = svc.handle().history(&CallFilter {
        uuid: Some("small".into()),
        ..Default::default()
    });
    assert_eq!(small.len(), 1);
    assert_eq!(small[0].args, json!(["x"]));
    assert!(svc.handle().history_bytes() <= MAX_BYTES);
    svc.shutdown().await;
}
