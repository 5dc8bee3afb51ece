//! The Prometheus endpoint (`[metrics] address`, a host name accepted): every documented metric
//! exported with its `# HELP` line, call counters by outcome and task (the `task` label bounded
//! to registered names), the pool and queue gauges, control and broker self-check counters.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dispatcher_broker_pg::queue::{Job, PgQueue};
use dispatcher_core::TaskMessage;
use serde_json::json;

use crate::support::{free_port, metric, scrape, start, WAIT};

/// Metric names in the first column of the metrics tables of `text` (markdown, or `//!` docs).
fn documented_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start_matches("//!").trim();
        let Some(first) = line
            .strip_prefix("| `dispatcher_")
            .and_then(|_| line.split('|').nth(1))
        else {
            continue;
        };
        for (i, part) in first.split('`').enumerate() {
            if i % 2 == 1 && part.starts_with("dispatcher_") && !part.contains('*') {
                names.insert(part.to_owned());
            }
        }
    }
    names
}

/// Every metric the README and the crates' docs name.
fn documented() -> BTreeSet<String> {
    let mut names = documented_in(include_str!("../../../README.md"));
    let readme = names.len();
    names.extend(documented_in(include_str!(
        "../../../dispatcher-runtime/src/metrics.rs"
    )));
    names.extend(documented_in(include_str!(
        "../../../dispatcher-broker-pg/src/metrics.rs"
    )));
    assert!(readme >= 20 && names.len() >= 26, "{names:?}");
    names
}

pub async fn metrics_endpoint_counts_calls() {
    let port = free_port();
    let mut svc = start(&format!(
        "[metrics]\naddress = \"localhost:{port}\"\n[queue]\nenabled = true\n"
    ))
    .await;
    let p = svc.publisher();
    for i in 0..5 {
        let mut m = TaskMessage::new("srv.add");
        m.args = vec![json!(i), json!(1)];
        p.publish_message(svc.channel.clone(), m).await.unwrap();
    }
    p.publish_message(svc.channel.clone(), TaskMessage::new("srv.nope"))
        .await
        .unwrap();
    let mut bad = TaskMessage::new("srv.add");
    bad.args = vec![json!("x")];
    p.publish_message(svc.channel.clone(), bad).await.unwrap();
    // A durable job (the queue's counters and gauges), waiting an hour so that it stays.
    let queue = PgQueue::connect_url(&svc.url).await.unwrap();
    let mut later = TaskMessage::new("srv.add");
    later.args = vec![json!(1), json!(2)];
    let job = Job::new(svc.channel.clone(), &later)
        .unwrap()
        .run_at(std::time::SystemTime::now() + Duration::from_secs(3600));
    queue.enqueue(job).await.unwrap();
    svc.wait_history(7).await;
    let addr = format!("localhost:{port}");
    let documented = documented();
    // Counters are exported at once; gauges once a second, the queue's every 10 s.
    let t = Instant::now();
    let text = loop {
        let text = scrape(&addr).await;
        let missing: Vec<&String> = documented
            .iter()
            .filter(|n| !text.contains(&format!("# HELP {n} ")))
            .collect();
        if missing.is_empty()
            && text.contains("dispatcher_queue_jobs{")
            && metric(&text, "dispatcher_workers{status=\"idle\"}") == Some(1.0)
            && metric(
                &text,
                "dispatcher_finished_total{outcome=\"ok\",task=\"srv.add\"}",
            ) == Some(5.0)
        {
            break text;
        }
        assert!(
            t.elapsed() < WAIT,
            "metrics never settled; without HELP: {missing:?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for name in &documented {
        let sampled = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .any(|l| l.starts_with(name.as_str()));
        assert!(sampled, "{name} is documented but has no sample:\n{text}");
    }
    // The task label: registered names, and one fixed value for the rest.
    assert_eq!(
        metric(
            &text,
            "dispatcher_finished_total{outcome=\"rejected\",task=\"srv.add\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "dispatcher_finished_total{outcome=\"rejected\",task=\"_other\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        !text.contains("srv.nope"),
        "unknown names never label:\n{text}"
    );
    assert_eq!(
        metric(
            &text,
            "dispatcher_finished_total{outcome=\"discarded\",task=\"srv.add\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "dispatcher_call_run_seconds_count{task=\"srv.add\"}"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "dispatcher_received_total"),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "dispatcher_dispatched_total"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(metric(&text, "dispatcher_queue_depth"), Some(0.0), "{text}");
    assert!(
        metric(&text, "dispatcher_control_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "dispatcher_broker_self_check_failures_total"),
        Some(0.0),
        "{text}"
    );
    svc.sigterm();
    assert_eq!(svc.wait_exit().await.code(), Some(0));
}
