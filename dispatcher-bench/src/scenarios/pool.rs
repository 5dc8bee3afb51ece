//! `pool`: the process pool alone, no broker.
//!
//! A real service with a [`ProcessPool`] of `workers` worker processes; `publishers` tasks
//! submit `tasks` no-op Calls between them through [`ServiceHandle::submit`], as fast as the
//! service's command channel takes them. The clock runs from the first submission until the
//! service has recorded the last Call in its history. The history holds every Call of the run,
//! so the latency figures cover all of them.
//!
//! Each of the `--rounds` (3) rounds first measures the floor, a bare process pool
//! ([`crate::floor::pool`]) with the same job and worker counts, then the scenario; the report
//! gives medians, `floor_jobs_per_sec` and `ratio_throughput`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher_core::{CallFilter, Outcome, TaskRegistry};
use dispatcher_pool::ProcessPool;
use dispatcher_runtime::{Service, ServiceConfig, ServiceHandle};
use serde_json::{Map, Value};

use crate::error::{BenchError, Result};
use crate::floor::{self, Compare, Round};
use crate::report::{nproc, proc_cpu_ms, proc_status_kb, round3, summary, Report};
use crate::scenarios::Options;
use crate::tasks::noop;

/// Runs the scenario: `--rounds` times the bare-pool floor with the same job count and worker
/// count, then a round of the scenario; reports medians ([`floor::combine`]).
pub async fn run(options: Options, registry: TaskRegistry) -> Result<Report> {
    if options.batch.is_some() {
        eprintln!("pool: --batch has no effect here (local submissions are not batched)");
    }
    if options.database_url.is_some() {
        eprintln!("pool: --database-url has no effect here (no broker)");
    }
    let mut rounds = Vec::new();
    for r in 1..=options.rounds() {
        eprintln!("pool: round {r} of {}", options.rounds());
        let floor = Some(
            floor::pool::measure(options.tasks, options.workers, options.floor_scheduling).await?,
        );
        let report = round(&options, registry.clone()).await?;
        rounds.push(Round { floor, report });
    }
    floor::combine(Compare::Throughput, rounds)
}

