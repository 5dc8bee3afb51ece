//! `pg`: end to end through PostgreSQL, with the service in a separate process.
//!
//! 1. Starts the service process ([`super::serve`]: `dispatcher_server::Server`, a `PgBroker`,
//!    a `ProcessPool` of `W` workers, history 10,000 unless `--history` says otherwise).
//! 2. Measures the floor, with the service listening (so PostgreSQL signals its LISTEN backend
//!    as in the run proper): the raw `SELECT pg_notify(...)` rate of `P` clients for
//!    `--raw-seconds` ([`crate::floor::raw`]: pgbench, or `--raw loop`); with `--batch B` the
//!    bare process pool ([`crate::floor::pool`], `N` jobs, `W` workers), the ceiling a batched
//!    run approaches.
//! 3. `N` `{"task":"bench.noop"}` messages are published. By default (`--publish-with
//!    statements`) `P` tokio-postgres connections send them with the statements
//!    `PgBroker` uses: `SELECT pg_notify($1, $2)` per message, or with `--batch B`
//!    one `SELECT count(pg_notify(c, p)) FROM unnest($1, $2)` per `B` messages. Batched
//!    payloads carry a uuid each (`{"task":"bench.noop","uuid":"<publisher>-<n>"}`): PostgreSQL
//!    delivers identical notifications of one transaction only once. With `--publish-with
//!    pgbench` (unbatched), pgbench publishes them instead: the floor's script on the service's
//!    channel, `-c P -j P -t N/P`, so that both sides of the ratio have the same publisher and
//!    it measures what consuming costs alone (pgbench's threads cost more CPU than the
//!    statements on one tokio runtime, so this ratio is the lower one).
//! 4. Polls the `metrics` control command until the service has finished all `N` Calls; the
//!    end time is the newest Call's `finished_at` (the history, read afterwards).
//!
//! Steps 2 to 4 run `--rounds` (3) times (floor, scenario, floor, scenario, ...), and the
//! report gives medians, `floor_jobs_per_sec` and `ratio_throughput` (`ratio_to_raw` too,
//! unbatched).
//!
//! `seconds` runs from the first publish to the last Call's end. `rss_main_kb` is read at once,
//! `rss_main_settled_kb` 2.5 s later (the server releases a burst's free memory after a quiet
//! second), both before the history is fetched (a large reply would inflate them).

use std::time::Instant;

use dispatcher_broker_pg::PgBrokerConfig;
use dispatcher_core::call::now_epoch;
use dispatcher_core::TaskRegistry;
use tokio_postgres::{Client, NoTls, Statement};

use crate::error::{BenchError, Result};
use crate::floor::{self, Compare, Round};
use crate::report::{nproc, proc_cpu_ms, round3, summary, Report};
use crate::scenarios::remote::{outcomes_since, Remote};
use crate::scenarios::Options;

/// The payload of every task message.
pub const NOOP: &str = r#"{"task":"bench.noop"}"#;

/// The statement `PgBroker::publish` runs.
pub const NOTIFY_SQL: &str = "SELECT pg_notify($1, $2)";
/// The statement `PgBroker::publish_batch` runs.
pub const NOTIFY_MANY_SQL: &str =
    "SELECT count(pg_notify(c, p)) FROM unnest($1::text[], $2::text[]) AS m(c, p)";

/// A publishing connection with the broker's statements prepared.
pub struct PubConn {
    /// The connection.
    pub client: Client,
    /// `SELECT pg_notify($1, $2)`.
    pub notify: Statement,
    /// The batched form.
    pub notify_many: Statement,
}

fn db(what: &str) -> impl FnOnce(tokio_postgres::Error) -> BenchError + '_ {
    move |source| BenchError::Db {
        what: what.to_owned(),
        source,
    }
}

/// Opens a connection as `PgBroker` does (same settings) and prepares its statements.
pub async fn connect(url: &str) -> Result<PubConn> {
    let config = PgBrokerConfig::from_url(url)?;
    let (client, conn) = config.pg.connect(NoTls).await.map_err(db("connect"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("publishing connection ended: {e}");
        }
    });
    let notify = client.prepare(NOTIFY_SQL).await.map_err(db("prepare"))?;
    let notify_many = client
        .prepare(NOTIFY_MANY_SQL)
        .await
        .map_err(db("prepare"))?;
    Ok(PubConn {
        client,
        notify,
        notify_many,
    })
}

/// Runs the scenario: `--rounds` times the floor, then a round of the scenario, with one
/// service process throughout; reports medians ([`floor::combine`]).
pub async fn run(options: Options, _registry: TaskRegistry) -> Result<Report> {
    let url = options.database_url("pg")?.to_owned();
    let history = options.history.unwrap_or(10_000);
    let remote = if options.dashboard {
        Remote::start_with_dashboard(&url, options.workers, Some(history)).await?
    } else {
        Remote::start(&url, options.workers, Some(history)).await?
    };
    let viewer = remote.watch_dashboard();
    let outcome = rounds(&remote, &url, &options, history).await;
    let outcome = outcome.map(|mut r| {
        if let Some(v) = &viewer {
            use std::sync::atomic::Ordering::Relaxed;
            r.extra.insert("dashboard".into(), true.into());
            r.extra
                .insert("dashboard_updates".into(), v.updates.load(Relaxed).into());
            r.extra
                .insert("dashboard_bytes".into(), v.bytes.load(Relaxed).into());
        }
        r
    });
    drop(viewer);
    let stopped = remote.stop().await;
    let report = outcome?;
    stopped?;
    Ok(report)
}

