//! The service on PostgreSQL: tasks end to end, large arguments, other publishers, bad input.

use std::sync::Arc;
use std::time::Duration;

use dispatcher_core::{task, Broker, BrokerError, Outcome, Publisher, TaskRegistry};
use dispatcher_runtime::{InProcessPool, Service};
use dispatcher_testkit::expect::{assert_history, call};
use serde_json::json;

use crate::{broker, WAIT};

#[task(name = "pg.echo")]
fn echo(value: String) -> usize {
    value.len()
}

#[task(name = "pg.add")]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn registry() -> TaskRegistry {
    TaskRegistry::new().register::<echo>().register::<add>()
}

async fn psql(url: &str, sql: &str) -> std::process::Output {
    tokio::process::Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .await
        .expect("psql runs")
}

#[tokio::test]
async fn task_end_to_end_with_large_arguments() {
    let (_fx, b) = broker().await;
    let svc = Service::builder()
        .registry(registry())
        .broker(b.clone())
        .channels(["pg_e2e"])
        .pool(InProcessPool::new(2))
        .start()
        .await
        .unwrap();
    let p = Publisher::new(b.clone(), "pg_e2e").unwrap();
    p.publish(add::call(2, 3)).await.unwrap();
    let big = "é".repeat(50_000); // 100 KB of UTF-8
    p.publish(echo::call(big.clone())).await.unwrap();
    svc.wait_for_finished(2, WAIT).await.unwrap();
    let calls = svc.history(&Default::default());
    assert_history(&calls)
        .has(call().task("pg.add").outcome(Outcome::Ok))
        .has(call().task("pg.echo").outcome(Outcome::Ok));
    let e = calls.iter().find(|c| c.task == "pg.echo").unwrap();
    assert_eq!(e.result, Some(json!(big.len())));
    assert_eq!(e.channel, "pg_e2e");
    let status = svc.control("status", Default::default()).await.unwrap();
    assert_eq!(status["main"]["brokers"][0]["broker"], json!("pg_notify"));
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn messages_from_psql_and_bad_payloads() {
    let (fx, b) = broker().await;
    let svc = Service::builder()
        .registry(registry())
        .broker(b.clone())
        .channels(["pg_psql"])
        .pool(InProcessPool::new(2))
        .start()
        .await
        .unwrap();
    let url = fx.url();
    let sql = r#"
        SELECT pg_notify('pg_psql', '{"task": "pg.add", "args": [40], "kwargs": {"b": 2}}');
        SELECT pg_notify('pg_psql', 'pg.add');
        SELECT pg_notify('pg_psql', '{"task": "pg.add", "args": [1,');
        SELECT pg_notify('pg_psql', '{"task": "pg.nope"}');
        SELECT pg_notify('pg_psql', '{"task": "pg.add", "args": ["one", 2]}');
        SELECT pg_notify('pg_psql', '{"task": "pg.add", "args": [1, 2]}');
    "#;
    let out = psql(&url, sql).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    svc.wait_for_finished(6, WAIT).await.unwrap();
    let calls = svc.history(&Default::default());
    assert_history(&calls)
        .count(6)
        .has_exactly(2, call().task("pg.add").outcome(Outcome::Ok))
        .has(
            call()
                .task("pg.add")
                .outcome(Outcome::Rejected)
                .error_contains("missing argument `a`"),
        )
        .has(
            call()
                .outcome(Outcome::Rejected)
                .error_contains("invalid JSON"),
        )
        .has(
            call()
                .task("pg.nope")
                .outcome(Outcome::Rejected)
                .error_contains("unknown task"),
        )
        .has(
            call()
                .task("pg.add")
                .outcome(Outcome::Rejected)
                .error_contains("argument `a`: invalid type: string \"one\""),
        );
    let results: Vec<_> = calls.iter().filter_map(|c| c.result.clone()).collect();
    assert!(
        results.contains(&json!(42)) && results.contains(&json!(3)),
        "{results:?}"
    );
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn second_publisher_process_and_batches() {
    let (fx, b) = broker().await;
    let svc = Service::builder()
        .registry(registry())
        .broker(b.clone())
        .channels(["pg_batch"])
        .pool(InProcessPool::new(2))
        .start()
        .await
        .unwrap();
    // another process publishes 50 messages in one transaction
    let sql = "BEGIN; SELECT pg_notify('pg_batch', json_build_object('task', 'pg.add', 'args', json_build_array(i, 1))::text) FROM generate_series(1, 50) AS i; COMMIT;";
    let out = psql(&fx.url(), sql).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // and this one publishes a batch of 100 through its own broker
    let other = Arc::new(
        dispatcher_broker_pg::PgBroker::connect(&fx.url())
            .await
            .unwrap(),
    );
    let p = Publisher::new(other, "pg_batch").unwrap();
    p.publish_batch((0..100).map(|i| add::call(i, 0)))
        .await
        .unwrap();
    svc.wait_for_finished(150, WAIT).await.unwrap();
    let calls = svc.history(&Default::default());
    assert_history(&calls).has_exactly(150, call().task("pg.add").outcome(Outcome::Ok));
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_channel_names_are_errors_that_name_them() {
    let (_fx, b) = broker().await;
    let long = "x".repeat(64);
    let e = b.publish(&long, "{}").await.unwrap_err();
    assert!(
        matches!(&e, BrokerError::InvalidChannel { name, .. } if *name == long),
        "{e:?}"
    );
    assert!(e.to_string().contains("longer than 63 bytes"), "{e}");
    let e = b.subscribe(&[String::new()]).await.err().unwrap();
    assert!(matches!(e, BrokerError::InvalidChannel { .. }), "{e:?}");
    // quotes are fine: they are quoted as an identifier
    let name = "we\"ird chan".to_string();
    let mut sub = b.subscribe(std::slice::from_ref(&name)).await.unwrap();
    b.publish(&name, "hello").await.unwrap();
    use futures_util::StreamExt;
    let got = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.payload, "hello");
    assert_eq!(got.channel, name);
}

#[tokio::test]
async fn payloads_notify_cannot_carry_are_errors_of_their_kind() {
    let (_fx, b) = broker().await;
    // Over NOTIFY's limit: refused before anything is sent, in a batch too.
    let e = b.publish("pg_errors", &"x".repeat(8000)).await.unwrap_err();
    assert!(
        matches!(
            e,
            BrokerError::TooLarge {
                size: 8000,
                limit: 7999
            }
        ),
        "{e:?}"
    );
    let batch = [
        ("pg_errors".to_owned(), "fine".to_owned()),
        ("pg_errors".to_owned(), "y".repeat(9000)),
    ];
    let e = b.publish_batch(&batch).await.unwrap_err();
    assert!(
        matches!(e, BrokerError::TooLarge { size: 9000, .. }),
        "{e:?}"
    );
    b.publish("pg_errors", &"x".repeat(7999)).await.unwrap();
    // A payload the server refuses (text cannot hold NUL): `Other`, with the server's reason.
    let e = b.publish("pg_errors", "a\0b").await.unwrap_err();
    assert!(matches!(e, BrokerError::Other(_)), "{e:?}");
    let message = e.to_string();
    assert!(message.contains("PostgreSQL pg_notify failed"), "{message}");
    // The connection survives a refused statement.
    b.publish("pg_errors", "after").await.unwrap();
}

#[tokio::test]
async fn control_replies_from_two_services() {
    let (fx, b) = broker().await;
    let mut services = Vec::new();
    for node in ["node-a", "node-b"] {
        let own = Arc::new(
            dispatcher_broker_pg::PgBroker::connect(&fx.url())
                .await
                .unwrap(),
        );
        services.push(
            Service::builder()
                .registry(registry())
                .broker(own)
                .channels(["pg_ctl"])
                .node_id(node)
                .pool(InProcessPool::new(1))
                .start()
                .await
                .unwrap(),
        );
    }
    let replies = dispatcher_core::control::request(
        &*b,
        "pg_ctl",
        "alive",
        Default::default(),
        Some(2),
        WAIT,
    )
    .await
    .unwrap();
    let mut nodes: Vec<_> = replies
        .iter()
        .map(|r| r["node_id"].as_str().unwrap().to_owned())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["node-a", "node-b"]);
    // a large reply (the history of 200 Calls) arrives in chunks and is reassembled
    let p = Publisher::new(b.clone(), "pg_ctl").unwrap();
    p.publish_batch((0..100).map(|i| add::call(i, i)))
        .await
        .unwrap();
    for s in &services {
        s.wait_for_finished(100, WAIT).await.unwrap();
    }
    let replies = dispatcher_core::control::request(
        &*b,
        "pg_ctl",
        "history",
        serde_json::Map::new(),
        Some(2),
        WAIT,
    )
    .await
    .unwrap();
    assert_eq!(replies.len(), 2);
    for r in &replies {
        assert_eq!(
            r["calls"].as_array().unwrap().len(),
            100,
            "{}",
            r["node_id"]
        );
    }
    // fewer replies than expected: the request returns what came when the time is up
    let t = std::time::Instant::now();
    let replies = dispatcher_core::control::request(
        &*b,
        "pg_ctl",
        "alive",
        Default::default(),
        Some(3),
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    assert_eq!(replies.len(), 2);
    assert!(t.elapsed() >= Duration::from_millis(500));
    for s in services {
        s.shutdown().await.unwrap();
    }
}
