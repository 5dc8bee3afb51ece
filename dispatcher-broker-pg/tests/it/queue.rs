//! The durable queue on a real PostgreSQL: migrations, enqueue paths, settle, retries, unique
//! keys, the cluster-wide concurrency limit, leases.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher_broker_pg::queue::{enqueue_in, Job, PgQueue, PgQueueConfig};
use dispatcher_broker_pg::Error;
use dispatcher_core::{
    task, Broker, Call, Outcome, Publisher, TaskContext, TaskMessage, TaskRegistry,
};
use dispatcher_runtime::{InProcessPool, Service, ServiceHandle};
use dispatcher_testkit::postgres::PgFixture;
use futures_util::StreamExt;
use serde_json::json;

use crate::WAIT;

#[task(name = "q.add")]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Fails while its attempt is at most `failures`.
#[task(name = "q.flaky", context, max_attempts = 5, backoff = 0.2)]
fn flaky(ctx: &TaskContext, failures: u32) -> Result<u32, String> {
    if ctx.attempt() <= failures {
        Err(format!("failing on attempt {}", ctx.attempt()))
    } else {
        Ok(ctx.attempt())
    }
}

/// Always fails, 3 attempts.
#[task(name = "q.doomed", max_attempts = 3, backoff = 0.05)]
fn doomed() -> Result<(), String> {
    Err("doomed".into())
}