async fn rounds(remote: &Remote, url: &str, options: &Options, history: u64) -> Result<Report> {
    let p = options.publishers.min(options.tasks).max(1);
    let batched = options.batch.is_some_and(|b| b > 1);
    let mut rounds = Vec::new();
    for r in 1..=options.rounds() {
        eprintln!("pg: round {r} of {}", options.rounds());
        let floor = if batched {
            Some(
                floor::pool::measure(options.tasks, options.workers, options.floor_scheduling)
                    .await?,
            )
        } else {
            floor::raw::measure(url, p, options.raw_seconds, options.raw).await?
        };
        let mut report = measure(remote, url, options, history).await?;
        if let Some(f) = floor.as_ref().filter(|_| !batched) {
            report.raw_notify_per_sec = f.jobs_per_sec;
            report.raw_notify_tool = Some(f.kind.clone());
        }
        rounds.push(Round { floor, report });
    }
    let mut report = floor::combine(Compare::Throughput, rounds)?;
    if !batched {
        report.raw_notify_per_sec = report.floor_jobs_per_sec;
        report.ratio_to_raw = report.ratio_throughput;
    }
    Ok(report)
}

/// Who publishes the messages of an unbatched `pg` run (`--publish-with`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PublishWith {
    /// pgbench when the floor is measured with pgbench (the same publisher on both sides, so
    /// the ratio is the consumer's cost alone), else the statements.
    Auto,
    /// pgbench: the floor's script on the service's channel, `-n -c P -j P -t N/P`.
    Pgbench,
    /// `P` tokio-postgres connections running `PgBroker`'s prepared statement.
    Statements,
}

/// The pgbench to publish with, when this run publishes with pgbench.
fn pgbench_publisher(options: &Options) -> Result<Option<std::path::PathBuf>> {
    use floor::raw::RawTool;
    if options.batch.is_some_and(|b| b > 1) {
        return Ok(None);
    }
    match options.publish_with {
        PublishWith::Statements => Ok(None),
        PublishWith::Auto if matches!(options.raw, RawTool::Loop | RawTool::None) => Ok(None),
        PublishWith::Auto => Ok(floor::raw::find_pgbench()),
        PublishWith::Pgbench => floor::raw::find_pgbench().map(Some).ok_or_else(|| {
            BenchError::Run("--publish-with pgbench: pgbench not found on PATH nor in /usr/lib/postgresql/*/bin".into())
        }),
    }
}

