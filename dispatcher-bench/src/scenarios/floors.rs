//! The floors alone (`floor-pool`, `floor-notify`, `floor-pg`): what [`crate::floor`] measures
//! beside each scenario, as scenarios of their own. `tasks_per_sec` is the floor's rate
//! (`floor-pool`, `floor-pg`), `p50_ms`/`p99_ms` its latency (`floor-notify`).

use std::time::Instant;

use dispatcher_core::TaskRegistry;

use crate::error::{BenchError, Result};
use crate::floor::{self, Floor};
use crate::report::{nproc, round3, Report};
use crate::scenarios::Options;

fn report(name: &str, options: &Options, floor: Floor, seconds: f64) -> Report {
    Report {
        scenario: name.to_owned(),
        tasks: options.tasks,
        workers: options.workers,
        seconds: round3(seconds),
        tasks_per_sec: floor
            .jobs_per_sec
            .unwrap_or_else(|| (options.tasks as f64 / seconds).round()),
        p50_ms: floor.p50_ms,
        p99_ms: floor.p99_ms,
        floor_cpu_main_us_per_task: floor.cpu_main_us_per_job,
        floor_cpu_workers_us_per_task: floor.cpu_workers_us_per_job,
        floor_kind: Some(floor.kind),
        latency: if name == "floor-notify" {
            "p50_ms/p99_ms: publish-to-arrival of a raw NOTIFY"
        } else {
            "none"
        },
        nproc: nproc(),
        ..Report::default()
    }
}

/// `floor-pool`: the bare process pool.
pub async fn pool(options: Options, _registry: TaskRegistry) -> Result<Report> {
    let start = Instant::now();
    let f = floor::pool::measure(options.tasks, options.workers, options.floor_scheduling).await?;
    Ok(report(
        "floor-pool",
        &options,
        f,
        start.elapsed().as_secs_f64(),
    ))
}

/// `floor-notify`: raw NOTIFY arrival, one message every `--pause-ms`.
pub async fn notify(options: Options, _registry: TaskRegistry) -> Result<Report> {
    let url = options.database_url("floor-notify")?.to_owned();
    let start = Instant::now();
    let f = floor::notify::measure(&url, options.tasks, options.pause()).await?;
    Ok(report(
        "floor-notify",
        &options,
        f,
        start.elapsed().as_secs_f64(),
    ))
}

/// `floor-pg`: raw pg_notify from `--publishers` clients for `--raw-seconds`.
pub async fn raw(options: Options, _registry: TaskRegistry) -> Result<Report> {
    let url = options.database_url("floor-pg")?.to_owned();
    let start = Instant::now();
    let f = floor::raw::measure(&url, options.publishers, options.raw_seconds, options.raw)
        .await?
        .ok_or_else(|| BenchError::Run("floor-pg with --raw none measures nothing".into()))?;
    let mut r = report("floor-pg", &options, f, start.elapsed().as_secs_f64());
    r.publishers = Some(options.publishers);
    Ok(r)
}
