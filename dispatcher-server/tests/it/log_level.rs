//! Logging: the `set_log_level` control command (the new and the previous filter, a filter that
//! does not parse, a request without a level), its scope (a level is for this project's crates;
//! a dependency's debug lines only when named), JSON lines, no colour when not on a terminal.

use std::time::{Duration, Instant};

use dispatcher_core::TaskMessage;
use serde_json::{json, Value};

use crate::support::{start, WAIT};

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
    let r = svc.control("set_log_level", json!({"level": "info"})).await;
    assert_eq!(
        r[0]["previous_level"],
        json!("info,dispatcher=debug"),
        "a level is scoped to the dispatcher crates: {r:?}"
    );
    for bad in ["info,[nope", "loud"] {
        let r = svc.control("set_log_level", json!({"level": bad})).await;
        assert!(r[0]["error"].as_str().unwrap().contains("refused"), "{r:?}");
    }
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

/// Lines of tokio-postgres (which logs each statement with its parameters at debug) in `log`.
fn postgres_lines(log: &str) -> usize {
    log.lines().filter(|l| l.contains("tokio_postgres")).count()
}

/// `set_log_level debug` turns on this project's debug lines but not tokio-postgres's statement
/// logging (which would write task arguments and results into the log); naming it does.
pub async fn debug_is_scoped_and_dependencies_only_by_name() {
    let mut svc = start("log_level = \"info\"\n").await;
    let r = svc
        .control("set_log_level", json!({"level": "debug"}))
        .await;
    assert!(r[0]["error"].is_null(), "{r:?}");
    // Replies are published through tokio-postgres (a prepared pg_notify with parameters); a
    // finished Call is a debug line of ours.
    for _ in 0..3 {
        svc.control("alive", json!({})).await;
    }
    let mut m = TaskMessage::new("srv.add");
    m.args = vec![json!(1), json!(2)];
    svc.publisher()
        .publish_message(svc.channel.clone(), m)
        .await
        .unwrap();
    svc.wait_history(1).await;
    let log = svc.log();
    assert!(
        log.lines()
            .any(|l| l.contains("DEBUG") && l.contains("call finished")),
        "no debug lines of ours:\n{log}"
    );
    assert_eq!(postgres_lines(&log), 0, "{log}");
    let r = svc
        .control("set_log_level", json!({"level": "tokio_postgres=debug"}))
        .await;
    assert!(r[0]["error"].is_null(), "{r:?}");
    let t = Instant::now();
    while postgres_lines(&svc.log()) == 0 {
        assert!(
            t.elapsed() < WAIT,
            "no tokio_postgres lines:\n{}",
            svc.log()
        );
        svc.control("alive", json!({})).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    svc.sigterm();
    assert_eq!(svc.wait_exit().await.code(), Some(0));
}

/// `log_format = "json"`: every line is a JSON object with a level and the message; a file gets
/// no colour escapes (text lines neither, see the shutdown tests).
pub async fn json_lines_parse() {
    let mut svc = start("log_format = \"json\"\n").await;
    svc.control("alive", json!({})).await;
    svc.sigterm();
    assert_eq!(svc.wait_exit().await.code(), Some(0));
    let log = svc.log();
    assert!(!log.contains('\u{1b}'), "colour escapes in a file:\n{log}");
    let mut lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{log}"));
        assert!(v["level"].is_string(), "{line}");
        assert!(v["fields"]["message"].is_string(), "{line}");
        lines += 1;
    }
    assert!(
        log.contains("dispatcher service running") && lines >= 3,
        "{log}"
    );
}
