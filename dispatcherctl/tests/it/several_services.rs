//! Two services on one channel: `--expected-replies` stops the wait once they are in, one section
//! per node; without it both are listed once the replies go quiet; exit 1 when fewer reply than
//! expected.

use std::time::{Duration, Instant};

use dispatcher_testkit::postgres::PgFixture;

use crate::support::{ctl_raw, service, CHANNEL};

#[tokio::test]
async fn two_services_expected_replies() {
    let fx = PgFixture::new().await.unwrap();
    let a = service(&fx, "node-a", None).await;
    let b = service(&fx, "node-b", None).await;
    let url = fx.url();
    let base = [
        "--database-url",
        url.as_str(),
        "--channel",
        CHANNEL,
        "--json",
    ];

    let start = Instant::now();
    let mut args = base.to_vec();
    args.extend(["--timeout", "20", "--expected-replies", "2", "alive"]);
    let run = ctl_raw(&args).await.ok();
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "stops waiting once 2 replies are in"
    );
    let mut nodes: Vec<String> = run
        .json()
        .iter()
        .map(|r| r["node_id"].as_str().unwrap().to_owned())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["node-a", "node-b"]);
    assert_eq!(run.stderr, "", "{run:?}");

    // Human output: one section per node.
    let mut args = base[..4].to_vec();
    args.extend(["--timeout", "20", "--expected-replies", "2", "workers"]);
    let run = ctl_raw(&args).await.ok();
    assert!(run.stdout.contains("node node-a: 2 workers"), "{run:?}");
    assert!(run.stdout.contains("node node-b: 2 workers"), "{run:?}");

    // Without --expected-replies: both are listed, and the wait ends once the replies go quiet,
    // long before the timeout.
    let mut args = base.to_vec();
    args.extend(["--timeout", "30", "alive"]);
    let start = Instant::now();
    let run = ctl_raw(&args).await.ok();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "waited {:?} with --timeout 30",
        start.elapsed()
    );
    let mut nodes: Vec<String> = run
        .json()
        .iter()
        .map(|r| r["node_id"].as_str().unwrap().to_owned())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["node-a", "node-b"], "{run:?}");
    // The same in tables: one section per node.
    let mut args = base[..4].to_vec();
    args.extend(["--timeout", "30", "running"]);
    let run = ctl_raw(&args).await.ok();
    assert!(
        run.stdout.contains("node node-a: nothing running"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("node node-b: nothing running"),
        "{run:?}"
    );

    // Three expected, two services: exit 1, and what arrived is still printed.
    let mut args = base.to_vec();
    args.extend(["--timeout", "2", "--expected-replies", "3", "alive"]);
    let run = ctl_raw(&args).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json().len(), 2, "{run:?}");
    assert!(
        run.stderr.contains("only 2 of 3 expected replies"),
        "{run:?}"
    );
    assert!(run.stderr.contains(CHANNEL), "{run:?}");

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
