//! SIGTERM: the running Call is allowed to finish, then the service exits with status 0.

use std::time::{Duration, Instant};

use dispatcher_core::TaskMessage;
use serde_json::{json, Value};

use crate::support::{start, warn_lines, Svc, WAIT};

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

/// Waits until the Call `uuid` runs on a worker.
async fn wait_running(svc: &Svc, uuid: &str) {
    let t = Instant::now();
    loop {
        let r = svc.control("running", json!({"uuid": uuid})).await;
        if r.first()
            .and_then(Value::as_object)
            .is_some_and(|m| m.keys().any(|k| k.starts_with("worker-")))
        {
            return;
        }
        assert!(t.elapsed() < WAIT, "never ran; log:\n{}", svc.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With 30 s of grace and a Call that would run a minute, a second SIGTERM stops the service at
/// once: the Call is recorded canceled, logged (one WARN line) with its task and arguments so it
/// can be sent again, and the process exits within a few seconds.
pub async fn second_sigterm_stops_at_once() {
    let mut svc = start("shutdown_grace = 30.0\n").await;
    let marker = svc.dir.join("never.marker");
    let mut msg = TaskMessage::new("srv.sleep_then_touch");
    msg.args = vec![json!(60.0), json!(marker.display().to_string())];
    let sent = svc
        .publisher()
        .publish_message(svc.channel.clone(), msg)
        .await
        .unwrap();
    let uuid = sent.uuid().to_owned();
    wait_running(&svc, &uuid).await;
    svc.sigterm();
    let t = Instant::now();
    while !svc
        .log()
        .contains("a second SIGTERM or SIGINT stops at once")
    {
        assert!(t.elapsed() < WAIT, "no stop message:\n{}", svc.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        svc.log().contains("running Calls have 30.0 s to finish"),
        "{}",
        svc.log()
    );
    let second = Instant::now();
    svc.sigterm();
    let status = svc.wait_exit().await;
    let took = second.elapsed();
    let log = svc.log();
    assert_eq!(status.code(), Some(0), "{status:?}\n{log}");
    assert!(
        took < Duration::from_secs(8),
        "took {took:?} after the second SIGTERM:\n{log}"
    );
    assert!(!marker.exists(), "the task ran to its end");
    assert!(log.contains("SIGTERM received again"), "{log}");
    let warns = warn_lines(&log, &uuid);
    assert_eq!(warns.len(), 1, "one WARN line for the Call:\n{log}");
    let line = warns[0];
    assert!(line.contains("call abandoned at shutdown"), "{line}");
    assert!(line.contains("outcome=canceled"), "{line}");
    assert!(line.contains("task=srv.sleep_then_touch"), "{line}");
    assert!(
        line.contains(&format!("args=[60.0,\"{}\"]", marker.display())),
        "{line}"
    );
    assert!(!log.contains('\u{1b}'), "colour escapes in a file:\n{log}");
    let all_warns = log.lines().filter(|l| l.contains(" WARN ")).count();
    assert_eq!(all_warns, 1, "one WARN line in all:\n{log}");
}

/// A failed Call (task error, unknown task, bad arguments) is one WARN line, with the reason.
pub async fn one_warn_line_per_failed_call() {
    let mut svc = start("").await;
    let p = svc.publisher();
    let mut err = TaskMessage::new("srv.sleep_then_touch");
    err.args = vec![json!(0.0), json!("/nonexistent-dir/x/marker")];
    let mut bad = TaskMessage::new("srv.add");
    bad.args = vec![json!("x")];
    let mut uuids = Vec::new();
    for m in [err, TaskMessage::new("srv.nope"), bad] {
        let sent = p.publish_message(svc.channel.clone(), m).await.unwrap();
        uuids.push(sent.uuid().to_owned());
    }
    svc.wait_history(3).await;
    svc.sigterm();
    assert_eq!(svc.wait_exit().await.code(), Some(0));
    let log = svc.log();
    for (uuid, want) in uuids.iter().zip([
        "outcome=error",
        "reason=\"unknown_task\"",
        "reason=\"bad_arguments\"",
    ]) {
        let warns = warn_lines(&log, uuid);
        assert_eq!(warns.len(), 1, "{uuid}:\n{log}");
        assert!(warns[0].contains(want), "{}", warns[0]);
    }
    let all_warns = log.lines().filter(|l| l.contains(" WARN ")).count();
    assert_eq!(all_warns, 3, "{log}");
}
