//! The `set_log_level` control command: the new and the previous filter, a filter that does not
//! parse, a request without a level.

use serde_json::json;

use crate::support::start;

pub async fn set_log_level_changes_the_filter() {
    let mut svc = start("").await;
    let r = svc
        .control("set_log_level", json!({"level": "debug"}))
        .await;
    assert_eq!(r[0]["level"], json!("debug"), "{r:?}");
    assert_eq!(
        r[0]["previous_level"],
        json!("info,dispatcher_runtime=debug"),
        "{r:?}"
    );
    let r = svc
        .control("set_log_level", json!({"level": "info,[nope"}))
        .await;
    assert!(r[0]["error"].as_str().unwrap().contains("refused"), "{r:?}");
    let r = svc.control("set_log_level", json!({})).await;
    assert!(
        r[0]["error"]
            .as_str()
            .unwrap()
            .contains("needs control_data"),
        "{r:?}"
    );
    svc.sigterm();
    assert_eq!(svc.wait_exit().await.code(), Some(0));
}
