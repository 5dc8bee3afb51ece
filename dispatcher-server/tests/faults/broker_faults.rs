//! Faults of the LISTEN connection and of PostgreSQL itself, while messages flow.
//!
//! Notifications sent while the service has no working LISTEN connection are not delivered: that
//! is LISTEN/NOTIFY. So the tests assert what the service can promise: (a) everything it counted
//! as received is a finished Call in the history, (b) it recovers within the limit and messages
//! published after the recovery all run ok, (c) messages went missing only inside the outage
//! window; and they print how many went missing.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::harness::{account, assert_all_ok, start, Flow, Frozen, Opts, Sent, Svc, Trials};
use dispatcher_core::Outcome;

/// The most a recovery may take (fault, or server back up, to a working listener).
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);
/// One message every this often while a fault is injected.
const FLOW_INTERVAL: Duration = Duration::from_millis(5);
/// A message sent this long before the fault may already be lost with the connection.
const BEFORE_FAULT: Duration = Duration::from_millis(250);

pub fn all() -> Trials {
    trials![
        backend_terminated_while_messages_flow,
        listener_frozen_and_resumed_while_messages_flow,
        postgres_restarted_while_messages_flow,
    ]
}

fn recycles(status: &serde_json::Value) -> u64 {
    status["recycles"].as_u64().unwrap_or(0)
}

