//! `dispatcher-bench`: throughput and latency benchmarks of the dispatcher.
//!
//! ```text
//! dispatcher-bench SCENARIO [--tasks N] [--workers W] [--publishers P] [--batch B] [--database-url URL]
//! ```
//!
//! Progress goes to stderr; the **last line on stdout** is one JSON object with the figures (see
//! [`report::Report`]), so scripts can take it with `tail -n 1`.
//!
//! # Scenarios
//!
//! - `pool`: the process pool alone, no broker. A real [`dispatcher_core::Service`] with a
//!   [`dispatcher_pool::ProcessPool`] of `W` workers (this binary is its own worker program:
//!   `main` calls [`dispatcher_pool::run_if_worker`] first) gets `N` no-op tasks
//!   (`bench.noop`) submitted locally through [`dispatcher_core::ServiceHandle::submit`] by `P`
//!   concurrent publishers, with full Call bookkeeping: every Call goes into the history, which
//!   is made large enough to hold all `N`. See [`scenarios::pool`].
//!
//! `pg`, `latency` and `control` are planned; naming them (or any other unknown scenario) exits
//! with status 2 and a message listing what exists.
//!
//! # Figures
//!
//! - `seconds`, `tasks_per_sec`: from the first submission until the `N`th Call finished.
//! - `p50_ms`, `p99_ms`: dispatch-to-finish latency, i.e. the Calls' `run_ms`
//!   (`finished_at - started_at`: from the moment the service handed the Call to a worker until
//!   the finish report reached the service). `p50_total_ms`/`p99_total_ms` are the Calls'
//!   `total_ms` (`finished_at - received_at`), which includes the time queued behind the
//!   backlog, and so grows with `N` when all tasks are submitted at once.
//! - `rss_main_kb`: `VmRSS` of the service process after the run (the history then holds all
//!   `N` Calls); `rss_main_peak_kb` is its `VmHWM`. `rss_worker_kb`: the largest `VmRSS` among
//!   the worker processes listed by the `workers` control command.
#![warn(missing_docs)]

mod error;
mod report;
mod scenarios;
mod tasks;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "dispatcher-bench",
    version,
    about = "Benchmarks of the dispatcher"
)]
pub struct Cli {
    /// What to measure: `pool` (the process pool alone). Planned: `pg`, `latency`, `control`.
    pub scenario: String,
    /// Tasks to run.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub tasks: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub workers: u64,
    /// Concurrent publishers (tasks submitting work).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub publishers: u64,
    /// Messages per publish batch (scenarios that publish through a broker).
    #[arg(long)]
    pub batch: Option<u64>,
    /// PostgreSQL connection string (scenarios that use a database).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

fn main() -> ExitCode {
    let registry = tasks::registry();
    if let Some(code) = dispatcher_pool::run_if_worker(&registry) {
        return code;
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match scenarios::run(&cli, registry) {
        Ok(report) => match report.to_json_line() {
            Ok(line) => {
                let mut out = std::io::stdout().lock();
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    return ExitCode::FAILURE;
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dispatcher-bench: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("dispatcher-bench: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
