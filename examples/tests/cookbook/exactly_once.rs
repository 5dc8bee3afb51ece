//! Recipe 1: exactly one node runs each job; nothing is lost while no node runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dispatcher::{CallFilter, Outcome, TaskMessage};
use dispatcher_examples::cookbook::exactly_once::{self, JobRunner, JobRunnerConfig};
use dispatcher_testkit::postgres::PgFixture;
use serde_json::{json, Value};

use crate::support::{database, wait_for, work, Node};

fn runner_config(fx: &PgFixture, node: &str) -> JobRunnerConfig {
    let mut c = JobRunnerConfig::new(fx.url(), node);
    c.lease = Duration::from_secs(5);
    c.sweep_every = Duration::from_millis(500);
    c.max_in_flight = 4;
    c
}

async fn start_runner(node: &Node, config: JobRunnerConfig) -> JobRunner {
    JobRunner::start(config, Some(node.broker.clone()), node.service.clone())
        .await
        .unwrap()
}

#[derive(Debug)]
struct JobRow {
    state: String,
    claimed_by: Option<String>,
    attempts: i32,
    outcome: Option<String>,
    n: i64,
    result: Option<Value>,
}

async fn jobs(client: &tokio_postgres::Client) -> BTreeMap<i64, JobRow> {
    client
        .query(
            "SELECT id, state, claimed_by, attempts, outcome, (args->>0)::bigint AS n, result \
             FROM dispatcher_jobs ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get("id"),
                JobRow {
                    state: r.get("state"),
                    claimed_by: r.get("claimed_by"),
                    attempts: r.get("attempts"),
                    outcome: r.get("outcome"),
                    n: r.get("n"),
                    result: r.get("result"),
                },
            )
        })
        .collect()
}

