//! `set_log_level` on a service without a log control (an error reply) and with one (the new and
//! the previous level); a command the service does not know.

use std::sync::{Arc, Mutex};

use dispatcher_runtime::LogLevelControl;
use dispatcher_testkit::postgres::PgFixture;
use serde_json::json;

use crate::support::{ctl, one, service};

/// A log level control that remembers the level.
struct FakeLogLevel(Mutex<String>);

impl LogLevelControl for FakeLogLevel {
    fn set_level(&self, level: &str) -> Result<String, String> {
        if level == "bogus" {
            return Err("not a filter".into());
        }
        let mut l = self.0.lock().unwrap();
        Ok(std::mem::replace(&mut *l, level.to_owned()))
    }
}

#[tokio::test]
async fn set_log_level_and_unknown_command() {
    let fx = PgFixture::new().await.unwrap();
    let svc = service(&fx, "node-a", None).await;
    // Without a log control the service answers with an error object: it is printed as one.
    let run = ctl(&fx, &["set_log_level", "--data", r#"{"level": "debug"}"#])
        .await
        .error_reply();
    assert!(run.stdout.starts_with("node node-a: error: "), "{run:?}");
    let reply = one(&fx, &["set_log_level", "--data", r#"{"level": "debug"}"#]).await;
    assert!(reply["error"].is_string(), "{reply}");
    let missing = one(&fx, &["set_log_level"]).await;
    assert!(
        missing["error"].as_str().unwrap().contains("level"),
        "{missing}"
    );

    let run = ctl(&fx, &["frobnicate"]).await.error_reply();
    assert!(
        run.stderr
            .contains("node node-a answered \"frobnicate\" with an error: No control method"),
        "{run:?}"
    );
    assert_eq!(
        run.stdout, "node node-a: error: No control method frobnicate\n",
        "{run:?}"
    );
    let reply = one(&fx, &["frobnicate", "--data", r#"{"x": 1}"#]).await;
    assert_eq!(
        reply,
        json!({"error": "No control method frobnicate", "node_id": "node-a"})
    );
    svc.shutdown().await.unwrap();

    // With one, the reply is the new and the previous level.
    let log: Arc<dyn LogLevelControl> = Arc::new(FakeLogLevel(Mutex::new("info".into())));
    let svc = service(&fx, "node-b", Some(log)).await;
    let reply = one(&fx, &["set_log_level", "--data", r#"{"level": "debug"}"#]).await;
    assert_eq!(
        reply,
        json!({"logger": "dispatcher", "level": "debug", "previous_level": "info", "node_id": "node-b"})
    );
    let run = ctl(&fx, &["set_log_level", "--data", r#"{"level": "warn"}"#])
        .await
        .ok();
    assert!(
        run.stdout
            .starts_with("node node-b:\nlogger      level  previous level\n"),
        "{run:?}"
    );
    assert!(run.stdout.contains("dispatcher  warn   debug"), "{run:?}");
    let refused = ctl(&fx, &["set_log_level", "--data", r#"{"level": "bogus"}"#])
        .await
        .error_reply();
    assert!(
        refused.stdout.starts_with("node node-b: error: "),
        "{refused:?}"
    );
    svc.shutdown().await.unwrap();
}
