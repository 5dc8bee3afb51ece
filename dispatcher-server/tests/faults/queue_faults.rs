//! The durable queue under faults: nothing lost.
//!
//! Each test runs service processes that consume a durable queue (`[queue] enabled = true`)
//! while this process enqueues a steady flow of `f.job` jobs through a [`PgQueue`] client (a
//! batch of 5 every 5 ms, at least 5,000 jobs), injects one fault in the middle of the flow, then
//! waits until the queue is drained and accounts for every job by its id, from the jobs table
//! (nothing left: no job available, running, failed or canceled, no claim) and the services'
//! Call histories (and, for a SIGKILLed service, whose history is gone, from the ledger its
//! workers wrote: see `f.job`). The promise checked: every job whose enqueue returned Ok ran
//! exactly once and ended ok; a job whose enqueue failed ran at most once; the jobs a SIGKILLed
//! service held ran at least once, at most twice (printed as re-runs), the second time on
//! another service as a later attempt; a job whose worker was killed under it is retried per
//! its task's policy and ends ok. And a service's lease holds while it is busy: a lease that
//! lapses under load hands the jobs it runs to others, or back to itself, to run twice.
//!
//! [`PgQueue`]: dispatcher_broker_pg::queue::PgQueue

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use dispatcher_broker_pg::queue::Job;
use dispatcher_core::{Call, Outcome};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::harness::{
    drain_queue, job_id, job_message, queue_client, start, start_on, Enqueue, Frozen, Opts,
    QueueAccount, QueueFlow, Svc, Trials,
};

/// Jobs each test enqueues at least.
const JOBS: u64 = 5_000;
/// Jobs per enqueue (one row of the jobs table), and how often: 1,000 jobs a second.
const BATCH: u64 = 5;
const INTERVAL: Duration = Duration::from_millis(5);
/// What each job takes.
const MICROS: u64 = 200;
/// The lease of a service alone on its database (the default).
const LEASE: f64 = 30.0;
/// The lease when a service is SIGKILLed next to another: its jobs move after this long.
const SHORT_LEASE: f64 = 3.0;
/// The most a recovery (fault, or server back up, to a working wake-up listener) may take.
const RECOVERY_LIMIT: Duration = Duration::from_secs(15);
/// The most the flow may take to enqueue its jobs, and the queue to drain afterwards.
const FLOW_LIMIT: Duration = Duration::from_secs(60);
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// The flow goes on at least this long after a recovery.
const AFTER_RECOVERY: Duration = Duration::from_secs(1);

pub fn all() -> Trials {
    trials![
        queue_wake_listener_terminated,
        queue_wake_listener_frozen_and_resumed,
        queue_every_backend_frozen_and_resumed,
        queue_postgres_restarted_while_publishing,
        queue_service_sigkilled_next_to_another,
        queue_worker_sigkilled_mid_job,
        queue_lease_holds_under_a_sustained_flow,
    ]
}

fn queue_opts(lease: f64) -> Opts {
    Opts {
        queue_lease: Some(lease),
        ..Opts::default()
    }
}

fn recycles(status: &Value) -> u64 {
    status["recycles"].as_u64().unwrap_or(0)
}

fn listener_pid(status: &Value) -> i32 {
    let pid = status["listener_pid"].as_i64().unwrap_or(0) as i32;
    assert!(
        pid > 0,
        "no wake-up listener pid in the queue's status: {status}"
    );
    pid
}

