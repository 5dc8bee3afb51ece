//! Every PostgreSQL backend of a running service frozen (SIGSTOP): what a hung server, a stuck
//! backend or a paused VM looks like. The service must notice through its deadlines and
//! self-checks, replace its LISTEN and publishing connections, and answer control commands and
//! run newly published tasks again within [`RECOVERY_LIMIT`], while the old backends stay
//! frozen.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::harness::{start, Frozen, Opts, Trials};
use dispatcher_core::Outcome;

/// From the freeze to a control reply and the tasks published then all finished.
const RECOVERY_LIMIT: Duration = Duration::from_secs(15);

pub fn all() -> Trials {
    trials![every_backend_frozen_is_replaced]
}

async fn every_backend_frozen_is_replaced() {
    let svc = start(Opts::default()).await;
    let before = svc.broker_status().await;
    let uuid = svc.publish("f.noop", vec![]).await;
    let call = svc.wait_call(&uuid, Duration::from_secs(10)).await;
    assert_eq!(call.outcome, Some(Outcome::Ok), "{call:?}");

    // Every connection of the service (its node id is their application_name): the listener,
    // the publishing connection(s), the control listener when it has one.
    let backends = svc.backends().await;
    let listener = before["listener_pid"].as_i64().unwrap() as i32;
    let publishers: Vec<i32> = before["publisher_pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap() as i32)
        .collect();
    assert!(
        backends.contains(&listener) && publishers.iter().all(|p| backends.contains(p)),
        "the service's backends {backends:?} lack its listener {listener} or publishers \
         {publishers:?}: {before}"
    );
    let frozen_pids: HashSet<i32> = backends.iter().copied().collect();
    let frozen: Vec<Frozen> = backends
        .iter()
        .map(|&pid| Frozen::freeze(pid).unwrap())
        .collect();
    let fault = Instant::now();

    // Probes published after the freeze: some may go to the frozen listener and be lost (LISTEN/
    // NOTIFY); the service must be back, answering, well within the limit.
    let mut probes = Vec::new();
    let answered = loop {
        probes.push(svc.publish("f.noop", vec![]).await);
        if let Some(v) = svc.control("alive", serde_json::json!({}), 1000).await {
            break (Instant::now(), v);
        }
        assert!(
            fault.elapsed() < RECOVERY_LIMIT,
            "no control reply within {RECOVERY_LIMIT:?} of freezing every backend; log:\n{}",
            svc.log_tail()
        );
    };
    let reply_after = answered.0 - fault;

    // Tasks published now all run, still within the limit.
    let post = svc.publish_batch("f.noop", 20, |_| vec![]).await;
    for uuid in &post {
        let left = RECOVERY_LIMIT.saturating_sub(fault.elapsed());
        let call = svc.wait_call(uuid, left).await;
        assert_eq!(call.outcome, Some(Outcome::Ok), "{call:?}");
    }
    let all_done = fault.elapsed();
    assert!(
        all_done < RECOVERY_LIMIT,
        "tasks published after the recovery finished {all_done:?} after the freeze; log:\n{}",
        svc.log_tail()
    );

    // The stuck connections were replaced (not waited for): new backends, counted.
    let after = svc.broker_status().await;
    let new_listener = after["listener_pid"].as_i64().unwrap() as i32;
    assert!(
        new_listener > 0 && !frozen_pids.contains(&new_listener),
        "the listener was not replaced: {after}"
    );
    assert!(
        after["recycles"].as_u64().unwrap() > before["recycles"].as_u64().unwrap(),
        "{after}"
    );
    let new_publishers: Vec<i64> = after["publisher_pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect();
    assert!(
        new_publishers
            .iter()
            .all(|p| !frozen_pids.contains(&(*p as i32))),
        "a frozen publishing connection is still in use: {after}"
    );
    assert!(
        after["publisher_replacements"].as_u64().unwrap() >= 1,
        "{after}"
    );
    assert!(
        after["self_check"]["failures"].as_u64().unwrap() >= 1,
        "{after}"
    );
    if let Some(control) = after.get("control_listener") {
        let pid = control["listener_pid"].as_i64().unwrap() as i32;
        assert!(
            pid > 0 && !frozen_pids.contains(&pid),
            "the control listener was not replaced: {after}"
        );
    }
    let now: HashSet<i32> = svc.backends().await.into_iter().collect();
    assert!(
        now.difference(&frozen_pids).count() >= 2,
        "no new backends: before {frozen_pids:?}, now {now:?}"
    );
    let ran = {
        let mut n = 0;
        for p in &probes {
            if svc.call(p).await.is_some() {
                n += 1;
            }
        }
        n
    };
    println!(
        "faults: every backend frozen ({} backends): control reply after {:.2}s, 20 new tasks \
         done after {:.2}s; probes during the outage {} (ran {ran}); recycles {}, publisher \
         replacements {}, self-check failures {}; reasons: listener {}, publisher {}",
        frozen_pids.len(),
        reply_after.as_secs_f64(),
        all_done.as_secs_f64(),
        probes.len(),
        after["recycles"],
        after["publisher_replacements"],
        after["self_check"]["failures"],
        after["last_recycle_reason"],
        after["last_publisher_replacement_reason"],
    );
    // Resume the old backends (they find their clients gone), then a graceful stop.
    drop(frozen);
    svc.stop().await;
}