async fn count(client: &tokio_postgres::Client, sql_where: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT count(*) FROM dispatcher_jobs WHERE {sql_where}"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The job id in a Call uuid `job-<id>-<attempt>`.
fn job_id(uuid: &str) -> i64 {
    uuid.split('-').nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_submitted_before_and_while_two_nodes_run_each_run_exactly_once() {
    let fx = database().await;
    let mut client = fx.client().await.unwrap();

    // 50 jobs while no node runs: they wait in the table (their NOTIFY reaches nobody).
    let tx = client.transaction().await.unwrap();
    for n in 0..50 {
        exactly_once::submit(&tx, work::call(n, 20)).await.unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(count(&client, "state = 'pending'").await, 50);

    // Two nodes start together.
    let (a, b) = tokio::join!(Node::start(&fx, "node-a", 2), Node::start(&fx, "node-b", 2));
    let (ra, rb) = tokio::join!(
        start_runner(&a, runner_config(&fx, "node-a")),
        start_runner(&b, runner_config(&fx, "node-b"))
    );

    // 50 more while they run, one statement (and one NOTIFY) each.
    for n in 50..100 {
        exactly_once::submit(&client, work::call(n, 20))
            .await
            .unwrap();
    }

    wait_for(Duration::from_secs(20), "100 jobs done", || async {
        (count(&client, "state <> 'done'").await == 0).then_some(())
    })
    .await;
    tokio::join!(
        ra.shutdown(Duration::from_secs(5)),
        rb.shutdown(Duration::from_secs(5))
    );

    let rows = jobs(&client).await;
    assert_eq!(rows.len(), 100, "no job lost, none added");
    let ns: BTreeSet<i64> = rows.values().map(|r| r.n).collect();
    assert_eq!(ns, (0..100).collect(), "every submitted job has its row");
    for (id, r) in &rows {
        assert_eq!(r.state, "done", "job {id}: {r:?}");
        assert_eq!(r.outcome.as_deref(), Some("ok"), "job {id}: {r:?}");
        assert_eq!(r.attempts, 1, "job {id} was claimed once: {r:?}");
        assert_eq!(r.result, Some(json!(r.n * 10)), "job {id}: {r:?}");
    }

    // Every job ran exactly once, as one Call on the node that claimed it.
    let mut calls: HashMap<i64, Vec<String>> = HashMap::new();
    for node in [&a, &b] {
        let filter = CallFilter {
            task: Some("cookbook_test.work".into()),
            ..CallFilter::default()
        };
        for call in node.service.history(&filter) {
            assert_eq!(call.outcome, Some(Outcome::Ok), "{call:?}");
            calls
                .entry(job_id(&call.uuid))
                .or_default()
                .push(node.id.clone());
        }
    }
    assert_eq!(calls.len(), 100, "a Call for every job");
    for (id, r) in &rows {
        assert_eq!(
            calls.get(id),
            Some(&vec![r.claimed_by.clone().unwrap()]),
            "job {id} ran exactly once, on the node that claimed it"
        );
    }
    let by_node: BTreeMap<&str, usize> = rows.values().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.claimed_by.as_deref().unwrap()).or_default() += 1;
        m
    });
    println!("jobs per node: {by_node:?}");
    assert_eq!(
        by_node.keys().copied().collect::<Vec<_>>(),
        ["node-a", "node-b"],
        "both nodes did work"
    );
    for (r, name) in [(&ra, "node-a"), (&rb, "node-b")] {
        let s = r.stats();
        assert_eq!(s.claimed, s.done, "{name}: {s:?}");
        assert_eq!((s.failed, s.released, s.lost), (0, 0, 0), "{name}: {s:?}");
    }
    tokio::join!(a.stop(), b.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_never_take_a_row_twice() {
    let fx = database().await;
    let client = fx.client().await.unwrap();
    client
        .execute(
            "INSERT INTO dispatcher_jobs (task, args) \
             SELECT 'cookbook_test.work', jsonb_build_array(n, 0) FROM generate_series(1, 400) n",
            &[],
        )
        .await
        .unwrap();
    let mut claimers = Vec::new();
    for i in 0..6 {
        let c = fx.client().await.unwrap();
        claimers.push(tokio::spawn(async move {
            let node = format!("claimer-{i}");
            let mut got = Vec::new();
            loop {
                let jobs = exactly_once::claim(&c, &node, 7, Duration::from_secs(60))
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    return got;
                }
                got.extend(jobs.into_iter().map(|j| (j.id, j.attempt)));
            }
        }));
    }
    let mut all = Vec::new();
    let mut claimers_with_rows = 0;
    for c in claimers {
        let got = c.await.unwrap();
        claimers_with_rows += usize::from(!got.is_empty());
        all.extend(got);
    }
    let ids: BTreeSet<i64> = all.iter().map(|(id, _)| *id).collect();
    assert_eq!(all.len(), 400, "400 claims in all");
    assert_eq!(ids.len(), 400, "no row claimed twice");
    assert!(all.iter().all(|(_, attempt)| *attempt == 1));
    assert_eq!(count(&client, "state = 'running'").await, 400);
    println!("{claimers_with_rows} of 6 claimers got rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_notify_wakes_an_idle_node_at_once() {
    let fx = database().await;
    let client = fx.client().await.unwrap();
    let node = Node::start(&fx, "node-a", 1).await;
    let mut config = runner_config(&fx, "node-a");
    // No sweep during the test: only the NOTIFY can start the claim.
    config.sweep_every = Duration::from_secs(3600);
    let runner = start_runner(&node, config).await;
    // The start-up claims (nothing to claim yet) are over before the job is submitted.
    wait_for(Duration::from_secs(5), "the start-up claims", || async {
        (runner.stats().claim_rounds >= 2).then_some(())
    })
    .await;
    let id = exactly_once::submit(&client, work::call(7, 0))
        .await
        .unwrap();
    wait_for(Duration::from_secs(5), "the job done", || async {
        (count(&client, &format!("id = {id} AND state = 'done'")).await == 1).then_some(())
    })
    .await;
    let s = runner.stats();
    assert!(s.wakeups >= 1, "{s:?}");
    assert_eq!(s.done, 1, "{s:?}");
    runner.shutdown(Duration::from_secs(5)).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweep_claims_rows_inserted_without_a_notify() {
    let fx = database().await;
    let client = fx.client().await.unwrap();
    let node = Node::start(&fx, "node-a", 2).await;
    let mut config = runner_config(&fx, "node-a");
    config.sweep_every = Duration::from_millis(200);
    // No broker: the periodic claim alone.
    let runner = JobRunner::start(config, None, node.service.clone())
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO dispatcher_jobs (task, args) \
             SELECT 'cookbook_test.work', jsonb_build_array(n, 0) FROM generate_series(1, 10) n",
            &[],
        )
        .await
        .unwrap();
    wait_for(Duration::from_secs(10), "10 jobs done", || async {
        (count(&client, "state = 'done'").await == 10).then_some(())
    })
    .await;
    let s = runner.stats();
    assert_eq!((s.wakeups, s.done), (0, 10), "{s:?}");
    runner.shutdown(Duration::from_secs(5)).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_of_a_dead_node_run_elsewhere_after_their_lease_and_live_leases_hold() {
    let fx = database().await;
    let client = fx.client().await.unwrap();
    // Three jobs claimed by nodes that are not running: one lease expired a second ago, one
    // expires in 1.5 s, one in an hour (a node that is merely busy).
    let inserted = client
        .query(
            "INSERT INTO dispatcher_jobs (task, args, state, claimed_by, attempts, claimed_at, lease_until) VALUES \
             ('cookbook_test.work', '[1, 0]', 'running', 'dead-node', 1, now() - interval '10 s', now() - interval '1 s'), \
             ('cookbook_test.work', '[2, 0]', 'running', 'dying-node', 1, now(), now() + interval '1.5 s'), \
             ('cookbook_test.work', '[3, 0]', 'running', 'busy-node', 1, now(), now() + interval '1 hour') \
             RETURNING id, extract(epoch FROM lease_until)::float8 AS lease_until",
            &[],
        )
        .await
        .unwrap();
    let lease_of: Vec<(i64, f64)> = inserted
        .iter()
        .map(|r| (r.get("id"), r.get("lease_until")))
        .collect();
    let node = Node::start(&fx, "node-live", 2).await;
    let mut config = runner_config(&fx, "node-live");
    config.sweep_every = Duration::from_millis(200);
    let runner = start_runner(&node, config).await;

    wait_for(
        Duration::from_secs(10),
        "the two expired jobs done",
        || async { (count(&client, "state = 'done'").await == 2).then_some(()) },
    )
    .await;
    // Long enough for a wrong claim of the busy node's job to show.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let rows = jobs(&client).await;
    for (id, lease_until) in &lease_of[..2] {
        let r = &rows[id];
        assert_eq!(
            (r.state.as_str(), r.claimed_by.as_deref(), r.attempts),
            ("done", Some("node-live"), 2),
            "job {id}: {r:?}"
        );
        let claimed_at: f64 = client
            .query_one(
                "SELECT extract(epoch FROM claimed_at)::float8 FROM dispatcher_jobs WHERE id = $1",
                &[id],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            claimed_at >= *lease_until,
            "job {id} was taken only after its lease ended ({claimed_at} >= {lease_until})"
        );
    }
    let busy = &rows[&lease_of[2].0];
    assert_eq!(
        (
            busy.state.as_str(),
            busy.claimed_by.as_deref(),
            busy.attempts
        ),
        ("running", Some("busy-node"), 1),
        "a live lease is not taken: {busy:?}"
    );
    let calls = node.service.history(&CallFilter {
        task: Some("cookbook_test.work".into()),
        ..CallFilter::default()
    });
    let uuids: BTreeSet<String> = calls.iter().map(|c| c.uuid.clone()).collect();
    let expected: BTreeSet<String> = lease_of[..2]
        .iter()
        .map(|(id, _)| format!("job-{id}-2"))
        .collect();
    assert_eq!(uuids, expected, "each taken-over job ran once here");
    runner.shutdown(Duration::from_secs(5)).await;
    node.stop().await;
}

/// A cookbook-exactly-once node process; killed when dropped, its log printed if the test fails.
struct NodeProcess {
    child: Child,
    log: PathBuf,
}

impl NodeProcess {
    fn start(fx: &PgFixture, node_id: &str) -> NodeProcess {
        let log = std::env::temp_dir().join(format!("{}-{node_id}.log", fx.database()));
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cookbook-exactly-once"))
            .args(["--database-url", &fx.url(), "--node-id", node_id])
            .args(["--workers", "1", "--lease-ms", "1500", "--sweep-ms", "300"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        NodeProcess { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- log of {}:\n{}", self.log.display(), self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_process_killed_mid_job_loses_the_job_to_another_node() {
    let fx = database().await;
    let client = fx.client().await.unwrap();
    let mut one = NodeProcess::start(&fx, "node-1");
    // cookbook.work(n, ms) of the binary: works 2 s and returns n.
    let mut message = TaskMessage::new("cookbook.work");
    message.args = vec![json!(7), json!(2000)];
    let id = exactly_once::submit_message(&client, &message)
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(15),
        "node-1 running the job",
        || async {
            let n = count(
                &client,
                &format!("id = {id} AND state = 'running' AND claimed_by = 'node-1'"),
            )
            .await;
            (n == 1).then_some(())
        },
    )
    .await;
    // SIGKILL: no shutdown, no outcome recorded, no lease renewed.
    one.child.kill().unwrap();
    one.child.wait().unwrap();
    let mut two = NodeProcess::start(&fx, "node-2");
    wait_for(
        Duration::from_secs(15),
        "node-2 finishing the job",
        || async {
            (count(&client, &format!("id = {id} AND state = 'done'")).await == 1).then_some(())
        },
    )
    .await;
    let rows = jobs(&client).await;
    let r = &rows[&id];
    assert_eq!(
        (r.claimed_by.as_deref(), r.attempts, r.outcome.as_deref()),
        (Some("node-2"), 2, Some("ok")),
        "{r:?}"
    );
    assert_eq!(r.result, Some(json!(7)));
    // A graceful stop of node-2.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(two.child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_for(Duration::from_secs(15), "node-2 to exit", || {
        let s = two.child.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(
        status.success(),
        "node-2 exited with {status}:\n{}",
        two.log()
    );
    let log = two.log();
    assert!(log.contains("claimed jobs"), "{log}");
    drop(one);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_carries_on_after_its_database_connections_are_cut() {
    let fx = database().await;
    let client = fx.client().await.unwrap();
    let node = Node::start(&fx, "node-a", 2).await;
    let mut config = runner_config(&fx, "node-a");
    config.sweep_every = Duration::from_millis(300);
    let runner = start_runner(&node, config).await;
    for n in 0..5 {
        exactly_once::submit(&client, work::call(n, 0))
            .await
            .unwrap();
    }
    wait_for(Duration::from_secs(10), "5 jobs done", || async {
        (count(&client, "state = 'done'").await == 5).then_some(())
    })
    .await;
    // Cut every other connection to the database: the runner's and the broker's.
    let cut: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        cut >= 2,
        "the runner's and the broker's connections ({cut})"
    );
    for n in 5..10 {
        exactly_once::submit(&client, work::call(n, 0))
            .await
            .unwrap();
    }
    wait_for(Duration::from_secs(15), "10 jobs done", || async {
        (count(&client, "state = 'done'").await == 10).then_some(())
    })
    .await;
    let s = runner.stats();
    assert_eq!((s.done, s.failed, s.lost), (10, 0, 0), "{s:?}");
    runner.shutdown(Duration::from_secs(5)).await;
    node.stop().await;
}