/// Waits until the service answers a control command over a new LISTEN connection (more
/// recycles than `recycles_before`, connected). Returns when the reply arrived: the service was
/// listening when the request was committed, before that, so every message sent afterwards
/// reaches it. (Not when the request was started: the client may itself wait for its own
/// listener to come back before it publishes the request.)
async fn wait_recovered(
    svc: &Svc,
    recycles_before: u64,
    from: Instant,
    limit: Duration,
) -> Instant {
    loop {
        if let Some(v) = svc.control("main", serde_json::json!({}), 300).await {
            let answered = Instant::now();
            let b = &v["brokers"][0];
            if b["connected"] == true && recycles(b) > recycles_before {
                return answered;
            }
        }
        assert!(
            from.elapsed() < limit,
            "the service did not recover within {limit:?}; log:\n{}",
            svc.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The end of an outage test: publishes a batch after recovery, waits for everything to finish,
/// checks the accounting, and that messages went missing only inside `window`; prints numbers.
/// Returns when the lost messages were sent.
async fn finish(
    svc: &Svc,
    name: &str,
    sent: Vec<Sent>,
    window: (Instant, Instant),
    extra: String,
) -> Vec<Instant> {
    let post = svc.publish_batch("f.noop", 100, |_| vec![]).await;
    let mut known: HashSet<String> = sent.iter().map(|s| s.uuid.clone()).collect();
    known.extend(post.iter().cloned());
    let acc = account(svc, &known, Duration::from_secs(30)).await;
    assert_all_ok(&acc, &post, "messages published after the recovery");
    let flow_received: Vec<String> = sent
        .iter()
        .filter(|s| acc.calls.contains_key(&s.uuid))
        .map(|s| s.uuid.clone())
        .collect();
    assert_all_ok(&acc, &flow_received, "received flow messages");
    let publish_failed = sent.iter().filter(|s| !s.ok).count();
    let failed_but_received = sent
        .iter()
        .filter(|s| !s.ok && acc.calls.contains_key(&s.uuid))
        .count();
    let lost: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.ok && !acc.calls.contains_key(&s.uuid))
        .collect();
    let offset = |at: Instant| {
        if at < window.0 {
            -(window.0 - at).as_secs_f64()
        } else {
            (at - window.0).as_secs_f64()
        }
    };
    let (from, to) = (window.0 - BEFORE_FAULT, window.1);
    let outside: Vec<Instant> = lost
        .iter()
        .filter(|s| s.at < from || s.at > to)
        .map(|s| s.at)
        .collect();
    let span = match (lost.first(), lost.last()) {
        (Some(a), Some(b)) => format!(
            "sent from {:+.2}s to {:+.2}s of the fault",
            offset(a.at),
            offset(b.at)
        ),
        _ => "none".into(),
    };
    println!(
        "faults: {name}: flow sent={} (publish failed {publish_failed}, of which received \
         {failed_but_received}), received={}, lost in the outage={} ({span}), post-recovery \
         {}/{} ok; {}; {extra}",
        sent.len(),
        flow_received.len(),
        lost.len(),
        post.len(),
        post.len(),
        acc.counts
    );
    if !outside.is_empty() {
        let status = svc.broker_status().await;
        panic!(
            "{name}: {} published messages went missing outside the outage window (-{:?} .. \
             {:.2}s after the fault), at these offsets from the fault (s): first {:?}, last {:?}; \
             broker status {status}; log:\n{}",
            outside.len(),
            BEFORE_FAULT,
            (window.1 - window.0).as_secs_f64(),
            outside
                .iter()
                .take(10)
                .map(|a| offset(*a))
                .collect::<Vec<_>>(),
            outside
                .iter()
                .rev()
                .take(5)
                .map(|a| offset(*a))
                .collect::<Vec<_>>(),
            svc.log_tail()
        );
    }
    assert!(
        sent.len() > 100 && flow_received.len() > 100,
        "{name}: the flow was too thin to mean anything: sent {} received {}",
        sent.len(),
        flow_received.len()
    );
    lost.iter().map(|s| s.at).collect()
}

async fn backend_terminated_while_messages_flow() {
    let svc = start(Opts::default()).await;
    let before = svc.broker_status().await;
    let old_pid = before["listener_pid"].as_i64().unwrap() as i32;
    assert!(old_pid > 0, "no listener pid: {before}");
    let flow = Flow::start(&svc, "f.noop", vec![], FLOW_INTERVAL);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let admin = svc.fx.client().await.unwrap();
    let fault = Instant::now();
    let rows = admin
        .query("SELECT pg_terminate_backend($1)", &[&old_pid])
        .await
        .unwrap();
    let terminated: bool = rows[0].get(0);
    assert!(terminated, "pg_terminate_backend({old_pid}) returned false");
    let recovered = wait_recovered(&svc, recycles(&before), fault, RECOVERY_LIMIT).await;
    let recovery = recovered - fault;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = flow.stop().await;
    let after = svc.broker_status().await;
    assert_ne!(
        after["listener_pid"].as_i64(),
        Some(i64::from(old_pid)),
        "{after}"
    );
    finish(
        &svc,
        "backend terminated",
        sent,
        (fault, recovered),
        format!(
            "recovery {:.2}s; recycles {}; reason {}",
            recovery.as_secs_f64(),
            recycles(&after),
            after["last_recycle_reason"]
        ),
    )
    .await;
    svc.stop().await;
}

async fn listener_frozen_and_resumed_while_messages_flow() {
    let svc = start(Opts::default()).await;
    let before = svc.broker_status().await;
    let pid = before["listener_pid"].as_i64().unwrap() as i32;
    assert!(pid > 0, "no listener pid: {before}");
    let flow = Flow::start(&svc, "f.noop", vec![], FLOW_INTERVAL);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A short freeze, under the self-check timeout: notifications wait in PostgreSQL's queue
    // and arrive on resume; nothing may be lost and the connection stays.
    let frozen = Frozen::freeze(pid).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(frozen);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mid = svc.broker_status().await;
    assert_eq!(
        (mid["listener_pid"].as_i64(), recycles(&mid)),
        (Some(i64::from(pid)), recycles(&before)),
        "a 1 s freeze replaced the listener: before {before}, after {mid}"
    );

    // A long freeze: the self-check fails, the listener is replaced; then the old backend is
    // resumed (and finds its client gone).
    let frozen = Frozen::freeze(pid).unwrap();
    let fault = Instant::now();
    let recovered = wait_recovered(&svc, recycles(&mid), fault, RECOVERY_LIMIT).await;
    let recovery = recovered - fault;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(frozen);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = flow.stop().await;
    let after = svc.broker_status().await;
    assert_ne!(
        after["listener_pid"].as_i64(),
        Some(i64::from(pid)),
        "{after}"
    );
    assert!(
        after["last_recycle_reason"]
            .as_str()
            .unwrap_or("")
            .contains("self-check"),
        "the frozen listener was not caught by the self-check: {after}"
    );
    finish(
        &svc,
        "listener frozen (1 s, then until replaced)",
        sent,
        (fault, recovered),
        format!(
            "recovery (detection + reconnect) {:.2}s; self-check failures {}; reason {}",
            recovery.as_secs_f64(),
            after["self_check"]["failures"],
            after["last_recycle_reason"]
        ),
    )
    .await;
    svc.stop().await;
}

async fn postgres_restarted_while_messages_flow() {
    let svc = start(Opts {
        throwaway: true,
        ..Opts::default()
    })
    .await;
    let before = svc.broker_status().await;
    let flow = Flow::start(&svc, "f.noop", vec![], FLOW_INTERVAL);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fault = Instant::now();
    tokio::task::block_in_place(|| svc.fx.stop_server()).unwrap();
    let down_at = fault.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| svc.fx.start_server()).unwrap();
    let up = Instant::now();
    let recovered = wait_recovered(&svc, recycles(&before), up, RECOVERY_LIMIT).await;
    let recovery = recovered.saturating_duration_since(up);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = flow.stop().await;
    let after = svc.broker_status().await;
    let lost = finish(
        &svc,
        "PostgreSQL restarted",
        sent,
        (fault, recovered),
        format!(
            "stop took {:.2}s, down {:.2}s in all, recovery after the server was up {:.2}s \
             (after the fault {:.2}s); recycles {}; reason {}",
            down_at.as_secs_f64(),
            (up - fault).as_secs_f64(),
            recovery.as_secs_f64(),
            (recovered - fault).as_secs_f64(),
            recycles(&after),
            after["last_recycle_reason"]
        ),
    )
    .await;
    let down = fault + down_at;
    println!(
        "faults: PostgreSQL restarted: of the {} lost, {} were sent before the server was down \
         (committed, not yet delivered), {} while it was down, {} after it was back up and \
         before the service listened again",
        lost.len(),
        lost.iter().filter(|a| **a < down).count(),
        lost.iter().filter(|a| **a >= down && **a < up).count(),
        lost.iter().filter(|a| **a >= up).count()
    );
    // Calls keep working on the restarted server from a plain publish, too.
    let uuid = svc.publish("f.work", vec![serde_json::json!(1000)]).await;
    let call = svc.wait_call(&uuid, Duration::from_secs(10)).await;
    assert_eq!(call.outcome, Some(Outcome::Ok), "{call:?}");
    svc.stop().await;
}