/// Waits until the queue's wake-up listener was replaced (more recycles than `before`) and is
/// connected, and the queue's claim connection is up; returns when that was seen.
async fn wait_queue_recovered(svc: &Svc, before: u64, from: Instant, limit: Duration) -> Instant {
    loop {
        if let Some(v) = svc.control("main", json!({}), 300).await {
            let q = v["brokers"]
                .as_array()
                .and_then(|b| b.iter().find(|b| b["broker"] == "pg_queue"))
                .cloned()
                .unwrap_or_default();
            if q["connected"] == true && q["database_connected"] == true && recycles(&q) > before {
                return Instant::now();
            }
        }
        assert!(
            from.elapsed() < limit,
            "the queue did not recover within {limit:?}; log:\n{}",
            svc.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lets the flow run until it enqueued [`JOBS`] and for [`AFTER_RECOVERY`] after `recovered`.
async fn finish_flow(flow: QueueFlow, recovered: Instant) -> Vec<Enqueue> {
    flow.wait_sent(JOBS, FLOW_LIMIT).await;
    if let Some(left) = (recovered + AFTER_RECOVERY).checked_duration_since(Instant::now()) {
        tokio::time::sleep(left).await;
    }
    flow.stop().await
}

/// What a test allows beyond "every job whose enqueue returned Ok ran exactly once".
#[derive(Debug, Default)]
struct Allow {
    /// Jobs a SIGKILLed service held unsettled: they may run twice.
    rerun: HashSet<u64>,
    /// Runs that no history shows (a SIGKILLed service's ledger): job id → attempts.
    elsewhere: HashMap<u64, Vec<u32>>,
    /// Jobs whose Calls may end otherwise (a lost worker) before the one that ends ok.
    retried: HashSet<u64>,
}

/// The figures of a test.
#[derive(Debug, Default)]
struct Summary {
    sent: usize,
    enqueued_ok: usize,
    enqueue_errors: usize,
    errored_but_ran: usize,
    ran_ok: usize,
    /// Jobs that ran twice.
    reruns: usize,
    /// Ok Calls that ran as a later attempt (taken over after a lease, or retried).
    later_attempts: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "jobs sent={} (enqueue ok={}, errors at enqueue={} of which ran {}), ok={}, \
             re-runs={}, ok as a later attempt={}",
            self.sent,
            self.enqueued_ok,
            self.enqueue_errors,
            self.errored_but_ran,
            self.ran_ok,
            self.reruns,
            self.later_attempts
        )
    }
}

/// Checks every job of `sent` against the runs the histories (and `allow.elsewhere`) show.
fn check(name: &str, sent: &[Enqueue], acc: &QueueAccount, allow: &Allow) -> Summary {
    let mut s = Summary::default();
    let mut bad: Vec<String> = Vec::new();
    let mut known = HashSet::new();
    for e in sent {
        for id in e.ids.clone() {
            known.insert(id);
            s.sent += 1;
            let calls: &[Call] = acc.calls.get(&id).map_or(&[], |c| c.as_slice());
            let ok: Vec<&Call> = calls
                .iter()
                .filter(|c| c.outcome == Some(Outcome::Ok))
                .collect();
            s.later_attempts += ok.iter().filter(|c| c.attempt > Some(1)).count();
            let runs = ok.len() + allow.elsewhere.get(&id).map_or(0, Vec::len);
            s.ran_ok += usize::from(runs > 0);
            s.reruns += usize::from(runs > 1);
            let others: Vec<String> = calls
                .iter()
                .filter(|c| c.outcome != Some(Outcome::Ok))
                .map(|c| format!("{:?} (attempt {:?}): {:?}", c.outcome, c.attempt, c.error))
                .collect();
            if !others.is_empty() && !allow.retried.contains(&id) {
                bad.push(format!(
                    "job {id} has Calls that did not end ok: {others:?}"
                ));
            }
            let most = if allow.rerun.contains(&id) { 2 } else { 1 };
            match &e.error {
                None => {
                    s.enqueued_ok += 1;
                    if runs == 0 {
                        bad.push(format!("job {id} was enqueued (Ok) and never ran ok: lost"));
                    }
                }
                Some(_) => {
                    s.enqueue_errors += 1;
                    s.errored_but_ran += usize::from(runs > 0);
                }
            }
            if runs > most {
                let attempts: Vec<Option<u32>> = ok.iter().map(|c| c.attempt).collect();
                bad.push(format!(
                    "job {id} ran {runs} times (allowed {most}): ok Calls with attempts \
                     {attempts:?} on {:?}, elsewhere {:?}",
                    ok.iter().map(|c| c.node_id.as_str()).collect::<Vec<_>>(),
                    allow.elsewhere.get(&id)
                ));
            }
        }
    }
    for id in acc.calls.keys() {
        if !known.contains(id) {
            bad.push(format!("a Call of job {id}, which nobody enqueued"));
        }
    }
    assert!(
        bad.is_empty(),
        "{name}: {} violations of the queue's promise; first: {:#?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    assert!(s.sent as u64 >= JOBS, "{name}: the flow was too thin: {s}");
    s
}

async fn queue_wake_listener_terminated() {
    let svc = start(queue_opts(LEASE)).await;
    let client = queue_client(&svc.fx).await;
    let before = svc.queue_status().await;
    let pid = listener_pid(&before);
    let flow = QueueFlow::start(client, &svc.queue, 0, BATCH, INTERVAL, MICROS);
    flow.wait_sent(JOBS / 3, FLOW_LIMIT).await;
    let admin = svc.fx.client().await.unwrap();
    let fault = Instant::now();
    let terminated: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(terminated, "pg_terminate_backend({pid}) returned false");
    let recovered = wait_queue_recovered(&svc, recycles(&before), fault, RECOVERY_LIMIT).await;
    let sent = finish_flow(flow, recovered).await;
    let acc = drain_queue(&[&svc], DRAIN_LIMIT).await;
    let after = svc.queue_status().await;
    assert_ne!(listener_pid(&after), pid, "{after}");
    let s = check(
        "wake-up listener terminated",
        &sent,
        &acc,
        &Allow::default(),
    );
    println!(
        "faults: queue: wake-up listener terminated: {s}; recovery {:.2}s; reason {}; {}",
        (recovered - fault).as_secs_f64(),
        after["last_recycle_reason"],
        acc.counts[0]
    );
    svc.stop().await;
}

async fn queue_wake_listener_frozen_and_resumed() {
    let svc = start(queue_opts(LEASE)).await;
    let client = queue_client(&svc.fx).await;
    let before = svc.queue_status().await;
    let pid = listener_pid(&before);
    let flow = QueueFlow::start(client, &svc.queue, 0, BATCH, INTERVAL, MICROS);
    flow.wait_sent(JOBS / 4, FLOW_LIMIT).await;

    // A short freeze, under the self-check timeout: the listener stays.
    let frozen = Frozen::freeze(pid).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(frozen);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mid = svc.queue_status().await;
    assert_eq!(
        (listener_pid(&mid), recycles(&mid)),
        (pid, recycles(&before)),
        "a 1 s freeze replaced the wake-up listener: before {before}, after {mid}"
    );

    // A long freeze: the self-check replaces the listener (jobs keep coming by polling
    // meanwhile); then the old backend is resumed.
    let frozen = Frozen::freeze(pid).unwrap();
    let fault = Instant::now();
    let recovered = wait_queue_recovered(&svc, recycles(&mid), fault, RECOVERY_LIMIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(frozen);
    let sent = finish_flow(flow, recovered).await;
    let acc = drain_queue(&[&svc], DRAIN_LIMIT).await;
    let after = svc.queue_status().await;
    assert_ne!(listener_pid(&after), pid, "{after}");
    assert!(
        after["last_recycle_reason"]
            .as_str()
            .unwrap_or("")
            .contains("self-check"),
        "the frozen wake-up listener was not caught by the self-check: {after}"
    );
    let s = check("wake-up listener frozen", &sent, &acc, &Allow::default());
    println!(
        "faults: queue: wake-up listener frozen (1 s, then until replaced): {s}; recovery \
         (detection + reconnect) {:.2}s; {}",
        (recovered - fault).as_secs_f64(),
        acc.counts[0]
    );
    svc.stop().await;
}

async fn queue_every_backend_frozen_and_resumed() {
    const FREEZE: Duration = Duration::from_secs(5);
    let svc = start(queue_opts(LEASE)).await;
    let client = queue_client(&svc.fx).await;
    let flow = QueueFlow::start(client, &svc.queue, 0, BATCH, INTERVAL, MICROS);
    flow.wait_sent(JOBS / 3, FLOW_LIMIT).await;
    let notify = svc.broker_status().await;
    let queue = svc.queue_status().await;
    let backends = svc.backends().await;
    for (what, pid) in [
        (
            "NOTIFY listener",
            notify["listener_pid"].as_i64().unwrap_or(0) as i32,
        ),
        ("wake-up listener", listener_pid(&queue)),
    ] {
        assert!(
            backends.contains(&pid),
            "the {what} {pid} is not among the service's backends {backends:?}"
        );
    }
    assert!(
        backends.len() >= 4,
        "fewer backends than the service's listeners, claim and settle connections: {backends:?}"
    );
    let fault = Instant::now();
    let frozen: Vec<Frozen> = backends
        .iter()
        .map(|p| Frozen::freeze(*p).unwrap())
        .collect();
    tokio::time::sleep(FREEZE).await;
    drop(frozen);
    let resumed = Instant::now();
    // Serving again: the claim connection works and the wake-up listener is connected.
    let recovered = loop {
        let q = svc.queue_status().await;
        if q["connected"] == true && q["database_connected"] == true {
            break Instant::now();
        }
        assert!(
            resumed.elapsed() < RECOVERY_LIMIT,
            "the queue did not recover: {q}; log:\n{}",
            svc.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let sent = finish_flow(flow, recovered).await;
    let acc = drain_queue(&[&svc], DRAIN_LIMIT).await;
    let s = check("every backend frozen", &sent, &acc, &Allow::default());
    let after = svc.queue_status().await;
    println!(
        "faults: queue: all {} backends of the service frozen for {:.0}s: {s}; serving {:.2}s \
         after the resume; wake-up listener recycles {}; {}",
        backends.len(),
        (resumed - fault).as_secs_f64(),
        (recovered - resumed).as_secs_f64(),
        recycles(&after),
        acc.counts[0]
    );
    svc.stop().await;
}

async fn queue_postgres_restarted_while_publishing() {
    let svc = start(Opts {
        throwaway: true,
        ..queue_opts(LEASE)
    })
    .await;
    let client = queue_client(&svc.fx).await;
    let before = svc.queue_status().await;
    let flow = QueueFlow::start(client, &svc.queue, 0, BATCH, INTERVAL, MICROS);
    flow.wait_sent(JOBS / 3, FLOW_LIMIT).await;
    let fault = Instant::now();
    tokio::task::block_in_place(|| svc.fx.stop_server()).unwrap();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| svc.fx.start_server()).unwrap();
    let up = Instant::now();
    let recovered = wait_queue_recovered(&svc, recycles(&before), up, RECOVERY_LIMIT).await;
    let sent = finish_flow(flow, recovered).await;
    let acc = drain_queue(&[&svc], DRAIN_LIMIT).await;
    let s = check("PostgreSQL restarted", &sent, &acc, &Allow::default());
    // The publishers saw the outage: their enqueues failed while the server was down.
    let failed_while_down = sent
        .iter()
        .filter(|e| e.error.is_some() && e.at >= down && e.at < up)
        .count();
    assert!(
        failed_while_down > 0,
        "no enqueue failed while the server was down: the flow missed the outage ({s})"
    );
    let first_error = sent
        .iter()
        .find_map(|e| e.error.clone())
        .unwrap_or_default();
    println!(
        "faults: queue: PostgreSQL restarted (down {:.2}s): {s}; enqueues that failed while \
         it was down {failed_while_down} (e.g. {first_error:?}); serving {:.2}s after it was \
         up; {}",
        (up - fault).as_secs_f64(),
        (recovered - up).as_secs_f64(),
        acc.counts[0]
    );
    svc.stop().await;
}

/// The jobs `owners` hold unsettled in the claims table: what they had taken and not yet
/// settled in the database (running, waiting in the service, or done and not yet written).
async fn held_by(svc: &Svc, owners: &[i64]) -> HashSet<u64> {
    let admin = svc.fx.client().await.unwrap();
    let rows = admin
        .query(
            "SELECT c.done, j.messages[c.lo + 1 : c.hi] FROM dispatcher.claims c
               JOIN dispatcher.jobs j ON j.id = c.job_id WHERE c.owner = ANY($1)",
            &[&owners],
        )
        .await
        .unwrap();
    let mut held = HashSet::new();
    for row in rows {
        let done: i64 = row.get(0);
        let messages: Vec<String> = row.get(1);
        for (i, m) in messages.iter().enumerate() {
            if done & (1i64 << i) == 0 {
                let v: Value = serde_json::from_str(m).unwrap();
                held.insert(v["args"][0].as_u64().unwrap());
            }
        }
    }
    held
}

async fn queue_service_sigkilled_next_to_another() {
    // Jobs of 6 ms: the two services (2 workers each) do not keep up with the flow, so each
    // holds as many as it may (its workers and its prefetch).
    const SLOW: u64 = 6_000;
    let mut a = start(queue_opts(SHORT_LEASE)).await;
    let b = start_on(a.fx.clone(), &a.queue, queue_opts(SHORT_LEASE)).await;
    let client = queue_client(&a.fx).await;
    let flow = QueueFlow::start(client, &a.queue, 0, BATCH, INTERVAL, SLOW);
    flow.wait_sent(JOBS * 2 / 5, FLOW_LIMIT).await;
    let owners: Vec<i64> = a.queue_status().await["owners"]
        .as_array()
        .map(|o| o.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    assert!(!owners.is_empty(), "the service reports no owner id");
    // What A finished so far, as its history says: its ledger must show each of them.
    let before_kill: Vec<Call> = a.history().await;
    a.sigkill().await;
    let killed = Instant::now();
    // Let its backends end the statements they had received.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = held_by(&a, &owners).await;
    let held_after = killed.elapsed();
    assert!(
        held_after < Duration::from_secs_f64(SHORT_LEASE * 0.5),
        "the claims were read too late to be A's own: {held_after:?}"
    );
    assert!(
        !held.is_empty(),
        "the SIGKILLed service held no job: nothing to take over"
    );
    flow.wait_sent(JOBS, FLOW_LIMIT).await;
    let sent = flow.stop().await;
    let acc = drain_queue(&[&b], DRAIN_LIMIT).await;
    let ledger_a = a.ledger();
    for c in before_kill
        .iter()
        .filter(|c| c.outcome == Some(Outcome::Ok))
    {
        let id = job_id(c).unwrap();
        assert!(
            ledger_a.contains_key(&id),
            "job {id} ended ok on A but is not in A's ledger"
        );
    }
    // Every job A held ran on B, as a later attempt than A's.
    for id in &held {
        let on_b: Vec<Option<u32>> = acc
            .calls
            .get(id)
            .map(|c| {
                c.iter()
                    .filter(|c| c.outcome == Some(Outcome::Ok))
                    .map(|c| c.attempt)
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            on_b.len() == 1 && on_b[0] >= Some(2),
            "job {id}, held by the SIGKILLed service, did not run once on the other as a later \
             attempt: attempts {on_b:?}"
        );
    }
    let allow = Allow {
        rerun: held.clone(),
        elsewhere: ledger_a.clone(),
        ..Allow::default()
    };
    let s = check("service SIGKILLed", &sent, &acc, &allow);
    let on_a = ledger_a.values().map(Vec::len).sum::<usize>();
    let rescued = b.queue_status().await["rescued"].as_u64().unwrap_or(0);
    println!(
        "faults: queue: service SIGKILLed next to another (lease {SHORT_LEASE}s): {s}; \
         A ran {on_a} before the kill, held {} unsettled at the kill (all ran on B as a later \
         attempt; {} of them had run on A already: the re-runs); B took over {rescued}; {}",
        held.len(),
        held.iter().filter(|id| ledger_a.contains_key(id)).count(),
        acc.counts[0]
    );
    b.stop().await;
}

async fn queue_worker_sigkilled_mid_job() {
    const VICTIM: u64 = 1_000_000_000;
    let svc = start(queue_opts(LEASE)).await;
    let client = queue_client(&svc.fx).await;
    let flow = QueueFlow::start(client.clone(), &svc.queue, 0, BATCH, INTERVAL, MICROS);
    flow.wait_sent(JOBS / 3, FLOW_LIMIT).await;
    let (uuid, message) = job_message(VICTIM, 3_000_000);
    let at = Instant::now();
    client
        .enqueue(Job::new(svc.queue.as_str(), &message).unwrap().priority(10))
        .await
        .unwrap();
    let pid = svc.worker_pid_of(&uuid, RECOVERY_LIMIT).await;
    let killed = Instant::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let mut sent = finish_flow(flow, killed).await;
    sent.push(Enqueue {
        ids: VICTIM..VICTIM + 1,
        at,
        error: None,
    });
    let acc = drain_queue(&[&svc], DRAIN_LIMIT).await;
    let calls = &acc.calls[&VICTIM];
    let seen: Vec<(Option<Outcome>, Option<u32>)> =
        calls.iter().map(|c| (c.outcome, c.attempt)).collect();
    assert_eq!(
        seen,
        [
            (Some(Outcome::WorkerLost), Some(1)),
            (Some(Outcome::Ok), Some(2))
        ],
        "the job under the killed worker: {calls:?}"
    );
    let lost_error = calls[0].error.clone().unwrap_or_default();
    assert!(lost_error.contains("SIGKILL"), "{lost_error}");
    let retried_after = calls[1].started_at.unwrap_or(0.0) - calls[0].finished_at.unwrap_or(0.0);
    let allow = Allow {
        retried: HashSet::from([VICTIM]),
        ..Allow::default()
    };
    let s = check("worker SIGKILLed", &sent, &acc, &allow);
    println!(
        "faults: queue: worker SIGKILLed mid-job: {s}; the job's Calls: worker_lost ({lost_error:?}), \
         then ok as attempt 2 started {retried_after:.2}s later; {}",
        acc.counts[0]
    );
    svc.stop().await;
}

async fn queue_lease_holds_under_a_sustained_flow() {
    // The shortest lease the config allows, renewed every third of it, and the fastest flow
    // this process makes: noop jobs, 40 per enqueue, every 5 ms. The keeper writes settlements
    // all the time; the renewal must still get its turn, or the service takes over its own
    // claims while it runs them (each such job runs twice).
    const RUN: Duration = Duration::from_secs(12);
    let svc = start(Opts {
        workers: 4,
        history_size: 100,
        ..queue_opts(1.0)
    })
    .await;
    let client = queue_client(&svc.fx).await;
    let admin = svc.fx.client().await.unwrap();
    let flow = QueueFlow::start(client, &svc.queue, 0, 40, INTERVAL, 0);
    let t = Instant::now();
    let mut least = f64::MAX;
    while t.elapsed() < RUN {
        let left: f64 = admin
            .query_one(
                "SELECT min(extract(epoch FROM lease_until - now()))::float8 FROM dispatcher.owners",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        least = least.min(left);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = flow.stop().await;
    let jobs: u64 = sent.iter().map(|e| e.ids.end - e.ids.start).sum();
    assert!(sent.iter().all(|e| e.error.is_none()), "an enqueue failed");
    // Drained, then counted: every job ran once (the ledger, job by job; the counters).
    let drained = Instant::now();
    loop {
        let live: i64 = admin
            .query_one(
                "SELECT (SELECT count(*) FROM dispatcher.jobs) + (SELECT count(*) FROM dispatcher.claims)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if live == 0 {
            break;
        }
        assert!(
            drained.elapsed() < DRAIN_LIMIT,
            "the queue did not drain: {live} rows left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counts = svc.settle(DRAIN_LIMIT).await;
    let status = svc.queue_status().await;
    let ledger = svc.ledger();
    let twice: Vec<(&u64, &Vec<u32>)> =
        ledger.iter().filter(|(_, r)| r.len() > 1).take(5).collect();
    assert!(
        twice.is_empty() && status["rescued"] == 0,
        "the service took over its own claims (its lease lapsed while it ran them: least left \
         {least:.2}s): jobs that ran twice {twice:?}; {status}"
    );
    assert!(
        least > 0.0,
        "the lease of the running service lapsed (least left {least:.2}s): another service \
         would have taken over its jobs while it ran them"
    );
    assert_eq!(
        (ledger.len() as u64, counts.received, counts.outcome("ok")),
        (jobs, jobs, jobs),
        "jobs enqueued vs (in the ledger, received, ok): {counts}"
    );
    assert!(
        ledger.keys().all(|id| *id < jobs),
        "the ledger holds unknown jobs"
    );
    println!(
        "faults: queue: lease of 1 s under a sustained flow: {jobs} jobs in {:.1}s, each ran \
         once; least lease left {least:.2}s; {counts}",
        RUN.as_secs_f64()
    );
    svc.stop().await;
}
