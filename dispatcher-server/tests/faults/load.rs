//! More messages than the workers can keep up with: none lost, memory bounded.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{account, assert_all_ok, start, Counts, Opts, RssSampler, Trials};

/// Peak RSS allowed to the service process with 10,000 messages waiting. Measured on this
/// project's 2-vCPU machine (debug build): 22 MB with the service's intake pause (it stops
/// reading at 1,000 queued Calls), 31-35 MB without (idle: 14 MB).
const SLOW_CONSUMER_RSS_MB: u64 = 64;
/// Peak RSS allowed to the service process with 100,000 messages published at once and a full
/// history of 10,000 Calls. Measured on this project's 2-vCPU machine (debug build): 27 MB with
/// the service's intake pause (the backlog waits in PostgreSQL's queue); 52-68 MB when all
/// 100,000 waited in the service, about 150 MB before Calls shared their node id and channel
/// strings (idle: 14 MB, 21-30 MB with the full history).
const BURST_RSS_MB: u64 = 128;

pub fn all() -> Trials {
    trials![
        slow_consumer_10k_all_ok,
        burst_100k_bounded_memory,
        control_ahead_of_a_100k_flood
    ]
}

async fn slow_consumer_10k_all_ok() {
    const N: usize = 10_000;
    const BATCH: usize = 500;
    let svc = start(Opts {
        workers: 2,
        history_size: 20_000,
        ..Opts::default()
    })
    .await;
    let (rss_idle, _) = svc.rss_kb();
    let sampler = RssSampler::start(svc.pid);
    let t = Instant::now();
    let mut uuids = Vec::with_capacity(N);
    for b in 0..N / BATCH {
        // 0.2 ms to 1 ms each.
        let batch = svc
            .publish_batch("f.work", BATCH, |i| {
                vec![json!(200 + ((b * BATCH + i) * 37) % 801)]
            })
            .await;
        uuids.extend(batch);
    }
    let published = t.elapsed();
    // A control command right after the flood: it queues behind the messages on the channel.
    let asked = Instant::now();
    let backlog = svc
        .control("metrics", json!({}), 50_000)
        .await
        .expect("no reply to `metrics` within 50 s of the flood");
    let control_latency = asked.elapsed();
    let backlog = Counts::parse(&backlog);
    let counts = svc.settle(Duration::from_secs(50)).await;
    let took = t.elapsed();
    let (_, peak) = svc.rss_kb();
    let sampled = sampler.finish();
    let known: HashSet<String> = uuids.iter().cloned().collect();
    let acc = account(&svc, &known, Duration::from_secs(10)).await;
    assert_eq!(acc.counts.received, N as u64, "{}", acc.counts);
    assert_all_ok(&acc, &uuids, "slow-consumer messages");
    println!(
        "faults: slow consumer: {N} published in {:.2}s, all {N} ok after {:.2}s; a `metrics` \
         command sent after the flood was answered after {:.2}s, with {} not yet finished \
         ({backlog}); service RSS idle {:.1} MB, peak {:.1} MB (sampled max {:.1} MB); {counts}",
        published.as_secs_f64(),
        took.as_secs_f64(),
        control_latency.as_secs_f64(),
        N as u64 - backlog.finished_total().min(N as u64),
        rss_idle as f64 / 1024.0,
        peak as f64 / 1024.0,
        sampled as f64 / 1024.0
    );
    assert!(
        published * 4 < took,
        "the workers kept up with publishing: no backlog to test (published in {published:?}, \
         all finished after {took:?})"
    );
    assert!(
        peak < SLOW_CONSUMER_RSS_MB * 1024,
        "service peak RSS {peak} kB over the {SLOW_CONSUMER_RSS_MB} MB bound"
    );
    svc.stop().await;
}

