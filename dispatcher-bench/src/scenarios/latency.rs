//! `latency`: publish-to-start latency through PostgreSQL, one message at a time.
//!
//! The service runs in its own process as in `pg`. One publishing connection sends `N`
//! `{"task":"bench.noop","time_pub":<now>}` messages, waiting `--pause-ms` (2 ms) after each, so
//! no message waits behind another. Each Call's history records `time_pub` (from the message)
//! and `started_at` (when the service handed it to a worker), both epoch seconds from this
//! machine's clock: `p50_ms`/`p99_ms` are over `started_at - time_pub`, `p50_total_ms`/
//! `p99_total_ms` over `received_at - time_pub` (PostgreSQL's part: until the service took the
//! message in). 100 warm-up messages go first and are not counted.
//!
//! The floor ([`crate::floor::notify`]): raw LISTEN/NOTIFY publish-to-arrival over the same
//! number of messages with the same pause, measured before each of the `--rounds` (3) rounds
//! with the service idle; the report gives medians, `floor_p50_ms`/`floor_p99_ms` and
//! `over_floor_p50_ms`/`over_floor_p99_ms` (the scenario minus the floor, round by round).

use dispatcher_core::call::now_epoch;
use dispatcher_core::TaskRegistry;

use crate::error::{BenchError, Result};
use crate::floor::{self, Compare, Round};
use crate::report::{nproc, round3, summary, Report};
use crate::scenarios::pg::connect;
use crate::scenarios::remote::{outcomes_since, Remote};
use crate::scenarios::Options;

const WARMUP: u64 = 100;

/// Runs the scenario.
pub async fn run(options: Options, _registry: TaskRegistry) -> Result<Report> {
    let url = options.database_url("latency")?.to_owned();
    let history = options.history.unwrap_or(options.tasks.max(10_000));
    let remote = Remote::start(&url, options.workers, Some(history)).await?;
    let outcome = async {
        let mut rounds = Vec::new();
        for r in 1..=options.rounds() {
            eprintln!("latency: round {r} of {}", options.rounds());
            let floor = Some(floor::notify::measure(&url, options.tasks, options.pause()).await?);
            let report = measure(&remote, &url, &options, history).await?;
            rounds.push(Round { floor, report });
        }
        floor::combine(Compare::Latency { legs: 1.0 }, rounds)
    }
    .await;
    let stopped = remote.stop().await;
    let report = outcome?;
    stopped?;
    Ok(report)
}

async fn measure(remote: &Remote, url: &str, options: &Options, history: u64) -> Result<Report> {
    let n = options.tasks;
    if n > history {
        return Err(BenchError::Run(format!(
            "--tasks {n} is more than the history ({history}) holds; pass --history {n}"
        )));
    }
    let conn = connect(url).await?;
    let pause = options.pause();
    let send = |count: u64| {
        let conn = &conn;
        let channel = remote.channel.as_str();
        async move {
            for _ in 0..count {
                let payload = format!(r#"{{"task":"bench.noop","time_pub":{}}}"#, now_epoch());
                conn.client
                    .execute(&conn.notify, &[&channel, &payload])
                    .await
                    .map_err(|source| BenchError::Db {
                        what: "pg_notify".into(),
                        source,
                    })?;
                tokio::time::sleep(pause).await;
            }
            Ok::<(), BenchError>(())
        }
    };
    let base: u64 = remote.outcomes().await?.values().sum();
    send(WARMUP).await?;
    let base = remote
        .wait_finished("latency warm-up", base, WARMUP, None)
        .await?;
    let before = base.outcomes;
    let base: u64 = before.values().sum();
    let start = std::time::Instant::now();
    send(n).await?;
    let waited = remote.wait_finished("latency", base, n, None).await?;
    let seconds = start.elapsed().as_secs_f64();
    let rss_main_kb = remote.status_kb("VmRSS");
    let rss_main_anon_kb = remote.status_kb("RssAnon");
    let rss_main_peak_kb = remote.status_kb("VmHWM");
    let (rss_worker_kb, rss_worker_anon_kb) = remote.worker_rss_kb().await?;
    let calls = remote.newest_calls(n).await?;
    let mut start_ms = Vec::with_capacity(calls.len());
    let mut receive_ms = Vec::with_capacity(calls.len());
    for c in &calls {
        if let (Some(p), Some(s)) = (c.time_pub, c.started_at) {
            start_ms.push((s - p) * 1000.0);
        }
        if let (Some(p), Some(r)) = (c.time_pub, c.received_at) {
            receive_ms.push((r - p) * 1000.0);
        }
    }
    if start_ms.len() as u64 != n {
        return Err(BenchError::Run(format!(
            "expected {n} started Calls with time_pub, found {} (outcomes: {:?})",
            start_ms.len(),
            outcomes_since(&waited.outcomes, &before)
        )));
    }
    let (p50, p99, max) = summary(&mut start_ms);
    let (p50_recv, p99_recv, _) = summary(&mut receive_ms);
    eprintln!("latency: publish-to-start p50 {p50:?} ms, p99 {p99:?} ms, max {max:?} ms");
    Ok(Report {
        scenario: "latency".to_owned(),
        tasks: n,
        workers: options.workers,
        publishers: Some(1),
        seconds: round3(seconds),
        tasks_per_sec: (n as f64 / seconds).round(),
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
        p50_total_ms: p50_recv,
        p99_total_ms: p99_recv,
        latency: "p50_ms/p99_ms/max_ms: publish-to-start (Call started_at - time_pub); *_total_ms: publish-to-receipt (received_at - time_pub)",
        rss_main_kb,
        rss_main_anon_kb,
        rss_main_peak_kb,
        rss_worker_kb,
        rss_worker_anon_kb,
        history_size: Some(usize::try_from(history).unwrap_or(usize::MAX)),
        outcomes: outcomes_since(&waited.outcomes, &before),
        nproc: nproc(),
        ..Report::default()
    })
}
