//! Recipe 2: a periodic task runs once per interval anywhere in the cluster.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use dispatcher::{CallFilter, Outcome};
use dispatcher_examples::cookbook::periodic::{self, PeriodicHandle, PeriodicScheduler, Win};
use dispatcher_testkit::postgres::PgFixture;

use crate::support::{database, tick, wait_for, Node};

const NAME: &str = "cookbook_test.every_500ms";
const INTERVAL: Duration = Duration::from_millis(500);
/// Float noise of `extract(epoch ...)::float8`.
const EPSILON: f64 = 1e-4;

async fn scheduler(fx: &PgFixture, node: &Node) -> PeriodicHandle {
    PeriodicScheduler::new(fx.url(), node.id.clone())
        .every(NAME, INTERVAL, tick::call(node.id.clone()))
        .check_every(Duration::from_millis(100))
        .start(node.service.clone())
        .await
        .unwrap()
}

/// The wins of all nodes, in claim order.
fn merged(handles: &[&PeriodicHandle]) -> Vec<Win> {
    let mut wins: Vec<Win> = handles.iter().flat_map(|h| h.wins()).collect();
    wins.sort_by(|a, b| a.claim.at.total_cmp(&b.claim.at));
    wins
}

/// Consecutive runs start at least one interval apart (database clock).
fn assert_spaced(wins: &[Win]) {
    for pair in wins.windows(2) {
        let gap = pair[1].claim.at - pair[0].claim.at;
        assert!(
            gap >= INTERVAL.as_secs_f64() - EPSILON,
            "two runs within one interval ({gap:.4} s apart): {pair:?}"
        );
    }
}

/// Every win's body ran once, as an ok Call on the winning node, and no body ran without a win.
async fn assert_bodies_ran(nodes: &[&Node], wins: &[Win]) {
    let filter = CallFilter {
        task: Some("cookbook_test.tick".into()),
        ..CallFilter::default()
    };
    for node in nodes {
        let mine: Vec<&Win> = wins.iter().filter(|w| w.node_id == node.id).collect();
        wait_for(Duration::from_secs(5), "the bodies to finish", || async {
            (node.service.history(&filter).len() >= mine.len()).then_some(())
        })
        .await;
        let calls: HashMap<String, _> = node
            .service
            .history(&filter)
            .into_iter()
            .map(|c| (c.uuid.clone(), c))
            .collect();
        assert_eq!(calls.len(), mine.len(), "{}: a body per win", node.id);
        for w in mine {
            let call = &calls[&w.uuid];
            assert_eq!(call.outcome, Some(Outcome::Ok), "{call:?}");
            assert_eq!(call.result, Some(node.id.clone().into()), "{call:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_run_a_periodic_task_once_per_interval() {
    let fx = database().await;
    let (a, b) = tokio::join!(Node::start(&fx, "node-a", 1), Node::start(&fx, "node-b", 1));
    let (pa, pb) = tokio::join!(scheduler(&fx, &a), scheduler(&fx, &b));
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::join!(pa.shutdown(), pb.shutdown());

    let wins = merged(&[&pa, &pb]);
    let by_node: BTreeMap<&str, usize> = wins.iter().fold(BTreeMap::new(), |mut m, w| {
        *m.entry(w.node_id.as_str()).or_default() += 1;
        m
    });
    println!(
        "{} runs in 3 s; per node {by_node:?}; at {:?}",
        wins.len(),
        wins.iter()
            .map(|w| format!("{:.3}", w.claim.at - wins[0].claim.at))
            .collect::<Vec<_>>()
    );
    // About one run per 500 ms over 3 s (a run is due every 500 ms and found within a check).
    assert!(
        (4..=8).contains(&wins.len()),
        "{} runs: {wins:?}",
        wins.len()
    );
    assert_spaced(&wins);
    // Each run number went to exactly one node, none skipped.
    let runs: Vec<i64> = wins.iter().map(|w| w.claim.run).collect();
    assert_eq!(runs, (1..=wins.len() as i64).collect::<Vec<_>>());
    // The row agrees.
    let client = fx.client().await.unwrap();
    let row = client
        .query_one(
            "SELECT runs, last_node FROM dispatcher_periodic WHERE name = $1",
            &[&NAME],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>("runs"), wins.len() as i64);
    assert_eq!(
        row.get::<_, Option<String>>("last_node").as_deref(),
        wins.last().map(|w| w.node_id.as_str())
    );
    assert_bodies_ran(&[&a, &b], &wins).await;
    tokio::join!(a.stop(), b.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_node_takes_over_when_the_winner_stops() {
    let fx = database().await;
    let (a, b) = tokio::join!(Node::start(&fx, "node-a", 1), Node::start(&fx, "node-b", 1));
    let pa = scheduler(&fx, &a).await;
    wait_for(Duration::from_secs(5), "node-a winning twice", || async {
        (pa.wins().len() >= 2).then_some(())
    })
    .await;
    pa.shutdown().await;
    let pb = scheduler(&fx, &b).await;
    wait_for(Duration::from_secs(5), "node-b winning twice", || async {
        (pb.wins().len() >= 2).then_some(())
    })
    .await;
    pb.shutdown().await;

    let (wa, wb) = (pa.wins(), pb.wins());
    assert!(wa.iter().all(|w| w.node_id == "node-a"));
    assert!(wb.iter().all(|w| w.node_id == "node-b"));
    let wins = merged(&[&pa, &pb]);
    assert_spaced(&wins);
    // node-b's runs all come after node-a's: it took over, it did not run alongside.
    assert_eq!(
        wins.iter().map(|w| w.node_id.as_str()).collect::<Vec<_>>(),
        wa.iter()
            .chain(&wb)
            .map(|w| w.node_id.as_str())
            .collect::<Vec<_>>()
    );
    assert_bodies_ran(&[&a, &b], &wins).await;
    tokio::join!(a.stop(), b.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_checks_have_exactly_one_winner() {
    let fx = database().await;
    let setup = fx.client().await.unwrap();
    periodic::register(&setup, NAME).await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(std::sync::Arc::new(fx.client().await.unwrap()));
    }
    for round in 1..=3_i64 {
        // 8 connections x 5 checks, all at once.
        let mut checks = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            for _ in 0..5 {
                let c = c.clone();
                checks.push(tokio::spawn(async move {
                    periodic::try_claim(&*c, NAME, Duration::from_secs(60), &format!("n{i}"))
                        .await
                        .unwrap()
                }));
            }
        }
        let mut won = Vec::new();
        for c in checks {
            won.extend(c.await.unwrap());
        }
        assert_eq!(won.len(), 1, "round {round}: {won:?}");
        assert_eq!(won[0].run, round);
        // Make the next run due.
        setup
            .execute(
                "UPDATE dispatcher_periodic SET last_run = last_run - interval '61 s' WHERE name = $1",
                &[&NAME],
            )
            .await
            .unwrap();
    }
}