async fn measure(remote: &Remote, url: &str, options: &Options, history: u64) -> Result<Report> {
    let n = options.tasks;
    let p = options.publishers.min(n).max(1);
    let pgbench = pgbench_publisher(options)?;
    // With pgbench, each of its P clients sends N / P; a connection of ours sends the rest.
    let own_conns = match pgbench {
        Some(_) => u64::from(n % p > 0),
        None => p,
    };
    let mut conns = Vec::new();
    for _ in 0..own_conns {
        conns.push(connect(url).await?);
    }
    let before = remote.outcomes().await?;
    let base: u64 = before.values().sum();
    let workers = remote.worker_pids().await?;
    let listener = remote.listener_pid().await?;
    let cpu = |pids: &[u32]| -> Option<f64> { pids.iter().map(|p| proc_cpu_ms(*p)).sum() };
    let cpu_before = (
        proc_cpu_ms(remote.pid),
        cpu(&workers),
        listener.and_then(proc_cpu_ms),
    );
    let t0 = now_epoch();
    let start = Instant::now();
    let mut publishers = Vec::new();
    if let Some(bin) = pgbench.clone() {
        let (url, channel, per_client) = (url.to_owned(), remote.channel.clone(), n / p);
        publishers.push(tokio::spawn(async move {
            if per_client > 0 {
                floor::raw::run_pgbench(
                    &bin,
                    &url,
                    &channel,
                    p,
                    floor::raw::PgbenchRun::PerClient(per_client),
                )
                .await?;
            }
            Ok::<f64, BenchError>(start.elapsed().as_secs_f64())
        }));
    }
    for (i, conn) in conns.into_iter().enumerate() {
        let share = match pgbench {
            Some(_) => n % p,
            None => n / p + u64::from((i as u64) < n % p),
        };
        let channel = remote.channel.clone();
        let batch = options.batch;
        publishers.push(tokio::spawn(async move {
            publish(&conn, i, &channel, share, batch).await?;
            Ok::<f64, BenchError>(start.elapsed().as_secs_f64())
        }));
    }
    let waited = remote.wait_finished("pg", base, n, Some(history)).await;
    let mut publish_seconds: f64 = 0.0;
    for t in publishers {
        let s = t
            .await
            .map_err(|e| BenchError::Run(format!("a publisher failed: {e}")))??;
        publish_seconds = publish_seconds.max(s);
    }
    let waited = waited?;
    let per_task = |before: Option<f64>, after: Option<f64>| {
        Some(round3((after? - before?) * 1000.0 / n as f64))
    };
    let cpu_main = per_task(cpu_before.0, proc_cpu_ms(remote.pid));
    let cpu_workers = per_task(cpu_before.1, cpu(&workers));
    let cpu_listener = per_task(cpu_before.2, listener.and_then(proc_cpu_ms));
    let rss_main_kb = remote.status_kb("VmRSS");
    let rss_main_anon_kb = remote.status_kb("RssAnon");
    let rss_main_peak_kb = remote.status_kb("VmHWM");
    let (rss_worker_kb, rss_worker_anon_kb) = remote.worker_rss_kb().await?;
    // The server's housekeeper releases a burst's free memory at its first quiet second (it looks
    // once a second); read before the history reply below allocates anew.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let rss_main_settled_kb = remote.status_kb("VmRSS");
    let calls = remote.newest_calls(1000).await?;
    let end = calls
        .last()
        .and_then(|c| c.finished_at)
        .ok_or_else(|| BenchError::Run("the history is empty".into()))?;
    let seconds = end - t0;
    let outcomes = outcomes_since(&waited.outcomes, &before);
    let ok = outcomes.get("ok").copied().unwrap_or(0);
    if ok < n {
        return Err(BenchError::Run(format!(
            "expected {n} Calls ending ok, the service has {ok} (outcomes of this round: {outcomes:?})"
        )));
    }
    let rate = n as f64 / seconds;
    eprintln!(
        "pg: {n} Calls finished in {seconds:.3}s ({rate:.0}/s); published in {publish_seconds:.3}s"
    );
    let mut run_ms: Vec<f64> = calls.iter().filter_map(|c| c.run_ms).collect();
    let mut total_ms: Vec<f64> = calls.iter().filter_map(|c| c.total_ms).collect();
    let (p50, p99, max) = summary(&mut run_ms);
    let (p50_total, p99_total, _) = summary(&mut total_ms);
    let mut extra = serde_json::Map::new();
    let publisher = match (&pgbench, options.batch.filter(|b| *b > 1)) {
        (Some(_), _) => format!(
            "pgbench -n -c {p} -j {p} -t {}, script: SELECT pg_notify('<channel>', '{NOOP}')",
            n / p
        ),
        (None, None) => format!("{p} tokio-postgres connections: prepared {NOTIFY_SQL}"),
        (None, Some(b)) => {
            format!("{p} tokio-postgres connections: prepared {NOTIFY_MANY_SQL}, {b} per statement")
        }
    };
    extra.insert("publisher".into(), publisher.into());
    Ok(Report {
        scenario: "pg".to_owned(),
        tasks: n,
        workers: options.workers,
        publishers: Some(p),
        batch: options.batch,
        seconds: round3(seconds),
        tasks_per_sec: rate.round(),
        publish_seconds: Some(round3(publish_seconds)),
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
        p50_total_ms: p50_total,
        p99_total_ms: p99_total,
        latency: "over the newest 1,000 Calls: p50_ms/p99_ms: Call run_ms (finished_at - started_at); *_total_ms: total_ms (finished_at - received_at, queueing included)",
        rss_main_kb,
        rss_main_anon_kb,
        rss_main_settled_kb,
        rss_main_history_full_kb: waited.rss_history_full_kb,
        rss_main_peak_kb,
        rss_worker_kb,
        rss_worker_anon_kb,
        cpu_main_us_per_task: cpu_main,
        cpu_workers_us_per_task: cpu_workers,
        cpu_pg_listener_us_per_task: cpu_listener,
        history_size: Some(usize::try_from(history).unwrap_or(usize::MAX)),
        outcomes,
        nproc: nproc(),
        extra,
        ..Report::default()
    })
}

/// Sends `count` no-op messages on `channel`, `batch` per statement (one each without).
async fn publish(
    conn: &PubConn,
    id: usize,
    channel: &str,
    count: u64,
    batch: Option<u64>,
) -> Result<()> {
    match batch {
        None | Some(1) => {
            for _ in 0..count {
                conn.client
                    .execute(&conn.notify, &[&channel, &NOOP])
                    .await
                    .map_err(db("pg_notify"))?;
            }
        }
        Some(b) => {
            // PostgreSQL delivers identical notifications of one transaction once: every
            // payload of a batch carries its own uuid.
            let mut left = count;
            let mut seq = 0u64;
            while left > 0 {
                let k = usize::try_from(left.min(b)).unwrap_or(usize::MAX);
                let channels = vec![channel; k];
                let payloads: Vec<String> = (0..k)
                    .map(|_| {
                        seq += 1;
                        format!(r#"{{"task":"bench.noop","uuid":"{id}-{seq}"}}"#)
                    })
                    .collect();
                conn.client
                    .execute(&conn.notify_many, &[&channels, &payloads])
                    .await
                    .map_err(db("batched pg_notify"))?;
                left -= k as u64;
            }
        }
    }
    Ok(())
}
