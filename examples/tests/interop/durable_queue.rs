//! The durable queue from other clients: `dispatcher.enqueue(...)` called from Python (psycopg,
//! with the message dispatcherd builds for its own tasks) and from `psql -c` runs the demo's
//! Rust tasks on a `dispatcher-demo serve --queue` service, retries included.

use std::process::Stdio;
use std::time::Duration;

use dispatcher::PgBroker;
use dispatcher_testkit::postgres::PgFixture;
use serde_json::{json, Value};
use tokio::process::Command;

use crate::support::*;

/// Every Call of `uuid` once one of them is `ok` (a job's attempts share its uuid), oldest
/// attempt first.
async fn attempts_until_ok(broker: &PgBroker, channel: &str, uuid: &str) -> Vec<Value> {
    let mut calls = poll_until(&format!("an ok Call {uuid}"), || async {
        let replies = rust_control(
            broker,
            channel,
            "history",
            json!({ "uuid": uuid }),
            Duration::from_secs(2),
        )
        .await;
        let calls = replies
            .first()
            .and_then(|r| r["calls"].as_array())
            .cloned()
            .unwrap_or_default();
        calls.iter().any(|c| c["outcome"] == "ok").then_some(calls)
    })
    .await;
    calls.sort_by_key(|c| c["attempt"].as_u64());
    calls
}

