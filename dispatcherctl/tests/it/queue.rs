//! The queue commands on a real database: `migrate` (twice), `jobs` counts after SQL enqueues,
//! failed jobs made by a real service listed, retried (they run again) and discarded, canceled
//! ones by id, and the errors: usage (2), no server (3), no schema or no privileges (4).

use std::sync::Arc;
use std::time::Duration;

use dispatcher_broker_pg::queue::{PgQueue, PgQueueConfig};
use dispatcher_core::{task, Publisher, TaskRegistry};
use dispatcher_runtime::{InProcessPool, Service, ServiceHandle};
use dispatcher_testkit::postgres::PgFixture;
use serde_json::{json, Value};

use crate::support::{ctl_raw, wait_until, Run};

/// Always fails with `why`, on its only attempt.
#[task(name = "ctl.doomed", max_attempts = 1)]
pub fn doomed(why: String) -> Result<(), String> {
    Err(why)
}

/// Runs dispatcherctl on the fixture's database.
async fn q(fx: &PgFixture, args: &[&str]) -> Run {
    let url = fx.url();
    let mut all = vec!["--database-url", url.as_str()];
    all.extend_from_slice(args);
    ctl_raw(&all).await
}

/// stdout as the one JSON object it must be.
fn object(run: &Run) -> Value {
    match serde_json::from_str::<Value>(&run.stdout) {
        Ok(v @ Value::Object(_)) => v,
        other => panic!("stdout is not one JSON object: {other:?}\n{run:?}"),
    }
}

async fn count(fx: &PgFixture, sql: &str) -> i64 {
    let c = fx.client().await.unwrap();
    c.query_one(sql, &[]).await.unwrap().get(0)
}

async fn failed_count(fx: &PgFixture) -> i64 {
    count(
        fx,
        "SELECT count(*) FROM dispatcher.jobs WHERE state = 'failed'",
    )
    .await
}

/// A service consuming queue `jobs` with the doomed task.
async fn service(fx: &PgFixture) -> (Arc<PgQueue>, ServiceHandle) {
    let mut config = PgQueueConfig::from_url(&fx.url()).unwrap();
    config.poll_interval = Duration::from_millis(200);
    let queue = Arc::new(PgQueue::connect(config).await.unwrap());
    let svc = Service::builder()
        .registry(TaskRegistry::new().register::<doomed>())
        .broker(queue.clone())
        .channels(["jobs"])
        .shutdown_grace(Duration::from_secs(1))
        .pool(InProcessPool::new(2))
        .start()
        .await
        .unwrap();
    (queue, svc)
}

/// Whether a line of `out` reads as a table row whose first cell is `key`.
fn has_row(out: &str, key: &str) -> bool {
    out.lines()
        .any(|l| l.split("  ").next().map(str::trim) == Some(key))
}

/// The row of a table whose first cell is `key`, split into cells.
fn row<'a>(out: &'a str, key: &str) -> Vec<&'a str> {
    let line = out
        .lines()
        .find(|l| l.split("  ").next().map(str::trim) == Some(key))
        .unwrap_or_else(|| panic!("no row {key} in\n{out}"));
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