/// 100,000 messages at once, twice, each under the bound. The history is filled first, so that
/// both bursts run with a full one. (When all 100,000 waited in the service, the second burst
/// peaked some MB higher than the first: with glibc's per-thread arenas the peak crept up over a
/// few bursts and then stayed, about
/// 63 MB with `MALLOC_ARENA_MAX=1`, about 93 MB after six bursts with the default arenas; it is
/// not a leak, which would grow with every burst.)
async fn burst_100k_bounded_memory() {
    const N: usize = 100_000;
    const BATCH: usize = 1_000;
    const HISTORY: usize = 10_000;
    const ROUNDS: usize = 2;
    let svc = start(Opts {
        workers: 2,
        history_size: HISTORY,
        max_waiting: 200_000,
        ..Opts::default()
    })
    .await;
    let mut uuids = Vec::with_capacity(N * ROUNDS + HISTORY);
    for _ in 0..HISTORY / BATCH {
        uuids.extend(svc.publish_batch("f.noop", BATCH, |_| vec![]).await);
    }
    svc.settle(Duration::from_secs(30)).await;
    let (rss_idle, _) = svc.rss_kb();
    for round in 1..=ROUNDS {
        let sampler = RssSampler::start(svc.pid);
        let t = Instant::now();
        for _ in 0..N / BATCH {
            uuids.extend(
                svc.publish_batch("f.work", BATCH, |_| vec![json!(20)])
                    .await,
            );
        }
        let published = t.elapsed();
        // How long a control command waits behind the flood (the operator's view).
        let asked = Instant::now();
        let alive = svc.control("alive", json!({}), 50_000).await;
        let control_latency = asked.elapsed();
        assert!(
            alive.is_some(),
            "no reply to `alive` within 50 s of the burst"
        );
        let counts = svc.settle(Duration::from_secs(50)).await;
        let took = t.elapsed();
        let (rss_after, peak) = svc.rss_kb();
        let sampled = sampler.finish();
        println!(
            "faults: burst {round}: {N} published in batches of {BATCH} in {:.2}s, all finished \
             after {:.2}s; `alive` sent after the burst answered after {:.2}s; service RSS with a \
             full history {:.1} MB, peak {:.1} MB (sampled max this round {:.1} MB), after \
             {:.1} MB; {counts}",
            published.as_secs_f64(),
            took.as_secs_f64(),
            control_latency.as_secs_f64(),
            rss_idle as f64 / 1024.0,
            peak as f64 / 1024.0,
            sampled as f64 / 1024.0,
            rss_after as f64 / 1024.0
        );
        let total = (round * N + HISTORY) as u64;
        assert_eq!(
            (
                counts.received,
                counts.finished_total(),
                counts.outcome("ok")
            ),
            (total, total, total),
            "burst {round}: not every message was received and ran ok (no rejection is allowed: \
             max_waiting is 200,000): {counts}"
        );
        assert_eq!(counts.history_size, HISTORY as u64, "{counts}");
        assert!(
            peak < BURST_RSS_MB * 1024,
            "burst {round}: service peak RSS {peak} kB over the {BURST_RSS_MB} MB bound ({counts})"
        );
    }
    // The history holds the newest Calls, all ok and all published here.
    let history = svc.history().await;
    let known: HashSet<&String> = uuids.iter().collect();
    assert_eq!(history.len(), HISTORY);
    assert!(
        history
            .iter()
            .all(|c| known.contains(&c.uuid) && c.outcome == Some(dispatcher_core::Outcome::Ok)),
        "the history holds a Call that is not ok or not published here"
    );
    svc.stop().await;
}

/// 100,000 two-second tasks wait behind the intake pause (two workers: days of work); control
/// commands are answered at once all the same, through the control channel the service reads
/// ahead of tasks, while the tasks still wait. On the channel alone, behind the flood, not one
/// would be answered before the tasks ran.
async fn control_ahead_of_a_100k_flood() {
    const N: usize = 100_000;
    const BATCH: usize = 5_000;
    const ASKS: usize = 50;
    let svc = start(Opts {
        workers: 2,
        max_waiting: 200_000,
        ..Opts::default()
    })
    .await;
    for _ in 0..N / BATCH {
        svc.publish_batch("f.sleep", BATCH, |_| vec![json!(2.0)])
            .await;
    }
    let mut ms = Vec::with_capacity(ASKS);
    for i in 0..ASKS {
        let asked = Instant::now();
        let alive = svc.control("alive", json!({}), 5_000).await;
        assert!(
            alive.is_some(),
            "`alive` {i} not answered within 5 s with {N} tasks waiting; log:\n{}",
            svc.log_tail()
        );
        ms.push(asked.elapsed().as_secs_f64() * 1000.0);
    }
    let counts = svc.counts().await;
    assert!(
        counts.finished_total() < 100,
        "the flood did not wait: {counts}"
    );
    ms.sort_by(f64::total_cmp);
    println!(
        "faults: {ASKS} `alive` with {N} tasks waiting behind the intake pause: p50 {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms; {counts}",
        ms[ASKS / 2],
        ms[(ASKS * 99).div_ceil(100) - 1],
        ms[ASKS - 1]
    );
    svc.stop().await;
}
