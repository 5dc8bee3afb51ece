//! A uuid's beginning, as the tables show it, picks a Call in `cancel`, `running` and `history`;
//! a beginning that more than one Call shares is refused by `cancel` with the candidates named.

use dispatcher_testkit::postgres::PgFixture;
use serde_json::json;

use crate::support::{ctl, nap, one, running_count, service, wait_until};

const TWIN_A: &str = "abcd1234-0000-4000-8000-00000000000a";
const TWIN_B: &str = "abcd1234-0000-4000-8000-00000000000b";
const OTHER: &str = "5eed0000-0000-4000-8000-000000000001";

#[tokio::test]
async fn uuid_prefixes_in_cancel_running_and_history() {
    let fx = PgFixture::new().await.unwrap();
    let svc = service(&fx, "node-a", None).await;
    svc.submit(nap::call(30.0).uuid(TWIN_A)).await.unwrap();
    svc.submit(nap::call(30.0).uuid(TWIN_B)).await.unwrap();
    svc.submit(nap::call(30.0).uuid(OTHER)).await.unwrap();
    wait_until("two running naps", async || running_count(&svc).await == 2).await;

    // The table shows the twins long enough to tell them apart, the other one by 8 characters.
    let run = ctl(&fx, &["running"]).await.ok();
    assert!(
        run.stdout.contains("abcd1234-0000-4000-8000-00000000000a"),
        "{run:?}"
    );
    assert!(run.stdout.contains("5eed0000 "), "{run:?}");
    assert!(!run.stdout.contains(OTHER), "{run:?}");

    // running lists every Call a prefix matches.
    let both = one(&fx, &["running", "--data", r#"{"uuid": "abcd1234"}"#]).await;
    assert_eq!(both.as_object().unwrap().len(), 3, "{both}");

    // cancel with the shared prefix: refused, nothing canceled, both candidates named.
    let run = ctl(&fx, &["cancel", "--data", r#"{"uuid": "abcd1234"}"#])
        .await
        .error_reply();
    for needle in [
        "ambiguous",
        "\"abcd1234\"",
        TWIN_A,
        TWIN_B,
        "nothing canceled",
    ] {
        assert!(run.stdout.contains(needle), "{needle:?} missing: {run:?}");
    }
    assert_eq!(running_count(&svc).await, 2);

    // The 8 characters the table shows cancel the other one (waiting in the queue).
    let run = ctl(&fx, &["cancel", "--data", r#"{"uuid": "5eed0000"}"#])
        .await
        .ok();
    assert!(
        run.stdout.starts_with("node node-a: canceled 1\n"),
        "{run:?}"
    );
    // A longer prefix picks one twin.
    let canceled = one(
        &fx,
        &[
            "cancel",
            "--data",
            r#"{"uuid": "abcd1234-0000-4000-8000-00000000000a"}"#,
        ],
    )
    .await;
    let entries: Vec<_> = canceled
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "node_id")
        .collect();
    assert_eq!(entries.len(), 1, "{canceled}");
    assert_eq!(entries[0].1["uuid"], json!(TWIN_A), "{canceled}");
    // Once the canceled twin has ended, the beginning both share picks the one left.
    wait_until("the canceled twin ended", async || {
        running_count(&svc).await == 1
    })
    .await;
    let canceled = one(
        &fx,
        &[
            "cancel",
            "--data",
            r#"{"uuid": "abcd1234-0000-4000-8000-00000000000"}"#,
        ],
    )
    .await;
    assert_eq!(
        canceled.as_object().unwrap().len(),
        2,
        "only TWIN_B is left: {canceled}"
    );

    // history takes the prefix too.
    svc.wait_for_finished(3, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    let history = one(&fx, &["history", "--data", r#"{"uuid": "5eed"}"#]).await;
    let calls = history["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{history}");
    assert_eq!(calls[0]["uuid"], json!(OTHER));
    assert_eq!(calls[0]["outcome"], "canceled");
    let history = one(&fx, &["history", "--data", r#"{"uuid": "abcd1234"}"#]).await;
    assert_eq!(history["calls"].as_array().unwrap().len(), 2, "{history}");
    let run = ctl(&fx, &["history", "--data", r#"{"uuid": "5eed0000"}"#])
        .await
        .ok();
    assert!(
        run.stdout.contains("5eed0000") && run.stdout.contains("canceled"),
        "{run:?}"
    );
    svc.shutdown().await.unwrap();
}
