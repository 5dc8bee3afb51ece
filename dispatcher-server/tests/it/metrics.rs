//! The Prometheus endpoint (`[metrics] address`): call counters by outcome, the pool and queue
//! gauges, control and broker self-check counters.

use std::time::{Duration, Instant};

use dispatcher_core::TaskMessage;
use serde_json::json;

use crate::support::{free_port, metric, scrape, start, WAIT};

pub async fn metrics_endpoint_counts_calls() {
    let port = free_port();
    let mut svc = start(&format!("[metrics]\naddress = \"127.0.0.1:{port}\"\n")).await;
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
    svc.wait_history(7).await;
    let addr = format!("127.0.0.1:{port}");
    // counters are exported at once; gauges once a second
    let t = Instant::now();
    let text = loop {
        let text = scrape(&addr).await;
        if metric(&text, "dispatcher_workers{status=\"idle\"}") == Some(1.0)
            && metric(&text, "dispatcher_finished_total{outcome=\"ok\"}") == Some(5.0)
        {
            break text;
        }
        assert!(t.elapsed() < WAIT, "metrics never settled:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        metric(&text, "dispatcher_finished_total{outcome=\"rejected\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "dispatcher_finished_total{outcome=\"discarded\"}"),
        Some(0.0),
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
    assert_eq!(
        metric(&text, "dispatcher_call_run_seconds_count"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(metric(&text, "dispatcher_queue_depth"), Some(0.0), "{text}");
    assert!(
        metric(&text, "dispatcher_control_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "dispatcher_broker_self_checks_total").is_some()
            || t.elapsed() < Duration::from_secs(3),
        "{text}"
    );
    svc.sigterm();
    assert_eq!(svc.wait_exit().await.code(), Some(0));
}