fn attempts_and_outcomes(calls: &[Value]) -> Vec<(Option<u64>, String)> {
    calls
        .iter()
        .map(|c| {
            (
                c["attempt"].as_u64(),
                c["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits until the queue's tables are empty: every job done and deleted.
async fn until_no_jobs(fx: &PgFixture) {
    let db = fx
        .client()
        .await
        .expect("a connection to the test database");
    poll_until("the queue's tables to be empty", || async {
        let row = db
            .query_one(
                "SELECT (SELECT count(*) FROM dispatcher.jobs) + (SELECT count(*) FROM dispatcher.claims)",
                &[],
            )
            .await
            .expect("counting the queue's rows");
        (row.get::<_, i64>(0) == 0).then_some(())
    })
    .await;
}

/// Runs the Python client's `enqueue` (psycopg calling `dispatcher.enqueue`).
async fn py_enqueue(params: &str, args: &[&str]) -> Value {
    let mut full = vec!["enqueue"];
    full.extend_from_slice(args);
    py_client(params, &full).await
}

fn uuid_of(out: &Value) -> String {
    out["message"]["uuid"]
        .as_str()
        .unwrap_or_else(|| panic!("dispatcherd's body has a uuid: {out}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_enqueue_runs_rust_tasks_with_retries() {
    bounded(async {
        let fx = PgFixture::new().await.expect("a PostgreSQL database");
        let channel = unique("py_queue");
        let scratch = Scratch::new(&channel);
        let demo = DemoService::start_with(&fx, &channel, &scratch, &["--queue"]).await;
        let broker = pg_broker(&fx).await;
        let params = py_params(&fx, &channel, None);

        // dispatcherd's message, keyword arguments, a priority: committed, it runs once.
        let out = py_enqueue(
            &params,
            &[
                "demo.echo",
                "--kwargs",
                r#"{"value": {"from": "python"}}"#,
                "--priority",
                "5",
            ],
        )
        .await;
        assert_eq!(out["committed"], true, "{out}");
        assert!(out["id"].as_i64().is_some_and(|id| id > 0), "{out}");
        assert_eq!(out["message"]["task"], "demo.echo");
        let call = wait_for_call(&broker, &channel, &uuid_of(&out)).await;
        assert_eq!(call["outcome"], "ok", "{call:#}");
        assert_eq!(call["result"], json!({"from": "python"}));
        assert_eq!(call["attempt"], 1);
        assert_eq!(call["channel"], channel.as_str());
        assert_eq!(call["node_id"], demo.node_id.as_str());
        let sent = out["message"]["time_pub"]
            .as_f64()
            .expect("dispatcherd sets time_pub");
        let kept = call["time_pub"].as_f64().expect("the Call keeps time_pub");
        assert!((sent - kept).abs() < 1e-6, "time_pub {sent} vs {kept}");

        // Enqueued in a transaction that rolls back: no job. Then a job due in 1.5 s.
        let rolled_back = py_enqueue(
            &params,
            &["demo.echo", "--args", r#"["rolled back"]"#, "--rollback"],
        )
        .await;
        assert_eq!(rolled_back["committed"], false, "{rolled_back}");
        let later = py_enqueue(
            &params,
            &["demo.echo", "--args", r#"["later"]"#, "--run-in", "1.5"],
        )
        .await;
        let call = wait_for_call(&broker, &channel, &uuid_of(&later)).await;
        assert_eq!(call["outcome"], "ok", "{call:#}");
        assert_eq!(call["result"], "later");
        let started = call["started_at"].as_f64().expect("started_at");
        let published = later["message"]["time_pub"].as_f64().expect("time_pub");
        assert!(
            started - published >= 1.5,
            "ran {:.3} s after it was built, before its run_at",
            started - published
        );

        // A failing attempt is retried: demo.flaky(1) fails once, then succeeds.
        let flaky = py_enqueue(&params, &["demo.flaky", "--args", "[1]"]).await;
        let calls = attempts_until_ok(&broker, &channel, &uuid_of(&flaky)).await;
        assert_eq!(
            attempts_and_outcomes(&calls),
            [(Some(1), "error".to_owned()), (Some(2), "ok".to_owned())],
            "{calls:#?}"
        );
        assert_eq!(calls[1]["result"], 2);

        // The rolled-back job never ran, and every job is done and gone.
        let replies = rust_control(
            &broker,
            &channel,
            "history",
            json!({ "uuid": uuid_of(&rolled_back) }),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0]["calls"], json!([]), "{:#}", replies[0]);
        until_no_jobs(&fx).await;
        drop(demo);
    })
    .await;
}

/// `psql -X -q -t -A -v ON_ERROR_STOP=1 -d <conninfo> -c <sql>`: exit code, stdout, stderr.
async fn psql(fx: &PgFixture, sql: &str) -> (i32, String, String) {
    let exe = std::env::var("PSQL").unwrap_or_else(|_| "psql".into());
    let out = Command::new(&exe)
        .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
        .args(["-d", &fx.url(), "-c", sql])
        .env_remove("PGOPTIONS")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(STEP, out)
        .await
        .unwrap_or_else(|_| panic!("psql -c {sql:?} took over {STEP:?}"))
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {exe} ({e}): these tests need the PostgreSQL client \
                 (Debian/Ubuntu: apt-get install postgresql-client), or PSQL naming it"
            )
        });
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A job id printed by `psql -t -A -c "SELECT dispatcher.enqueue(...)"`.
async fn psql_enqueue(fx: &PgFixture, sql: &str) -> i64 {
    let (code, stdout, stderr) = psql(fx, sql).await;
    assert_eq!(code, 0, "psql -c {sql:?}: {stderr}");
    stdout
        .parse()
        .unwrap_or_else(|e| panic!("psql printed no job id ({e}): {stdout:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_enqueue_runs_rust_tasks_with_retries() {
    let body = async {
        let fx = PgFixture::new().await.expect("a PostgreSQL database");
        let channel = unique("psql_queue");
        let scratch = Scratch::new(&channel);
        let demo = DemoService::start_with(&fx, &channel, &scratch, &["--queue"]).await;
        let broker = pg_broker(&fx).await;

        // The shortest form: a queue and a message.
        let sql = format!(
            r#"SELECT dispatcher.enqueue('{channel}', '{{"task": "demo.echo", "uuid": "psql-echo-1", "args": [[1, 2, 3]]}}')"#
        );
        let id = psql_enqueue(&fx, &sql).await;
        assert!(id > 0);
        let call = wait_for_call(&broker, &channel, "psql-echo-1").await;
        assert_eq!(call["outcome"], "ok", "{call:#}");
        assert_eq!(call["result"], json!([1, 2, 3]));
        assert_eq!(call["attempt"], 1);
        assert_eq!(call["node_id"], demo.node_id.as_str());

        // Named parameters: a retried task.
        let sql = format!(
            r#"SELECT dispatcher.enqueue(queue => '{channel}', message => '{{"task": "demo.flaky", "uuid": "psql-flaky-1", "kwargs": {{"failures": 2}}}}', priority => 10)"#
        );
        psql_enqueue(&fx, &sql).await;
        let calls = attempts_until_ok(&broker, &channel, "psql-flaky-1").await;
        assert_eq!(
            attempts_and_outcomes(&calls),
            [
                (Some(1), "error".to_owned()),
                (Some(2), "error".to_owned()),
                (Some(3), "ok".to_owned())
            ],
            "{calls:#?}"
        );
        assert_eq!(calls[2]["result"], 3);
        until_no_jobs(&fx).await;

        // A unique key: while a job with the key is live (here: not due for a minute), enqueueing
        // again returns its id and adds nothing.
        let sql = format!(
            r#"SELECT dispatcher.enqueue('{channel}', '{{"task": "demo.noop"}}', now() + interval '60 seconds', 0, 'nightly')"#
        );
        let first = psql_enqueue(&fx, &sql).await;
        let again = psql_enqueue(&fx, &sql).await;
        assert_eq!(first, again);
        let (code, stdout, stderr) = psql(
            &fx,
            "SELECT count(*) FROM dispatcher.jobs WHERE unique_key = 'nightly'",
        )
        .await;
        assert_eq!((code, stdout.as_str()), (0, "1"), "{stderr}");

        // Not a task message: refused, nothing added.
        let sql = format!(r#"SELECT dispatcher.enqueue('{channel}', '{{"control": "alive"}}')"#);
        let (code, _, stderr) = psql(&fx, &sql).await;
        assert_ne!(code, 0);
        assert!(
            stderr.contains("the message must be a JSON object with a \"task\" string"),
            "{stderr}"
        );
        let (_, stdout, _) = psql(&fx, "SELECT count(*) FROM dispatcher.jobs").await;
        assert_eq!(stdout, "1", "only the unique job is left");
        drop(demo);
    };
    if tokio::time::timeout(TEST_BOUND, body).await.is_err() {
        panic!("the test did not finish within {TEST_BOUND:?}");
    }
}
