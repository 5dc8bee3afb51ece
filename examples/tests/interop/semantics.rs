//! Semantics where dispatcherd and a first Rust version differed (found by these tests, since
//! fixed): each test says what dispatcherd does and checks that the Rust service does the same.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::python_publishes::RustSide;
use crate::support::*;

/// dispatcherd's `set_log_level` takes Python's level names (its own `dispatcherctl set_log_level
/// --level` offers DEBUG, INFO, WARNING, ERROR, CRITICAL) or an integer (`logging.WARNING` is 30).
///
/// The Rust service (`dispatcher-server/src/logging.rs`, `LogHandle::set_level`) hands the text
/// to `EnvFilter::try_new`, where `WARNING` and `CRITICAL` are not levels (tracing knows `warn`
/// and `error`) but *target names*: the reply says `{"level": "WARNING", ...}` as if it worked,
/// and from then on the service logs nothing but events of a target called `WARNING`, i.e.
/// nothing, not even its warnings. The integer form is refused (`set_log_level needs
/// control_data {"level": "<filter>"}`).
///
/// Expected: Python names map case-insensitively to tracing levels (NOTSET→trace, DEBUG→debug,
/// INFO→info, WARNING/WARN→warn, ERROR→error, CRITICAL/FATAL→error) and integers likewise
/// (10/20/30/40/50); anything else that is neither a level nor a directive with `=` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_log_level_takes_python_level_names_and_numbers() {
    bounded(async {
        let s = RustSide::start("semantics_log").await;
        let mut problems = Vec::new();

        // Does a failing Call's warning reach the log at this level?
        async fn warning_logged(s: &RustSide, level: Value) -> Result<bool, String> {
            let replies = s
                .py(&[
                    "control",
                    "set_log_level",
                    "--data",
                    &json!({"level": level}).to_string(),
                ])
                .await;
            let reply = &replies[0];
            if let Some(e) = reply.get("error") {
                return Err(format!("set_log_level {level} refused: {e}"));
            }
            let out = s.submit(&["demo.fail", "--args", r#"["a warning"]"#]).await;
            let uuid = out["message"]["uuid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let call = s.call(&uuid).await;
            assert_eq!(call["outcome"], "error", "{call:#}");
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if s.demo
                    .log_text()
                    .lines()
                    .any(|l| l.contains(&uuid) && l.contains("WARN"))
                {
                    return Ok(true);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(false)
        }

        // The check itself works: at "info" the warning is there.
        assert_eq!(warning_logged(&s, json!("info")).await, Ok(true));

        match warning_logged(&s, json!("WARNING")).await {
            Ok(true) => {}
            Ok(false) => problems.push(
                "after set_log_level {\"level\": \"WARNING\"} (dispatcherd's name for warn) the \
                 reply claimed success but the service's warnings were no longer logged"
                    .to_owned(),
            ),
            Err(e) => problems.push(e),
        }
        let _ = warning_logged(&s, json!("info")).await;
        match warning_logged(&s, json!(30)).await {
            Ok(true) => {}
            Ok(false) => problems.push(
                "after set_log_level {\"level\": 30} (logging.WARNING) warnings were not logged"
                    .to_owned(),
            ),
            Err(e) => problems.push(e),
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    })
    .await;
}

/// Both services have a `metrics` command, with different replies. dispatcherd's
/// (`dispatcherd/service/control_tasks.py`, `metrics`) describes its metrics HTTP server:
/// `{"enabled": false}` or `{"enabled": true, "status": {"host", "port", "ready", "http_server":
/// {...}}}`, also nested in its `status` reply. The Rust one (`Service::metrics` in
/// `dispatcher-core/src/service.rs`) gives its counters (`received`, `control`, `dispatched`,
/// `finished`, ...) and no `enabled`, so a dispatcherd client reading `reply["enabled"]` fails.
/// `metrics` exists on both sides with different counters (docs/WIRE.md).
///
/// Expected: the Rust reply carries `enabled` (whether the Prometheus endpoint runs) and, when
/// enabled, `status` with the endpoint's address, next to its counters (or the counters move to
/// a command name of our own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reply_has_dispatcherds_fields() {
    bounded(async {
        let s = RustSide::start("semantics_metrics").await;
        let replies = s.py(&["control", "metrics"]).await;
        let reply = &replies[0];
        assert_eq!(reply["node_id"], s.demo.node_id.as_str(), "{reply}");
        assert!(
            reply["enabled"].is_boolean(),
            "dispatcherd's `metrics` reply has `enabled` (boolean); the Rust reply: {reply}"
        );
        let status = s.py(&["control", "status"]).await;
        assert!(
            status[0]["metrics"]["enabled"].is_boolean(),
            "dispatcherd's `status` nests its `metrics` reply; the Rust status: {}",
            status[0]["metrics"]
        );
    })
    .await;
}
