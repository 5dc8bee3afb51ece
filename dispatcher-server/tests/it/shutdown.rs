//! SIGTERM: the running Call is allowed to finish, then the service exits with status 0.

use std::time::{Duration, Instant};

use dispatcher_core::TaskMessage;
use serde_json::{json, Value};

use crate::support::{start, WAIT};

pub async fn sigterm_lets_the_running_call_finish_and_exits_0() {
    let mut svc = start("").await;
    let marker = svc.dir.join("finished.marker");
    let mut msg = TaskMessage::new("srv.sleep_then_touch");
    msg.args = vec![json!(1.5), json!(marker.display().to_string())];
    let sent = svc
        .publisher()
        .publish_message(svc.channel.clone(), msg)
        .await
        .unwrap();
    let uuid = sent.uuid().to_owned();
    // wait until it runs on the worker
    let t = Instant::now();
    loop {
        let r = svc.control("running", json!({"uuid": uuid})).await;
        if r.first()
            .and_then(Value::as_object)
            .is_some_and(|m| m.keys().any(|k| k.starts_with("worker-")))
        {
            break;
        }
        assert!(t.elapsed() < WAIT, "never ran; log:\n{}", svc.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    svc.sigterm();
    let status = svc.wait_exit().await;
    let log = svc.log();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status:?}; log:\n{log}"
    );
    assert!(
        marker.exists(),
        "the running task was not allowed to finish; log:\n{log}"
    );
    assert!(log.contains("SIGTERM received"), "{log}");
    let finished_ok = log
        .lines()
        .any(|l| l.contains(&uuid) && l.contains("call finished") && l.contains("outcome=ok"));
    assert!(finished_ok, "no ok finish logged for {uuid}:\n{log}");
}
