//! What the tests share: the test tasks, a service on the fixture's database, and runs of the
//! `dispatcherctl` binary (raw, on the test channel, or as the single `--json` reply).

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher_broker_pg::PgBroker;
use dispatcher_core::{task, TaskRegistry};
use dispatcher_runtime::{InProcessPool, LogLevelControl, Service, ServiceHandle};
use dispatcher_testkit::postgres::PgFixture;
use serde_json::{Map, Value};

pub const CHANNEL: &str = "ctl_test";
/// Longest any single dispatcherctl run may take before the test fails.
pub const RUN_BOUND: Duration = Duration::from_secs(40);

/// Sleeps `secs` seconds and returns them.
#[task(name = "ctl.nap")]
pub fn nap(secs: f64) -> f64 {
    std::thread::sleep(Duration::from_secs_f64(secs));
    secs
}

/// Adds two numbers (a timeout, for `tasks` to show).
#[task(name = "ctl.add", timeout = 30)]
pub fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Fails with a message (durable-queue policies, for `tasks` to show).
#[task(name = "ctl.fail", max_attempts = 5, backoff = 0.5, unique)]
pub fn fail(why: String) -> Result<(), String> {
    Err(why)
}

pub fn registry() -> TaskRegistry {
    TaskRegistry::new()
        .register::<nap>()
        .register::<add>()
        .register::<fail>()
}

pub async fn service(
    fx: &PgFixture,
    node: &str,
    log: Option<Arc<dyn LogLevelControl>>,
) -> ServiceHandle {
    let broker = Arc::new(PgBroker::connect(&fx.url()).await.unwrap());
    let mut b = Service::builder()
        .registry(registry())
        .broker(broker)
        .channels([CHANNEL])
        .node_id(node)
        .shutdown_grace(Duration::from_secs(1))
        .pool(InProcessPool::new(2));
    if let Some(l) = log {
        b = b.log_control(l);
    }
    b.start().await.unwrap()
}

/// What one run of the binary gave.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as JSON: the whole of it must be one JSON array.
    pub fn json(&self) -> Vec<Value> {
        match serde_json::from_str::<Value>(&self.stdout) {
            Ok(Value::Array(a)) => a,
            other => panic!("stdout is not one JSON array: {other:?}\n{self:?}"),
        }
    }

    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }

    /// A reply carried an error: exit code 5, and stderr says which node answered what.
    pub fn error_reply(self) -> Self {
        assert_eq!(self.code, 5, "{self:?}");
        assert!(self.stderr.contains("with an error: "), "{self:?}");
        self
    }
}

pub async fn ctl_raw(args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatcherctl"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        // No URL means the PG* variables (as for psql): none here.
        .env_remove("PGHOST")
        .env_remove("PGDATABASE")
        .env_remove("PGUSER")
        .env_remove("PGPORT")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(RUN_BOUND, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("dispatcherctl {args:?} ran longer than {RUN_BOUND:?}"))
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs dispatcherctl on the fixture's database and the test channel, expecting one reply.
pub async fn ctl(fx: &PgFixture, args: &[&str]) -> Run {
    let url = fx.url();
    let mut all = vec![
        "--database-url",
        &url,
        "--channel",
        CHANNEL,
        "--timeout",
        "15",
        "--expected-replies",
        "1",
    ];
    all.extend_from_slice(args);
    ctl_raw(&all).await
}

/// The single reply of a `--json` run (exit code 5 when it carries an error, 0 otherwise).
pub async fn one(fx: &PgFixture, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let run = ctl(fx, &all).await;
    let mut replies = run.json();
    assert_eq!(replies.len(), 1, "{run:?}");
    let reply = replies.remove(0);
    let expected = if reply.get("error").is_some() { 5 } else { 0 };
    assert_eq!(run.code, expected, "{run:?}");
    reply
}

/// A human-readable run's output holds no JSON: no braces, no quoted field names.
pub fn assert_no_json(out: &str) {
    assert!(
        !out.contains('{') && !out.contains("\":"),
        "raw JSON in a table:\n{out}"
    );
}

pub async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn running_count(svc: &ServiceHandle) -> usize {
    let r = svc.control("running", Map::new()).await.unwrap();
    r.as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("worker-"))
        .count()
}
