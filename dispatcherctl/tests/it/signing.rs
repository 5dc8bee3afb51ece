//! A service that requires signed messages: unsigned commands get no reply; commands signed with
//! `--signing-secret-file` do; a missing secret file is a usage error naming it.

use std::sync::Arc;

use dispatcher_broker_pg::PgBroker;
use dispatcher_runtime::{InProcessPool, Service};
use dispatcher_testkit::postgres::PgFixture;

use crate::support::{ctl_raw, registry, CHANNEL};

#[tokio::test]
async fn signed_commands_for_a_service_that_requires_them() {
    let fx = PgFixture::new().await.unwrap();
    let secret = "a secret shared by this cluster";
    let key = dispatcher_core::signing::SigningKey::new(secret.as_bytes()).unwrap();
    let broker = Arc::new(PgBroker::connect(&fx.url()).await.unwrap());
    let svc = Service::builder()
        .registry(registry())
        .broker(broker)
        .channels([CHANNEL])
        .node_id("signed")
        .require_signatures(key)
        .pool(InProcessPool::new(1))
        .start()
        .await
        .unwrap();
    let url = fx.url();
    // unsigned: rejected by the service, so no reply
    let r = ctl_raw(&[
        "--database-url",
        &url,
        "--channel",
        CHANNEL,
        "--timeout",
        "1",
        "--expected-replies",
        "1",
        "alive",
    ])
    .await;
    assert_eq!(r.code, 1, "{r:?}");
    // signed with the secret from a file
    let file = std::env::temp_dir().join(format!("ctl-secret-{}", std::process::id()));
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let file_s = file.display().to_string();
    let r = ctl_raw(&[
        "--database-url",
        &url,
        "--channel",
        CHANNEL,
        "--timeout",
        "15",
        "--expected-replies",
        "1",
        "--json",
        "--signing-secret-file",
        &file_s,
        "history",
    ])
    .await
    .ok();
    let calls = r.json()[0]["calls"].as_array().unwrap().clone();
    assert!(
        calls.iter().any(|c| c["outcome"] == "rejected"
            && c["error"].as_str().unwrap().contains("requires signed")),
        "{calls:?}"
    );
    // a missing secret file is a usage error naming it
    let r = ctl_raw(&[
        "--database-url",
        &url,
        "--signing-secret-file",
        "/nonexistent/key",
        "alive",
    ])
    .await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("/nonexistent/key"), "{r:?}");
    let _ = std::fs::remove_file(&file);
    svc.shutdown().await.unwrap();
}