#[task(name = "q.slow", concurrency = 2)]
async fn slow(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

#[task(name = "q.unique", unique = true)]
async fn unique(n: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    n
}

fn registry() -> TaskRegistry {
    TaskRegistry::new()
        .register::<add>()
        .register::<flaky>()
        .register::<doomed>()
        .register::<slow>()
        .register::<unique>()
}

fn config(fx: &PgFixture) -> PgQueueConfig {
    let mut c = PgQueueConfig::from_url(&fx.url()).unwrap();
    c.migrate_on_start = true;
    c.poll_interval = Duration::from_millis(200);
    c.stats_interval = Duration::from_secs(1);
    c
}

async fn queue(fx: &PgFixture) -> Arc<PgQueue> {
    Arc::new(PgQueue::connect(config(fx)).await.unwrap())
}

async fn service(q: Arc<PgQueue>, workers: usize) -> ServiceHandle {
    Service::builder()
        .registry(registry())
        .broker(q)
        .channels(["jobs"])
        .pool(InProcessPool::new(workers))
        .start()
        .await
        .unwrap()
}

async fn count(fx: &PgFixture, sql: &str) -> i64 {
    let c = fx.client().await.unwrap();
    c.query_one(sql, &[]).await.unwrap().get(0)
}

/// Waits until `sql` returns `want`.
async fn until_count(fx: &PgFixture, sql: &str, want: i64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = count(fx, sql).await;
        if n == want {
            return;
        }
        assert!(Instant::now() < deadline, "{sql}: {n}, waited for {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn msg(task: &str, args: serde_json::Value) -> TaskMessage {
    let mut m = TaskMessage::new(task);
    m.args = args.as_array().cloned().unwrap_or_default();
    m
}

#[tokio::test]
async fn migrations_apply_once_under_concurrency_and_are_required() {
    let fx = PgFixture::new().await.unwrap();
    let mut plain = PgQueueConfig::from_url(&fx.url()).unwrap();
    plain.migrate_on_start = false;
    let e = PgQueue::connect(plain.clone()).await.unwrap_err();
    assert!(matches!(e, Error::NotMigrated { found: 0, .. }), "{e}");
    assert!(e.to_string().contains("dispatcherctl migrate"), "{e}");
    let mut runs = Vec::new();
    for _ in 0..6 {
        let url = fx.url();
        runs.push(tokio::spawn(async move {
            let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            dispatcher_broker_pg::queue::migrate(&mut client, "dispatcher")
                .await
                .unwrap()
        }));
    }
    let mut applied = 0;
    for r in runs {
        let m = r.await.unwrap();
        assert_eq!(m.version, 1);
        applied += m.applied.len();
    }
    assert_eq!(applied, 1, "exactly one migrator applied version 1");
    assert_eq!(
        count(&fx, "SELECT count(*) FROM dispatcher.migrations").await,
        1
    );
    PgQueue::connect(plain).await.unwrap();
    let bad = PgQueueConfig::from_url(&fx.url())
        .unwrap()
        .schema("Bad-Name");
    let e = PgQueue::connect(bad).await.unwrap_err();
    assert!(e.to_string().contains("\"Bad-Name\""), "{e}");
}

#[tokio::test]
async fn every_enqueue_path_runs_its_job_once_and_leaves_no_rows() {
    let fx = PgFixture::new().await.unwrap();
    let q = queue(&fx).await;
    let svc = service(q.clone(), 4).await;
    // The broker path: a publisher's batch (one row for the 300 jobs of one task).
    let p = Publisher::new(q.clone(), "jobs").unwrap();
    let subs: Vec<_> = (0..300).map(|i| add::call(i, 1)).collect();
    p.publish_batch(subs).await.unwrap();
    // The API, with priority and a delay.
    q.enqueue(
        Job::new("jobs", &msg("q.add", json!([1000, 1])))
            .unwrap()
            .priority(3),
    )
    .await
    .unwrap();
    let delayed = Instant::now();
    q.enqueue(
        Job::new("jobs", &msg("q.add", json!([2000, 1])))
            .unwrap()
            .delay(Duration::from_millis(700)),
    )
    .await
    .unwrap();
    // SQL, as any client would.
    let c = fx.client().await.unwrap();
    let id: i64 = c
        .query_one(
            "SELECT dispatcher.enqueue('jobs', '{\"task\": \"q.add\", \"args\": [3000, 1]}')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(id > 0);
    let e = c
        .query_one("SELECT dispatcher.enqueue('jobs', '{\"args\": []}')", &[])
        .await
        .unwrap_err();
    let message = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("\"task\" string"), "{e:?}");
    svc.wait_for_finished(303, WAIT).await.unwrap();
    let calls = svc.history(&Default::default());
    let ok: Vec<&Call> = calls
        .iter()
        .filter(|c| c.outcome == Some(Outcome::Ok))
        .collect();
    assert_eq!(ok.len(), 303, "{calls:?}");
    let mut results: Vec<i64> = ok
        .iter()
        .filter_map(|c| c.result.as_ref()?.as_i64())
        .collect();
    results.sort_unstable();
    results.dedup();
    assert_eq!(results.len(), 303, "every job once");
    assert!(ok.iter().all(|c| c.attempt == Some(1)));
    let late = ok.iter().find(|c| c.result == Some(json!(2001))).unwrap();
    let waited = late.started_at.unwrap() - late.received_at.unwrap();
    assert!(
        waited < 0.5,
        "run_at is the queue's business, not a delay in the service"
    );
    assert!(delayed.elapsed() >= Duration::from_millis(700));
    until_count(&fx, "SELECT count(*) FROM dispatcher.jobs", 0).await;
    until_count(&fx, "SELECT count(*) FROM dispatcher.claims", 0).await;
    let stats = q.stats().await.unwrap();
    assert!(
        stats
            .queues
            .iter()
            .all(|c| c.available == 0 && c.running == 0),
        "{stats:?}"
    );
    assert_eq!(stats.live_owners, 1);
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn retries_count_attempts_with_backoff_then_fail_with_every_error() {
    let fx = PgFixture::new().await.unwrap();
    let q = queue(&fx).await;
    let svc = service(q.clone(), 2).await;
    let p = Publisher::new(q.clone(), "jobs").unwrap();
    p.publish(flaky::call(2)).await.unwrap();
    p.publish(doomed::call()).await.unwrap();
    // flaky: 2 failures + 1 ok; doomed: 3 failures.
    svc.wait_for_finished(6, WAIT).await.unwrap();
    let calls = svc.history(&Default::default());
    let mut fl: Vec<&Call> = calls.iter().filter(|c| c.task == "q.flaky").collect();
    fl.sort_by_key(|c| c.attempt);
    let attempts: Vec<_> = fl.iter().map(|c| (c.attempt, c.outcome)).collect();
    assert_eq!(
        attempts,
        [
            (Some(1), Some(Outcome::Error)),
            (Some(2), Some(Outcome::Error)),
            (Some(3), Some(Outcome::Ok))
        ]
    );
    // Backoff 0.2 s × 2^(n-1), jitter 0.75–1.25: at least 0.15 s, then 0.3 s.
    let gap = |a: &Call, b: &Call| b.started_at.unwrap() - a.finished_at.unwrap();
    assert!(gap(fl[0], fl[1]) >= 0.15, "{}", gap(fl[0], fl[1]));
    assert!(gap(fl[1], fl[2]) >= 0.3, "{}", gap(fl[1], fl[2]));
    let doomed_calls = calls.iter().filter(|c| c.task == "q.doomed").count();
    assert_eq!(doomed_calls, 3);
    until_count(
        &fx,
        "SELECT count(*) FROM dispatcher.jobs WHERE state = 'failed'",
        1,
    )
    .await;
    let failed = q.failed(None, 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    let f = &failed[0];
    assert_eq!((f.task.as_str(), f.attempt), ("q.doomed", 3));
    let errors = f.errors.as_array().unwrap();
    let nums: Vec<_> = errors.iter().map(|e| e["attempt"].as_i64()).collect();
    assert_eq!(nums, [Some(1), Some(2), Some(3)]);
    assert!(errors
        .iter()
        .all(|e| e["error"].as_str().unwrap().contains("doomed")));
    // A manual retry runs it again (three more attempts), a discard removes it.
    assert_eq!(q.retry(&[f.id]).await.unwrap(), 1);
    svc.wait_for_finished(9, WAIT).await.unwrap();
    until_count(
        &fx,
        "SELECT count(*) FROM dispatcher.jobs WHERE state = 'failed'",
        1,
    )
    .await;
    assert_eq!(q.discard(&[f.id]).await.unwrap(), 1);
    assert_eq!(count(&fx, "SELECT count(*) FROM dispatcher.jobs").await, 0);
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn rejected_jobs_fail_at_once_and_are_not_retried() {
    let fx = PgFixture::new().await.unwrap();
    let q = queue(&fx).await;
    let svc = service(q.clone(), 2).await;
    q.enqueue(Job::new("jobs", &msg("q.nope", json!([]))).unwrap())
        .await
        .unwrap();
    q.enqueue(Job::new("jobs", &msg("q.add", json!(["x"]))).unwrap())
        .await
        .unwrap();
    svc.wait_for_finished(2, WAIT).await.unwrap();
    until_count(
        &fx,
        "SELECT count(*) FROM dispatcher.jobs WHERE state = 'failed'",
        2,
    )
    .await;
    let failed = q.failed(Some("jobs"), 10).await.unwrap();
    assert!(failed.iter().all(|f| f.attempt == 1), "{failed:?}");
    assert!(failed
        .iter()
        .any(|f| f.errors[0]["error"].as_str().unwrap().contains("q.nope")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(svc.history(&Default::default()).len(), 2, "not retried");
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_job_per_unique_key_under_eight_concurrent_publishers() {
    let fx = PgFixture::new().await.unwrap();
    let q = queue(&fx).await;
    let mut publishers = Vec::new();
    for _ in 0..8 {
        let q = q.clone();
        publishers.push(tokio::spawn(async move {
            let job = Job::from_submission(unique::call(7), "jobs").unwrap();
            q.enqueue(job).await.unwrap()
        }));
    }
    let mut ids = Vec::new();
    let mut fresh = 0;
    for p in publishers {
        let e = p.await.unwrap();
        ids.push(e.id);
        fresh += usize::from(!e.existing);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every publisher got the same job");
    assert_eq!(fresh, 1);
    // Other arguments are another job; the key is free again once the job ended.
    q.enqueue(Job::from_submission(unique::call(8), "jobs").unwrap())
        .await
        .unwrap();
    assert_eq!(count(&fx, "SELECT count(*) FROM dispatcher.jobs").await, 2);
    let svc = service(q.clone(), 2).await;
    svc.wait_for_finished(2, WAIT).await.unwrap();
    until_count(&fx, "SELECT count(*) FROM dispatcher.jobs", 0).await;
    let again = q
        .enqueue(Job::from_submission(unique::call(7), "jobs").unwrap())
        .await
        .unwrap();
    assert!(!again.existing);
    svc.wait_for_finished(3, WAIT).await.unwrap();
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn transactional_enqueue_commits_with_the_callers_data_only() {
    let fx = PgFixture::new().await.unwrap();
    let q = queue(&fx).await;
    let mut client = fx.client().await.unwrap();
    client
        .batch_execute("CREATE TABLE orders (id int PRIMARY KEY)")
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO orders VALUES (1)", &[])
        .await
        .unwrap();
    enqueue_in(
        &tx,
        "dispatcher",
        vec![Job::new("jobs", &msg("q.add", json!([1, 1]))).unwrap()],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(count(&fx, "SELECT count(*) FROM dispatcher.jobs").await, 0);
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO orders VALUES (2)", &[])
        .await
        .unwrap();
    enqueue_in(
        &tx,
        "dispatcher",
        vec![Job::new("jobs", &msg("q.add", json!([2, 2]))).unwrap()],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let svc = service(q.clone(), 2).await;
    svc.wait_for_finished(1, WAIT).await.unwrap();
    let calls = svc.history(&Default::default());
    assert_eq!(calls[0].result, Some(json!(4)));
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_concurrency_limit_holds_across_three_services() {
    let fx = PgFixture::new().await.unwrap();
    let mut services = Vec::new();
    let mut queues = Vec::new();
    for _ in 0..3 {
        let q = queue(&fx).await;
        queues.push(q.clone());
        services.push(service(q, 4).await);
    }
    let p = Publisher::new(queues[0].clone(), "jobs").unwrap();
    p.publish_batch((0..24).map(|_| slow::call(150)).collect::<Vec<_>>())
        .await
        .unwrap();
    p.publish_batch((0..200).map(|i| add::call(i, 0)).collect::<Vec<_>>())
        .await
        .unwrap();
    let c = fx.client().await.unwrap();
    let mut most = 0;
    let deadline = Instant::now() + WAIT;
    loop {
        let row = c
            .query_one(
                "SELECT coalesce(sum(unsettled), 0)::bigint FROM dispatcher.running WHERE task = 'q.slow'",
                &[],
            )
            .await
            .unwrap();
        let n: i64 = row.get(0);
        most = most.max(n);
        let left: i64 = c
            .query_one("SELECT count(*) FROM dispatcher.jobs", &[])
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "jobs left: {left}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        most <= 2,
        "at most 2 q.slow claimed at once across services, saw {most}"
    );
    assert!(most >= 1);
    let mut total = 0;
    let mut running_at_once = Vec::new();
    for s in &services {
        let calls = s.history(&Default::default());
        total += calls.len();
        for c in calls.iter().filter(|c| c.task == "q.slow") {
            running_at_once.push((c.started_at.unwrap(), c.finished_at.unwrap()));
        }
    }
    assert_eq!(total, 224);
    // The limit holds back q.slow only: every q.add ran before the q.slow backlog (24 × 150 ms
    // two at a time) was through.
    let last = |task: &str, f: fn(&Call) -> Option<f64>| {
        services
            .iter()
            .flat_map(|s| s.history(&Default::default()))
            .filter(|c| c.task == task)
            .filter_map(|c| f(&c))
            .fold(0.0f64, f64::max)
    };
    assert!(
        last("q.add", |c| c.finished_at) < last("q.slow", |c| c.started_at),
        "other tasks ran at full speed next to the limited one"
    );
    // From the Calls too: no moment with three q.slow running.
    for (start, _) in &running_at_once {
        let overlapping = running_at_once
            .iter()
            .filter(|(s, f)| s <= start && start < f)
            .count();
        assert!(
            overlapping <= 2,
            "{overlapping} q.slow Calls running at {start}"
        );
    }
    for s in services {
        s.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn claims_of_an_expired_lease_run_again_as_the_next_attempt() {
    let fx = PgFixture::new().await.unwrap();
    let mut short = config(&fx);
    short.lease = Duration::from_secs(1);
    // A consumer that takes jobs and never settles them, then goes away.
    let lost = Arc::new(PgQueue::connect(short.clone()).await.unwrap());
    lost.enqueue_many(
        (0..5)
            .map(|i| Job::new("jobs", &msg("q.add", json!([i, 0]))).unwrap())
            .collect(),
    )
    .await
    .unwrap();
    let mut sub = lost.subscribe(&["jobs".to_owned()]).await.unwrap();
    let mut taken = Vec::new();
    for _ in 0..5 {
        let m = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        taken.push(m);
    }
    assert!(taken
        .iter()
        .all(|m| m.delivery.as_ref().map(|d| d.attempt()) == Some(1)));
    drop(sub);
    drop(lost);
    // Not settled, lease lapsing: forget the handles (as a SIGKILL would).
    std::mem::forget(taken);
    let q = Arc::new(PgQueue::connect(short).await.unwrap());
    let started = Instant::now();
    let svc = service(q.clone(), 2).await;
    svc.wait_for_finished(5, WAIT).await.unwrap();
    let rescued_after = started.elapsed();
    let calls = svc.history(&Default::default());
    assert!(
        calls
            .iter()
            .all(|c| c.attempt == Some(2) && c.outcome == Some(Outcome::Ok)),
        "{calls:?}"
    );
    // lease (1 s) + poll (0.2 s) + a margin.
    assert!(rescued_after < Duration::from_secs(5), "{rescued_after:?}");
    until_count(&fx, "SELECT count(*) FROM dispatcher.jobs", 0).await;
    let status = svc.control("status", Default::default()).await.unwrap();
    let brokers = status["main"]["brokers"].as_array().unwrap();
    assert_eq!(brokers[0]["broker"], json!("pg_queue"));
    assert_eq!(brokers[0]["rescued"], json!(5));
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_gives_back_jobs_that_had_not_started() {
    let fx = PgFixture::new().await.unwrap();
    let q = queue(&fx).await;
    let svc = service(q.clone(), 1).await;
    let p = Publisher::new(q.clone(), "jobs").unwrap();
    p.publish_batch((0..6).map(|_| slow::call(300)).collect::<Vec<_>>())
        .await
        .unwrap();
    until_count(
        &fx,
        "SELECT coalesce(sum(unsettled), 0)::bigint FROM dispatcher.running",
        2,
    )
    .await;
    svc.shutdown().await.unwrap();
    drop(p);
    assert_eq!(Arc::strong_count(&q), 1);
    drop(q);
    // A queue that closes ends its lease at once (nothing waits for it to lapse).
    until_count(
        &fx,
        "SELECT count(*) FROM dispatcher.owners WHERE lease_until >= now()",
        0,
    )
    .await;
    // What had not run is available again, its attempt not counted.
    let q = queue(&fx).await;
    let svc = service(q.clone(), 4).await;
    let deadline = Instant::now() + WAIT;
    let mut done: HashMap<Option<u32>, usize> = HashMap::new();
    while Instant::now() < deadline {
        if count(&fx, "SELECT count(*) FROM dispatcher.jobs").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for c in svc.history(&Default::default()) {
        *done.entry(c.attempt).or_default() += 1;
    }
    assert_eq!(count(&fx, "SELECT count(*) FROM dispatcher.jobs").await, 0);
    assert!(done.values().sum::<usize>() >= 4, "{done:?}");
    assert!(
        done.keys().all(|a| *a == Some(1)),
        "released jobs keep their attempt: {done:?}"
    );
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn signed_jobs_are_verified_when_they_run() {
    use dispatcher_core::signing::SigningKey;
    let fx = PgFixture::new().await.unwrap();
    let q = queue(&fx).await;
    let key = SigningKey::new(b"a secret of at least sixteen bytes").unwrap();
    let svc = Service::builder()
        .registry(registry())
        .broker(q.clone())
        .channels(["jobs"])
        .pool(InProcessPool::new(2))
        .require_signatures(key.clone())
        .start()
        .await
        .unwrap();
    let signed = Publisher::new(q.clone(), "jobs").unwrap().with_signing(key);
    signed.publish(add::call(20, 22)).await.unwrap();
    // Unsigned: refused by the service, failed at once in the table.
    Publisher::new(q.clone(), "jobs")
        .unwrap()
        .publish(add::call(1, 1))
        .await
        .unwrap();
    svc.wait_for_finished(2, WAIT).await.unwrap();
    let calls = svc.history(&Default::default());
    assert!(
        calls.iter().any(|c| c.result == Some(json!(42))),
        "{calls:?}"
    );
    assert!(calls.iter().any(|c| c.outcome == Some(Outcome::Rejected)));
    until_count(
        &fx,
        "SELECT count(*) FROM dispatcher.jobs WHERE state = 'failed'",
        1,
    )
    .await;
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn scheduled_lists_future_jobs_soonest_first_one_per_message() {
    use std::time::{SystemTime, UNIX_EPOCH};
    let fx = PgFixture::new().await.unwrap();
    // No service: nothing claims the due jobs, which must not be listed all the same.
    let q = queue(&fx).await;
    let job = |queue: &str, n: i64| Job::new(queue, &msg("q.add", json!([n, 0]))).unwrap();
    let epoch = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let now = SystemTime::now();
    let at = |secs: u64| now + Duration::from_secs(secs);
    q.enqueue(job("jobs", 60).run_at(at(60))).await.unwrap();
    q.enqueue(job("jobs", 30).run_at(at(30))).await.unwrap();
    q.enqueue(job("other", 90).run_at(at(90))).await.unwrap();
    // Due now, and due since a minute: not scheduled.
    q.enqueue(job("jobs", 0)).await.unwrap();
    q.enqueue(job("jobs", -60).run_at(now - Duration::from_secs(60)))
        .await
        .unwrap();
    // Two jobs of one task and one run_at enqueued together share a row: two entries.
    let batch = q
        .enqueue_many(vec![
            job("jobs", 45).run_at(at(45)),
            job("jobs", 46).run_at(at(45)),
        ])
        .await
        .unwrap();
    assert_eq!(batch.len(), 1, "one row: {batch:?}");
    // A job waiting for its retry: attempts already made are shown.
    let c = fx.client().await.unwrap();
    let retried: i64 = c
        .query_one(
            "SELECT dispatcher.enqueue('jobs', '{\"task\": \"q.add\", \"args\": [75, 0]}',
                                       now() + interval '75 seconds')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    c.execute(
        "UPDATE dispatcher.jobs SET attempt = 2 WHERE id = $1",
        &[&retried],
    )
    .await
    .unwrap();

    let first = |jobs: &[dispatcher_broker_pg::queue::ScheduledJob]| -> Vec<(String, i64, i32)> {
        jobs.iter()
            .map(|j| {
                let m: serde_json::Value = serde_json::from_str(&j.message).unwrap();
                (j.queue.clone(), m["args"][0].as_i64().unwrap(), j.attempt)
            })
            .collect()
    };
    let all = q.scheduled(None, 100).await.unwrap();
    assert_eq!(
        first(&all),
        [
            ("jobs".to_owned(), 30, 0),
            ("jobs".to_owned(), 45, 0),
            ("jobs".to_owned(), 46, 0),
            ("jobs".to_owned(), 60, 0),
            ("jobs".to_owned(), 75, 2),
            ("other".to_owned(), 90, 0),
        ],
        "{all:#?}"
    );
    assert!(all.iter().all(|j| j.task == "q.add"), "{all:#?}");
    assert_eq!(
        (all[1].id, all[1].index, all[2].id, all[2].index),
        (batch[0].id, 0, batch[0].id, 1)
    );
    assert_eq!((all[4].id, all[4].index), (retried, 0));
    for (j, secs) in all.iter().zip([30, 45, 45, 60, 75, 90]) {
        // Microsecond timestamps; the SQL one is the server's clock, the others ours.
        let off = (j.run_at - epoch(at(secs))).abs();
        assert!(off < 2.0, "{j:?} due {secs} s from now, {off} s off");
    }
    let json = serde_json::to_value(&all[0]).unwrap();
    for field in ["id", "queue", "task", "attempt", "message", "run_at"] {
        assert!(json.get(field).is_some(), "{field} missing: {json}");
    }

    // Of one queue; limited (a batch row cut in the middle); nothing.
    let other = q.scheduled(Some("other"), 100).await.unwrap();
    assert_eq!(first(&other), [("other".to_owned(), 90, 0)]);
    let two = q.scheduled(None, 2).await.unwrap();
    assert_eq!(first(&two), first(&all[..2]));
    assert!(q.scheduled(None, 0).await.unwrap().is_empty());
    assert!(q.scheduled(Some("nope"), 10).await.unwrap().is_empty());
    // The free function, on the caller's connection, agrees.
    let free = dispatcher_broker_pg::queue::scheduled(&c, "dispatcher", Some("jobs"), 3)
        .await
        .unwrap();
    assert_eq!(free, all[..3]);
    assert!(
        dispatcher_broker_pg::queue::scheduled(&c, "Bad-Schema", None, 3)
            .await
            .is_err()
    );
}
