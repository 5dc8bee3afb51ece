//! `soak`: many no-op tasks (one million by default) through PostgreSQL to a service in another
//! process, to check the accounting and the memory over a long run. Not run in CI.
//!
//! The publisher sends batches of `--batch` (default 1,000) messages, each with its own uuid
//! (PostgreSQL folds identical notifications of one transaction into one). At the end the
//! service's `metrics` reply must show `received == finished` where finished counts every
//! outcome (ok, rejected, discarded, ...); the report gives the service's RSS at the start and at
//! the end (`rss_main_start_kb`, `rss_main_kb`).

use std::time::Instant;

use dispatcher_core::TaskRegistry;
use serde_json::Map;

use crate::error::{BenchError, Result};
use crate::report::{nproc, Report};
use crate::scenarios::pg::connect;
use crate::scenarios::remote::Remote;
use crate::scenarios::Options;

/// Runs the scenario.
pub async fn run(options: Options, _registry: TaskRegistry) -> Result<Report> {
    let url = options.database_url("soak")?.to_owned();
    let remote = Remote::start(&url, options.workers, options.history).await?;
    let outcome = soak(&remote, &url, &options).await;
    let stopped = remote.stop().await;
    let report = outcome?;
    stopped?;
    Ok(report)
}

async fn soak(remote: &Remote, url: &str, options: &Options) -> Result<Report> {
    let n = options.tasks;
    let batch = options.batch.unwrap_or(1_000).max(1);
    let rss_start = remote.status_kb("VmRSS");
    let conn = connect(url).await?;
    let base: u64 = remote.outcomes().await?.values().sum();
    let start = Instant::now();
    let channel = remote.channel.as_str();
    let publish = async {
        let mut sent = 0u64;
        while sent < n {
            let k = usize::try_from((n - sent).min(batch)).unwrap_or(usize::MAX);
            let channels = vec![channel; k];
            let payloads: Vec<String> = (0..k)
                .map(|i| {
                    format!(
                        r#"{{"task":"bench.noop","uuid":"soak-{}"}}"#,
                        sent + i as u64
                    )
                })
                .collect();
            conn.client
                .execute(&conn.notify_many, &[&channels, &payloads])
                .await
                .map_err(|source| BenchError::Db {
                    what: "batched pg_notify".into(),
                    source,
                })?;
            sent += k as u64;
        }
        Ok::<_, BenchError>(start.elapsed())
    };
    let (published, waited) = tokio::join!(publish, remote.wait_finished("soak", base, n, None));
    let published = published?;
    let waited = waited?;
    let seconds = start.elapsed().as_secs_f64();
    let metrics = remote.control("metrics", Map::new()).await?;
    let received = metrics["received"].as_u64().unwrap_or(0);
    let finished: u64 = waited.outcomes.values().sum();
    let by = |o: &str| waited.outcomes.get(o).copied().unwrap_or(0);
    eprintln!(
        "soak: received {received} = finished {finished} (ok {}, rejected {}, discarded {}, other {}); \
         published in {:.1}s; service RSS {} KiB at the start, {} KiB at the end",
        by("ok"),
        by("rejected"),
        by("discarded"),
        finished - by("ok") - by("rejected") - by("discarded"),
        published.as_secs_f64(),
        rss_start.unwrap_or(0),
        remote.status_kb("VmRSS").unwrap_or(0),
    );
    if received != finished {
        return Err(BenchError::Run(format!(
            "accounting broken: received {received} but {finished} finished ({:?})",
            waited.outcomes
        )));
    }
    let (rss_worker, _) = remote.worker_rss_kb().await?;
    Ok(Report {
        scenario: "soak".into(),
        tasks: n,
        workers: options.workers,
        batch: Some(batch),
        seconds,
        tasks_per_sec: n as f64 / seconds,
        publish_seconds: Some(published.as_secs_f64()),
        latency: "none",
        rss_main_kb: remote.status_kb("VmRSS"),
        rss_main_start_kb: rss_start,
        rss_main_peak_kb: remote.status_kb("VmHWM"),
        rss_worker_kb: rss_worker,
        received: Some(received),
        outcomes: waited.outcomes,
        nproc: nproc(),
        ..Report::default()
    })
}
