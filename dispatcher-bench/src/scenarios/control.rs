//! `control`: round trips of the `alive` control command through PostgreSQL.
//!
//! The service runs in its own process as in `pg`. The bench sends `N` `alive` requests one after
//! another with [`dispatcher_core::control::request`] (expecting one reply) on its own
//! `PgBroker`, and times each from the call until the reply is in: the LISTEN on a fresh reply
//! channel with the NOTIFYs of the command (one query, `Broker::subscribe_and_publish`), the
//! service's reply NOTIFY, its delivery. 20 warm-up requests go first and are not counted.
//!
//! `--flood N` measures the same round trips while `N` one-second `bench.sleep` tasks wait behind
//! the service's intake pause (published in batches of 1,000 before the timed requests): the
//! commands travel on the channel's control channel, which the service reads ahead of tasks.
//! The round trips without the flood are measured first in the same run, and the report gives
//! both (`p50_ms`/`p99_ms` with the flood; the quiet ones in `extra`).
//!
//! The floor: a command and its reply are two NOTIFY legs, so the floor is twice the raw
//! LISTEN/NOTIFY publish-to-arrival ([`crate::floor::notify`], over `N` messages), measured
//! before each of the `--rounds` (3) rounds (one round with `--flood`, which leaves sleeping
//! tasks behind); `floor_p50_ms`/`floor_p99_ms` are twice one arrival's
//! (`floor_arrival_p50_ms`/`floor_arrival_p99_ms`), `ratio_p50`/`ratio_p99` the round trips
//! over them, `over_floor_*_ms` the differences.

use std::time::{Duration, Instant};

use dispatcher_core::{control, TaskRegistry};
use serde_json::Map;

use crate::error::{BenchError, Result};
use crate::floor::{self, Compare, Round};
use crate::report::{nproc, round3, summary, Report};
use crate::scenarios::remote::Remote;
use crate::scenarios::Options;

const WARMUP: u64 = 20;
/// The floor's pause between messages: none, as between the requests (each floor message is
/// sent once the previous one arrived, as each request once the previous reply did).
const CONTROL_PAUSE: Duration = Duration::ZERO;

/// Runs the scenario.
pub async fn run(options: Options, _registry: TaskRegistry) -> Result<Report> {
    let url = options.database_url("control")?.to_owned();
    let remote = Remote::start(&url, options.workers, options.history).await?;
    let outcome = async {
        let n_rounds = if options.flood.is_some() {
            1
        } else {
            options.rounds()
        };
        let mut rounds = Vec::new();
        for r in 1..=n_rounds {
            eprintln!("control: round {r} of {n_rounds}");
            let floor = Some(floor::notify::measure(&url, options.tasks, CONTROL_PAUSE).await?);
            let report = measure(&remote, &options).await?;
            rounds.push(Round { floor, report });
        }
        floor::combine(Compare::Latency { legs: 2.0 }, rounds)
    }
    .await;
    let stopped = remote.stop().await;
    let report = outcome?;
    stopped?;
    Ok(report)
}

async fn alive(remote: &Remote) -> Result<()> {
    let replies = control::request(
        &*remote.broker,
        &remote.channel,
        "alive",
        Map::new(),
        Some(1),
        Duration::from_secs(5),
    )
    .await?;
    if replies.len() != 1 {
        return Err(BenchError::Run(format!(
            "expected one reply to alive, got {}",
            replies.len()
        )));
    }
    Ok(())
}

/// `n` timed `alive` round trips, milliseconds, and the seconds they took.
async fn round_trips(remote: &Remote, n: u64) -> Result<(Vec<f64>, f64)> {
    let mut ms = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        alive(remote).await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((ms, start.elapsed().as_secs_f64()))
}

/// Publishes `n` one-second sleeps in batches of 1,000.
async fn flood(remote: &Remote, n: u64) -> Result<()> {
    let payload = serde_json::json!({"task": "bench.sleep", "args": [1000]}).to_string();
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        let batch: Vec<(String, String)> = (0..k)
            .map(|_| (remote.channel.clone(), payload.clone()))
            .collect();
        dispatcher_core::Broker::publish_batch(&*remote.broker, &batch)
            .await
            .map_err(dispatcher_core::Error::from)?;
        left -= k;
    }
    Ok(())
}

async fn measure(remote: &Remote, options: &Options) -> Result<Report> {
    let n = options.tasks;
    for _ in 0..WARMUP {
        alive(remote).await?;
    }
    let mut extra = serde_json::Map::new();
    if let Some(f) = options.flood {
        let (mut quiet, _) = round_trips(remote, n).await?;
        let (p50, p99, max) = summary(&mut quiet);
        eprintln!("control: without the flood p50 {p50:?} ms, p99 {p99:?} ms, max {max:?} ms");
        extra.insert("quiet_p50_ms".into(), serde_json::json!(p50));
        extra.insert("quiet_p99_ms".into(), serde_json::json!(p99));
        extra.insert("quiet_max_ms".into(), serde_json::json!(max));
        extra.insert("flood".into(), serde_json::json!(f));
        flood(remote, f).await?;
    }
    let (mut ms, seconds) = round_trips(remote, n).await?;
    let rss_main_kb = remote.status_kb("VmRSS");
    let rss_main_anon_kb = remote.status_kb("RssAnon");
    let (p50, p99, max) = summary(&mut ms);
    eprintln!("control: alive round trip p50 {p50:?} ms, p99 {p99:?} ms, max {max:?} ms");
    Ok(Report {
        scenario: "control".to_owned(),
        tasks: n,
        workers: options.workers,
        seconds: round3(seconds),
        tasks_per_sec: (n as f64 / seconds).round(),
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
        latency: "p50_ms/p99_ms/max_ms: round trip of control::request(alive, expected 1)",
        rss_main_kb,
        rss_main_anon_kb,
        rss_main_peak_kb: remote.status_kb("VmHWM"),
        nproc: nproc(),
        extra,
        ..Report::default()
    })
}
