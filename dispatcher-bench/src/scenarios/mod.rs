//! The scenarios. Each is a module with an `async fn run(Options, TaskRegistry) -> Result<Report>`;
//! add a new one to [`SCENARIOS`].

pub mod control;
pub mod floors;
pub mod latency;
pub mod peer;
pub mod pg;
pub mod pool;
pub mod queue;
pub mod queue_rounds;
pub mod remote;
pub mod serve;
pub mod soak;

use std::future::Future;
use std::pin::Pin;

use dispatcher_core::TaskRegistry;

use crate::error::{BenchError, Result};
use crate::report::Report;
use crate::Cli;

/// What every scenario gets from the command line (scenario defaults applied).
#[derive(Debug, Clone)]
pub struct Options {
    /// Tasks to run.
    pub tasks: u64,
    /// Worker processes.
    pub workers: u64,
    /// Concurrent publishers.
    pub publishers: u64,
    /// Messages per publish batch.
    pub batch: Option<u64>,
    /// PostgreSQL connection string.
    pub database_url: Option<String>,
    /// Seconds of the raw pg_notify measurement.
    pub raw_seconds: u64,
    /// How to measure the raw pg_notify rate.
    pub raw: crate::floor::raw::RawTool,
    /// The bare pool floor's scheduling policy.
    pub floor_scheduling: dispatcher_pool::WorkerScheduling,
    /// Who publishes an unbatched `pg` run's messages.
    pub publish_with: pg::PublishWith,
    /// Pause between two messages (`latency`, `queue`), milliseconds, when given.
    pub pause_ms: Option<f64>,
    /// Jobs of the `queue` latency phase.
    pub latency_jobs: u64,
    /// Run the durable-queue peer too (`queue`).
    pub peer: bool,
    /// The peer's run script.
    pub peer_script: std::path::PathBuf,
    /// The peer's job count.
    pub peer_jobs: u64,
    /// The peer's concurrency.
    pub peer_concurrency: u64,
    /// Rounds (floor, scenario, floor, scenario, ...), when given.
    pub rounds: Option<u64>,
    /// The service's history size, when given.
    pub history: Option<u64>,
    /// Tasks waiting behind the intake pause while `control` measures, when given.
    pub flood: Option<u64>,
    /// Serve the dashboard and keep a viewer on it (`pg`).
    pub dashboard: bool,
    /// Where `serve` serves the dashboard, when it does.
    pub dashboard_address: Option<String>,
    /// The channel (`serve`).
    pub channel: Option<String>,
    /// Consume the durable queue too (`serve`).
    pub queue: bool,
}

impl Options {
    /// Rounds of floor and scenario: `--rounds`, default 3.
    pub fn rounds(&self) -> u64 {
        self.rounds.unwrap_or(3).max(1)
    }

    /// The pause between two messages of the latency scenarios and their floor.
    pub fn pause(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.pause_ms.unwrap_or(2.0).max(0.0) / 1000.0)
    }

    /// The database URL, or an error saying the scenario needs one.
    pub fn database_url(&self, scenario: &str) -> Result<&str> {
        self.database_url.as_deref().ok_or_else(|| {
            BenchError::Run(format!(
                "{scenario} needs a database: pass --database-url URL or set DATABASE_URL \
                 (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
            ))
        })
    }
}

type ScenarioFuture = Pin<Box<dyn Future<Output = Result<Report>>>>;
type ScenarioFn = fn(Options, TaskRegistry) -> ScenarioFuture;