/// One run of the scenario with a fresh service.
async fn round(options: &Options, registry: TaskRegistry) -> Result<Report> {
    let n = options.tasks;
    let capacity = usize::try_from(n)
        .map_err(|_| BenchError::Run(format!("--tasks {n} is too large for this machine")))?;
    let workers = usize::try_from(options.workers)
        .map_err(|_| BenchError::Run(format!("--workers {} is too large", options.workers)))?;
    let mut config = ServiceConfig::default();
    config.node_id = format!("bench-{}", std::process::id());
    config.channels = Vec::new();
    config.history_size = capacity.max(config.history_size);
    // Every Call of the run is kept (the figures read them): room for ~1 KiB each.
    config.history_max_bytes = config.history_max_bytes.max(capacity.saturating_mul(1024));
    let history_size = config.history_size;
    config.max_waiting = capacity.max(config.max_waiting);
    let started = Instant::now();
    let service = Service::builder()
        .config(config)
        .registry(registry)
        .pool(ProcessPool::new(workers))
        .start()
        .await?;
    eprintln!(
        "pool: {workers} workers ready in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let service = Arc::new(service);
    let outcome = measure(&service, options, history_size).await;
    let shutdown = service
        .shutdown_with_grace(Some(Duration::from_secs(5)))
        .await;
    let report = outcome?;
    shutdown?;
    Ok(report)
}

async fn measure(
    service: &Arc<ServiceHandle>,
    options: &Options,
    history_size: usize,
) -> Result<Report> {
    let n = options.tasks;
    let publishers = options.publishers.min(n).max(1);
    let workers = worker_pids(&service.control("workers", Map::new()).await?);
    let cpu_workers = || -> Option<f64> { workers.iter().map(|p| proc_cpu_ms(*p)).sum() };
    let cpu_before = (proc_cpu_ms(std::process::id()), cpu_workers());
    let start = Instant::now();
    let mut submitters = Vec::new();
    for p in 0..publishers {
        let share = n / publishers + u64::from(p < n % publishers);
        let service = service.clone();
        submitters.push(tokio::spawn(async move {
            for _ in 0..share {
                service.submit(noop::call()).await?;
            }
            Ok::<(), dispatcher_runtime::Error>(())
        }));
    }
    let progress = tokio::spawn(progress(service.clone(), n, start));
    // Generous: a slow machine still finishes; a stuck service does not hang forever.
    let limit = Duration::from_secs(60) + Duration::from_millis(n.saturating_mul(2));
    let waited = if std::env::var_os("BENCH_POLLWAIT").is_some() {
        while service.finished_count() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    } else {
        service.wait_for_finished(n, limit).await
    };
    let seconds = start.elapsed().as_secs_f64();
    progress.abort();
    for s in submitters {
        s.await
            .map_err(|e| BenchError::Run(format!("a publisher failed: {e}")))??;
    }
    waited?;
    let per_task = |before: Option<f64>, after: Option<f64>| {
        Some(round3((after? - before?) * 1000.0 / n as f64))
    };
    let cpu_main = per_task(cpu_before.0, proc_cpu_ms(std::process::id()));
    let cpu_workers = per_task(cpu_before.1, cpu_workers());
    eprintln!(
        "pool: {n} Calls finished in {seconds:.3}s ({:.0}/s)",
        n as f64 / seconds
    );

    let rss_main_kb = proc_status_kb(std::process::id(), "VmRSS");
    let rss_main_anon_kb = proc_status_kb(std::process::id(), "RssAnon");
    let rss_main_peak_kb = proc_status_kb(std::process::id(), "VmHWM");
    let pids = worker_pids(&service.control("workers", Map::new()).await?);
    let worker_max = |field: &str| {
        pids.iter()
            .filter_map(|pid| proc_status_kb(*pid, field))
            .max()
    };
    let (rss_worker_kb, rss_worker_anon_kb) = (worker_max("VmRSS"), worker_max("RssAnon"));

    let calls = service.history(&CallFilter::default());
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut run_ms = Vec::with_capacity(calls.len());
    let mut total_ms = Vec::with_capacity(calls.len());
    for c in &calls {
        let o = c.outcome.map_or("none", Outcome::as_str);
        *outcomes.entry(o.to_owned()).or_default() += 1;
        run_ms.extend(c.run_ms);
        total_ms.extend(c.total_ms);
    }
    let ok = outcomes.get("ok").copied().unwrap_or(0);
    if ok != n {
        return Err(BenchError::Run(format!(
            "expected {n} Calls ending ok, the history has {ok} (outcomes: {outcomes:?})"
        )));
    }
    let (p50, p99, max) = summary(&mut run_ms);
    let (p50_total, p99_total, _) = summary(&mut total_ms);
    Ok(Report {
        scenario: "pool".to_owned(),
        tasks: n,
        workers: options.workers,
        publishers: Some(publishers),
        seconds: round3(seconds),
        tasks_per_sec: (n as f64 / seconds).round(),
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
        p50_total_ms: p50_total,
        p99_total_ms: p99_total,
        latency: "p50_ms/p99_ms: Call run_ms (finished_at - started_at); *_total_ms: total_ms (finished_at - received_at)",
        rss_main_kb,
        rss_main_anon_kb,
        rss_main_peak_kb,
        rss_worker_kb,
        rss_worker_anon_kb,
        cpu_main_us_per_task: cpu_main,
        cpu_workers_us_per_task: cpu_workers,
        history_size: Some(history_size),
        outcomes,
        nproc: nproc(),
        ..Report::default()
    })
}

/// Prints the finished count to stderr once a second.
async fn progress(service: Arc<ServiceHandle>, n: u64, start: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let done = service.finished_count();
        eprintln!(
            "pool: {done}/{n} finished after {:.1}s ({:.0}/s)",
            start.elapsed().as_secs_f64(),
            done as f64 / start.elapsed().as_secs_f64()
        );
    }
}

/// The worker pids in a `workers` control reply.
pub fn worker_pids(reply: &Value) -> Vec<u32> {
    reply
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|w| w.get("pid")?.as_u64())
                .filter_map(|pid| u32::try_from(pid).ok())
                .filter(|pid| *pid > 0)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_from_a_workers_reply() {
        let reply = serde_json::json!({
            "worker-0": {"pid": 10, "status": "ready"},
            "worker-1": {"pid": 0, "status": "starting"},
            "worker-2": {"status": "ready"},
        });
        assert_eq!(worker_pids(&reply), vec![10]);
        assert!(worker_pids(&Value::Null).is_empty());
    }
}