#[tokio::test]
async fn migrate_twice_then_jobs_counts_what_sql_enqueued() {
    let fx = PgFixture::new().await.unwrap();

    // Nothing works before the schema exists, and the message says how to make it.
    for args in [
        &["jobs"][..],
        &["--json", "retry", "1"],
        &["discard", "--all-failed"],
    ] {
        let run = q(&fx, args).await;
        assert_eq!(run.code, 4, "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{run:?}");
        assert!(
            run.stderr
                .contains("queue schema \"dispatcher\" does not exist in the database")
                && run.stderr.contains("run `dispatcherctl migrate` first"),
            "{run:?}"
        );
    }

    let run = q(&fx, &["migrate"]).await.ok();
    assert_eq!(
        run.stdout,
        "queue schema \"dispatcher\": applied migration 1; now at version 1\n"
    );
    let run = q(&fx, &["--json", "migrate"]).await.ok();
    assert_eq!(
        object(&run),
        json!({"schema": "dispatcher", "applied": [], "version": 1})
    );
    let run = q(&fx, &["migrate"]).await.ok();
    assert_eq!(
        run.stdout,
        "queue schema \"dispatcher\" is up to date at version 1; nothing applied\n"
    );
    assert_eq!(
        count(&fx, "SELECT count(*) FROM dispatcher.migrations").await,
        1
    );

    // Another schema is its own, and is named in the hint.
    let run = q(&fx, &["jobs", "--schema", "other_q"]).await;
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stderr
            .contains("run `dispatcherctl migrate --schema other_q` first"),
        "{run:?}"
    );

    let run = q(&fx, &["jobs"]).await.ok();
    assert_eq!(
        run.stdout,
        "queue schema \"dispatcher\": 0 live services, 0 expired claims\nno jobs\n\n\
         no failed or canceled jobs\n"
    );

    let c = fx.client().await.unwrap();
    for _ in 0..3 {
        c.execute("SELECT dispatcher.enqueue('q', '{\"task\": \"x\"}')", &[])
            .await
            .unwrap();
    }
    c.execute(
        "SELECT dispatcher.enqueue('later', '{\"task\": \"y\"}', now() + interval '1 hour')",
        &[],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let v = object(&q(&fx, &["--json", "jobs"]).await.ok());
    assert_eq!(v["schema"], "dispatcher", "{v:#}");
    assert_eq!(
        (v["live_owners"].as_i64(), v["expired_claims"].as_i64()),
        (Some(0), Some(0))
    );
    assert_eq!(v["failed"], json!([]), "{v:#}");
    let queues = v["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 2, "{v:#}");
    let (later, qq) = (&queues[0], &queues[1]);
    assert_eq!(
        (
            later["queue"].as_str(),
            later["available"].as_i64(),
            later["due"].as_i64()
        ),
        (Some("later"), Some(1), Some(0)),
        "{v:#}"
    );
    assert_eq!(
        (
            qq["queue"].as_str(),
            qq["available"].as_i64(),
            qq["due"].as_i64()
        ),
        (Some("q"), Some(3), Some(3)),
        "{v:#}"
    );
    assert!(qq["oldest_due_s"].as_f64().unwrap() >= 0.1, "{v:#}");
    for k in ["running", "failed", "canceled"] {
        assert_eq!(qq[k], 0, "{k}: {v:#}");
    }

    let run = q(&fx, &["jobs"]).await.ok();
    let header = row(&run.stdout, "queue");
    assert_eq!(
        header,
        [
            "queue",
            "available",
            "due",
            "running",
            "failed",
            "canceled",
            "oldest due"
        ]
    );
    assert_eq!(
        row(&run.stdout, "later"),
        ["later", "1", "0", "0", "0", "0", "-"]
    );
    let q_row = row(&run.stdout, "q");
    assert_eq!(q_row[..6], ["q", "3", "3", "0", "0", "0"], "{run:?}");
    assert!(q_row[6].ends_with('s'), "the oldest due job's age: {run:?}");

    // --queue: that queue alone.
    let v = object(&q(&fx, &["--json", "jobs", "--queue", "later"]).await.ok());
    assert_eq!(v["queues"].as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(v["queues"][0]["queue"], "later", "{v:#}");
    let run = q(&fx, &["jobs", "--queue", "nope"]).await.ok();
    assert!(run.stdout.contains("queue \"nope\": no jobs\n"), "{run:?}");
}

#[tokio::test]
async fn failed_jobs_are_listed_retried_and_discarded() {
    let fx = PgFixture::new().await.unwrap();
    q(&fx, &["migrate"]).await.ok();
    let (queue, svc) = service(&fx).await;
    let publisher = Publisher::new(queue.clone(), "jobs").unwrap();
    for why in ["boom 1", "boom 2", "boom 3"] {
        publisher
            .publish(doomed::call(why.to_owned()))
            .await
            .unwrap();
    }
    wait_until("three failed jobs", async || failed_count(&fx).await == 3).await;

    // While the service runs, it is a live service.
    let v = object(&q(&fx, &["--json", "jobs"]).await.ok());
    assert_eq!(v["live_owners"], 1, "{v:#}");
    assert_eq!(v["queues"][0]["queue"], "jobs", "{v:#}");
    assert_eq!(v["queues"][0]["failed"], 3, "{v:#}");
    assert_eq!(v["queues"][0]["available"], 0, "{v:#}");
    svc.shutdown().await.unwrap();
    drop(publisher);
    drop(queue);

    // --json: every job with its message and every attempt's error.
    let failed = v["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 3, "{v:#}");
    let mut ids = Vec::new();
    for f in failed {
        assert_eq!(f["task"], "ctl.doomed", "{f:#}");
        assert_eq!(f["state"], "failed", "{f:#}");
        assert_eq!(f["attempt"], 1, "{f:#}");
        assert!(
            f["message"].as_str().unwrap().contains("ctl.doomed"),
            "{f:#}"
        );
        let errors = f["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{f:#}");
        assert_eq!(errors[0]["attempt"], 1, "{f:#}");
        assert!(
            errors[0]["error"].as_str().unwrap().contains("boom "),
            "{f:#}"
        );
        ids.push(f["id"].as_i64().unwrap());
    }
    // Newest first.
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    ids.sort_unstable();
    let [a, b, c] = ids[..] else {
        panic!("{ids:?}")
    };
    let (a_s, b_s, c_s) = (a.to_string(), b.to_string(), c.to_string());

    // The table: one row per job with its last error.
    let run = q(&fx, &["jobs"]).await.ok();
    assert!(
        run.stdout
            .contains("\n3 failed or canceled jobs, newest first:\n"),
        "{run:?}"
    );
    for id in &ids {
        let r = row(&run.stdout, &id.to_string());
        assert_eq!(r[1..5], ["jobs", "ctl.doomed", "failed", "1"], "{run:?}");
        assert!(r[6].contains("boom "), "{run:?}");
    }
    let run = q(&fx, &["jobs", "--limit", "1"]).await.ok();
    assert!(
        run.stdout
            .contains("\n1 of 3 failed or canceled jobs, newest first (--limit 1):\n"),
        "{run:?}"
    );
    assert!(
        has_row(&run.stdout, &c_s) && !has_row(&run.stdout, &a_s) && !has_row(&run.stdout, &b_s),
        "only the newest: {run:?}"
    );

    // retry by id: one done, an unknown id named, exit 1.
    let run = q(&fx, &["retry", &a_s, "999999"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stdout, format!("retried 1 job: {a}\n"));
    assert!(
        run.stderr.contains(
            "not retried: id 999999 is not a failed or canceled job in queue schema \"dispatcher\""
        ),
        "{run:?}"
    );
    let state = |id: i64| {
        let fx = &fx;
        async move {
            let c = fx.client().await.unwrap();
            c.query_opt(
                "SELECT state, attempt FROM dispatcher.jobs WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1)))
        }
    };
    assert_eq!(state(a).await, Some(("available".into(), 0)));
    // Retrying or discarding it again: it is not failed now; nothing is done, exit 1.
    let run = q(&fx, &["retry", &a_s]).await;
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (1, "retried no jobs\n"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains(&format!("not retried: id {a} is not")),
        "{run:?}"
    );
    let run = q(&fx, &["--json", "discard", &a_s]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        object(&run),
        json!({"schema": "dispatcher", "discarded": [], "count": 0,
               "not_failed_or_canceled": [a]})
    );
    assert_eq!(state(a).await, Some(("available".into(), 0)));

    // discard by id.
    let run = q(&fx, &["--json", "discard", &b_s]).await.ok();
    assert_eq!(
        object(&run),
        json!({"schema": "dispatcher", "discarded": [b], "count": 1,
               "not_failed_or_canceled": []})
    );
    assert_eq!(state(b).await, None);

    // --all-failed, of another queue (none) and of this one.
    let run = q(&fx, &["retry", "--all-failed", "--queue", "other"])
        .await
        .ok();
    assert_eq!(
        run.stdout,
        "retried no jobs: no failed jobs of queue \"other\"\n"
    );
    assert_eq!(state(c).await, Some(("failed".into(), 1)));
    let run = q(&fx, &["retry", "--all-failed", "--queue", "jobs"])
        .await
        .ok();
    assert_eq!(
        run.stdout,
        format!("retried 1 failed job of queue \"jobs\": {c}\n")
    );
    let v = object(&q(&fx, &["--json", "jobs"]).await.ok());
    assert_eq!(v["queues"][0]["available"], 2, "{v:#}");
    assert_eq!(v["queues"][0]["due"], 2, "{v:#}");
    assert_eq!(v["queues"][0]["failed"], 0, "{v:#}");
    assert_eq!(v["failed"], json!([]), "{v:#}");

    // The retried jobs run again, from attempt 1, and fail again: two errors each now.
    let (queue, svc) = service(&fx).await;
    wait_until("the retried jobs failed again", async || {
        failed_count(&fx).await == 2
    })
    .await;
    svc.shutdown().await.unwrap();
    drop(queue);
    let v = object(&q(&fx, &["--json", "jobs"]).await.ok());
    let failed = v["failed"].as_array().unwrap();
    let listed: Vec<i64> = failed.iter().map(|f| f["id"].as_i64().unwrap()).collect();
    assert_eq!(listed, [c, a], "{v:#}");
    for f in failed {
        assert_eq!(f["attempt"], 1, "{f:#}");
        assert_eq!(f["errors"].as_array().unwrap().len(), 2, "{f:#}");
    }

    // A canceled job: listed, left alone by --all-failed, retried or discarded by id.
    fx.client()
        .await
        .unwrap()
        .execute(
            "UPDATE dispatcher.jobs SET state = 'canceled' WHERE id = $1",
            &[&a],
        )
        .await
        .unwrap();
    let run = q(&fx, &["jobs"]).await.ok();
    assert_eq!(row(&run.stdout, &a_s)[3], "canceled", "{run:?}");
    let run = q(&fx, &["discard", "--all-failed"]).await.ok();
    assert_eq!(run.stdout, format!("discarded 1 failed job: {c}\n"));
    assert_eq!(state(c).await, None);
    assert_eq!(state(a).await, Some(("canceled".into(), 1)));
    let run = q(&fx, &["discard", "--all-failed"]).await.ok();
    assert_eq!(run.stdout, "discarded no jobs: no failed jobs\n");
    let run = q(&fx, &["discard", &a_s, &a_s]).await.ok();
    assert_eq!(run.stdout, format!("discarded 1 job: {a}\n"));
    assert_eq!(count(&fx, "SELECT count(*) FROM dispatcher.jobs").await, 0);
}

#[tokio::test]
async fn queue_usage_errors_are_exit_2_before_connecting() {
    // Nothing listens on port 1: usage errors are found before any connection.
    let url = "host=127.0.0.1 port=1 user=postgres connect_timeout=2";
    for (args, needle) in [
        (
            &["retry"][..],
            "retry needs the ids of failed or canceled jobs",
        ),
        (&["--json", "discard"], "or --all-failed [--queue NAME]"),
        (&["retry", "12x"], "job ids are positive whole numbers"),
        (&["discard", "0"], "got '0'"),
        (&["retry", "3", "--all-failed"], "not both"),
        (&["discard", "3", "--queue", "q"], "only with --all-failed"),
        (&["jobs", "7"], "jobs takes no job ids"),
        (&["jobs", "--data", "{}"], "takes no --data"),
        (&["history", "--limit", "5"], "--data '{\"limit\": 5}'"),
        (
            &["alive", "--schema", "x"],
            "--schema is for the queue commands",
        ),
        (
            &["jobs", "--schema", "Bad-Name"],
            "invalid queue schema name \"Bad-Name\"",
        ),
        (&["jobs", "--limit", "lots"], "--limit"),
    ] {
        let mut all = vec!["--database-url", url];
        all.extend_from_slice(args);
        let run = ctl_raw(&all).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert_eq!(run.stdout, "", "{args:?}: {run:?}");
        assert!(
            run.stderr.contains(needle),
            "{args:?}: {needle:?} missing in {run:?}"
        );
    }
}

#[tokio::test]
async fn no_server_is_exit_3_and_a_refused_statement_exit_4() {
    let url = "host=127.0.0.1 port=1 user=postgres password=hunter2 connect_timeout=2";
    let run = ctl_raw(&["--database-url", url, "--json", "jobs"]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr
            .contains("cannot connect to host=127.0.0.1 port=1 user=postgres password=***"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("hunter2"), "{run:?}");

    // A role without privileges on the schema: the database refuses, exit 4.
    let fx = PgFixture::new().await.unwrap();
    q(&fx, &["migrate"]).await.ok();
    let role = format!("{}_ro", fx.database());
    let admin = fx.client().await.unwrap();
    let password = fx
        .config()
        .get_password()
        .map(|p| {
            format!(
                " PASSWORD '{}'",
                String::from_utf8_lossy(p).replace('\'', "''")
            )
        })
        .unwrap_or_default();
    admin
        .batch_execute(&format!("CREATE ROLE \"{role}\" LOGIN{password}"))
        .await
        .unwrap();
    let mut config = fx.config().clone();
    config.user(&role);
    let as_role = dispatcher_testkit::postgres::config_to_string(&config);
    let jobs = ctl_raw(&["--database-url", &as_role, "jobs"]).await;
    let retry = ctl_raw(&["--database-url", &as_role, "retry", "--all-failed"]).await;
    admin
        .batch_execute(&format!("DROP ROLE \"{role}\""))
        .await
        .unwrap();
    for run in [jobs, retry] {
        assert_eq!(run.code, 4, "{run:?}");
        assert_eq!(run.stdout, "", "{run:?}");
        assert!(run.stderr.contains("permission denied"), "{run:?}");
    }
}