/// Implemented scenarios: name, what it measures, default task count, default publishers,
/// entry point.
pub const SCENARIOS: &[(&str, &str, u64, u64, ScenarioFn)] = &[
    (
        "pool",
        "the process pool alone, no broker",
        100_000,
        1,
        |o, r| Box::pin(pool::run(o, r)),
    ),
    (
        "pg",
        "end to end through PostgreSQL, the service in another process",
        100_000,
        4,
        |o, r| Box::pin(pg::run(o, r)),
    ),
    (
        "latency",
        "publish-to-start latency through PostgreSQL, one message at a time",
        2_000,
        1,
        |o, r| Box::pin(latency::run(o, r)),
    ),
    (
        "control",
        "round trips of the `alive` control command through PostgreSQL",
        1_000,
        1,
        |o, r| Box::pin(control::run(o, r)),
    ),
    (
        "queue",
        "the durable queue: jobs/s while publishing, publish-to-start latency, table sizes",
        100_000,
        2,
        |o, r| Box::pin(queue_rounds::run(o, r)),
    ),
    (
        "floor-pool",
        "the floor of `pool`: a bare process pool, the IPC round trip alone",
        100_000,
        1,
        |o, r| Box::pin(floors::pool(o, r)),
    ),
    (
        "floor-notify",
        "the floor of `latency`: raw LISTEN/NOTIFY publish-to-arrival",
        2_000,
        1,
        |o, r| Box::pin(floors::notify(o, r)),
    ),
    (
        "floor-pg",
        "the floor of `pg`: raw pg_notify transactions per second",
        0,
        4,
        |o, r| Box::pin(floors::raw(o, r)),
    ),
    (
        "soak",
        "a long run through PostgreSQL: received == finished, RSS at the start and the end",
        1_000_000,
        1,
        |o, r| Box::pin(soak::run(o, r)),
    ),
];

/// Runs the scenario the command line names, on a multi-threaded runtime (`serve` and `pool`,
/// which run the service in this process, on [`dispatcher_server::service_runtime`], as a
/// service's `main` does).
pub fn run(cli: &Cli, registry: TaskRegistry) -> Result<Report> {
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(BenchError::Runtime)
    };
    let mut options = Options {
        tasks: cli.tasks.unwrap_or(0),
        workers: cli.workers,
        publishers: cli.publishers.unwrap_or(1),
        batch: cli.batch,
        database_url: cli.database_url.clone(),
        raw_seconds: cli.raw_seconds,
        raw: cli.raw,
        publish_with: cli.publish_with,
        floor_scheduling: cli.floor_scheduling,
        pause_ms: cli.pause_ms,
        latency_jobs: cli.latency_jobs,
        peer: cli.peer,
        peer_script: cli.peer_script.clone(),
        peer_jobs: cli.peer_jobs,
        peer_concurrency: cli.peer_concurrency,
        rounds: cli.rounds,
        history: cli.history,
        flood: cli.flood,
        dashboard: cli.dashboard,
        dashboard_address: cli.dashboard_address.clone(),
        channel: cli.channel.clone(),
        queue: cli.queue,
    };
    if cli.scenario == "serve" {
        // As a service's `main` does.
        dispatcher_server::service_runtime()
            .map_err(|e| BenchError::Run(format!("the service's runtime: {e}")))?
            .block_on(serve::run(options, registry))?;
        return Err(BenchError::Served);
    }
    let Some((name, what, tasks, publishers, entry)) =
        SCENARIOS.iter().find(|s| s.0 == cli.scenario)
    else {
        return Err(BenchError::UnknownScenario {
            name: cli.scenario.clone(),
            available: SCENARIOS
                .iter()
                .map(|s| format!("{} ({})", s.0, s.1))
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    options.tasks = cli.tasks.unwrap_or(*tasks);
    options.publishers = cli.publishers.unwrap_or(*publishers);
    eprintln!(
        "scenario {name}: {what}; {} tasks, {} workers, {} publishers",
        options.tasks, options.workers, options.publishers
    );
    if *name == "pool" {
        // The service runs in this process: on the runtime a service's `main` builds.
        return dispatcher_server::service_runtime()
            .map_err(|e| BenchError::Run(format!("the service's runtime: {e}")))?
            .block_on(entry(options, registry));
    }
    rt()?.block_on(entry(options, registry))
}
