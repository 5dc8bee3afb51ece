//! The scenarios. Each is a module with an `async fn run(&Options, TaskRegistry) -> Result<Report>`;
//! add a new one to [`SCENARIOS`].

pub mod pool;

use std::future::Future;
use std::pin::Pin;

use dispatcher_core::TaskRegistry;

use crate::error::{BenchError, Result};
use crate::report::Report;
use crate::Cli;

/// What every scenario gets from the command line.
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
}

type ScenarioFuture = Pin<Box<dyn Future<Output = Result<Report>>>>;
type ScenarioFn = fn(Options, TaskRegistry) -> ScenarioFuture;

/// Implemented scenarios: name, what it measures, entry point.
pub const SCENARIOS: &[(&str, &str, ScenarioFn)] =
    &[("pool", "the process pool alone, no broker", |o, r| {
        Box::pin(pool::run(o, r))
    })];

/// Scenarios planned but not implemented yet.
pub const PLANNED: &[&str] = &["pg", "latency", "control"];

/// Runs the scenario the command line names, on a multi-threaded runtime.
pub fn run(cli: &Cli, registry: TaskRegistry) -> Result<Report> {
    let Some((name, what, entry)) = SCENARIOS.iter().find(|(name, _, _)| *name == cli.scenario)
    else {
        return Err(BenchError::UnknownScenario {
            name: cli.scenario.clone(),
            available: SCENARIOS
                .iter()
                .map(|(n, w, _)| format!("{n} ({w})"))
                .collect::<Vec<_>>()
                .join(", "),
            planned: PLANNED.join(", "),
        });
    };
    let options = Options {
        tasks: cli.tasks,
        workers: cli.workers,
        publishers: cli.publishers,
        batch: cli.batch,
        database_url: cli.database_url.clone(),
    };
    eprintln!(
        "scenario {name}: {what}; {} tasks, {} workers, {} publishers",
        options.tasks, options.workers, options.publishers
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    rt.block_on(entry(options, registry))
}
