//! `dispatcher-bench`: throughput and latency benchmarks of the dispatcher.
//!
//! ```text
//! dispatcher-bench SCENARIO [--tasks N] [--workers W] [--publishers P] [--batch B] [--rounds R] [--database-url URL]
//! ```
//!
//! Progress goes to stderr; the **last line on stdout** is one JSON object with the figures (see
//! [`report::Report`]), so scripts can take it with `tail -n 1`.
//!
//! # Scenarios
//!
//! - `pool`: the process pool alone, no broker. A real [`dispatcher_runtime::Service`] with a
//!   [`dispatcher_pool::ProcessPool`] of `W` workers (this binary is its own worker program:
//!   `main` calls [`dispatcher_pool::run_if_worker`] first) gets `N` no-op tasks
//!   (`bench.noop`) submitted locally through [`dispatcher_runtime::ServiceHandle::submit`] by `P`
//!   concurrent publishers, with full Call bookkeeping: every Call goes into the history, which
//!   is made large enough to hold all `N`. See [`scenarios::pool`].
//!
//! - `pg`: end to end through PostgreSQL, the service in a separate process (this binary in
//!   `serve` mode: a `dispatcher_server::Server` with a `PgBroker` and a `ProcessPool` of `W`
//!   workers, history at its default 10,000). `P` publishing connections send `N`
//!   `{"task":"bench.noop"}` messages (`B` per transaction with `--batch`); the run ends when the
//!   service has finished all `N` Calls (polled with the `metrics` control command; the end time
//!   is the last Call's `finished_at`). See [`scenarios::pg`].
//! - `latency`: one message at a time with a pause between; publish-to-start latency of each
//!   Call (`started_at - time_pub`). See [`scenarios::latency`].
//! - `control`: round trips of the `alive` control command through PostgreSQL
//!   ([`dispatcher_core::control::request`], expecting one reply). See [`scenarios::control`].
//! - `queue`: the durable queue (`PgQueue`) in a fresh database, consumed by the service in a
//!   separate process: `N` no-op jobs enqueued by `P` publishers (`B` per statement) while it
//!   runs, until the tables are empty; then publish-to-start latency of one job every 5 ms;
//!   table sizes and dead tuples before, after, and after a `VACUUM`. `--peer` runs
//!   graphile-worker interleaved with it. See [`scenarios::queue`].
//!
//! - `floor-pool`, `floor-notify`, `floor-pg`: the floors alone (see below).
//!
//! An unknown scenario exits with status 2 and a message listing what exists.
//!
//! # Floors
//!
//! Absolute figures on a small shared machine drift by up to 2x between runs, so `pool`, `pg`,
//! `latency` and `control` each measure their physical floor in the same run ([`floor`]),
//! interleaved: `--rounds R` (3) times the floor, then the scenario. The report gives medians
//! over the rounds, the floor's figures (`floor_kind`, `floor_jobs_per_sec`, `floor_p50_ms`,
//! `floor_p99_ms`), the comparison (`ratio_throughput`; `over_floor_p50_ms`,
//! `over_floor_p99_ms`, `ratio_p50`, `ratio_p99`), each the median of the rounds' own
//! comparisons, and every round in `runs`. The floors:
//!
//! - `pool` and `pg --batch B`: a bare process pool, `W` worker processes (this binary again, in
//!   a hidden mode) on Unix sockets, one job in flight each, a 40-byte frame each way, the same
//!   job count: the kernel's wake-ups and nothing else ([`floor::pool`]).
//! - `pg`: raw `SELECT pg_notify(...)` from `P` clients ([`floor::raw`]).
//! - `latency`: raw LISTEN/NOTIFY publish-to-arrival between two tokio-postgres connections,
//!   same message count and pause ([`floor::notify`]); `control`: twice that.
//!
//! # Figures
//!
//! - `seconds`, `tasks_per_sec`: from the first submission until the `N`th Call finished.
//! - `p50_ms`, `p99_ms`: dispatch-to-finish latency, i.e. the Calls' `run_ms`
//!   (`finished_at - started_at`: from the moment the service handed the Call to a worker until
//!   the finish report reached the service). `p50_total_ms`/`p99_total_ms` are the Calls'
//!   `total_ms` (`finished_at - received_at`), which includes the time queued behind the
//!   backlog, and so grows with `N` when all tasks are submitted at once.
//! - `rss_main_kb`: `VmRSS` of the service process after the run (`pool`: the history then
//!   holds all `N` Calls; `pg`: the history holds its 10,000, and `rss_main_history_full_kb` is
//!   the RSS when it first became full, `rss_main_settled_kb` the RSS 2.5 s after the run, once
//!   the server has handed the burst's free memory back); `rss_main_peak_kb` is its `VmHWM`. `rss_worker_kb`: the
//!   largest `VmRSS` among the worker processes listed by the `workers` control command.
#![warn(missing_docs)]

mod error;
mod floor;
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
    /// What to measure: `pool` (the process pool alone), `pg` (end to end through PostgreSQL),
    /// `latency` (publish-to-start latency), `control` (`alive` round trips), `queue`, `soak`;
    /// `floor-pool`, `floor-notify`, `floor-pg` (the floors alone). `serve` runs the service the
    /// PostgreSQL scenarios measure (they start it themselves).
    pub scenario: String,
    /// Tasks to run (`control`: requests; `queue`: jobs, also spelt `--jobs`). Default: 100,000
    /// (`pool`, `pg`, `queue`), 2,000 (`latency`), 1,000 (`control`).
    #[arg(long, visible_alias = "jobs", value_parser = clap::value_parser!(u64).range(1..))]
    pub tasks: Option<u64>,
    /// Worker processes.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub workers: u64,
    /// Concurrent publishers (tasks submitting work; `pg`: publishing connections, and the
    /// clients of the raw pg_notify measurement). Default: 4 for `pg`, else 1.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub publishers: Option<u64>,
    /// Messages per publish transaction (`pg`: one `pg_notify` over `unnest`, as
    /// `PgBroker::publish_batch` sends; `queue`: jobs per enqueue statement, default 1,000).
    /// Default: one message per transaction.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch: Option<u64>,
    /// PostgreSQL connection string (scenarios that use a database).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Seconds of the raw pg_notify measurement (`pg`, `floor-pg`), each round.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub raw_seconds: u64,
    /// How `pg` (unbatched; the floor of `pg --batch` is the bare process pool) and
    /// `floor-pg` measure the raw pg_notify rate, the floor: `pgbench` (a custom script, `-c P
    /// -j P -T S`), `loop` (P tokio-postgres connections running the prepared statement),
    /// `auto` (pgbench when found, else the loop), `none` (no floor).
    #[arg(long, default_value = "auto")]
    pub raw: floor::raw::RawTool,
    /// Who publishes the messages of an unbatched `pg` run: `statements` (P tokio-postgres
    /// connections running `PgBroker`'s prepared statement), `pgbench` (the floor's script on
    /// the service's channel, `-c P -j P -t N/P`: the same publisher on both sides of the ratio,
    /// which then measures what consuming costs alone), `auto` (pgbench when the floor is
    /// measured with pgbench).
    #[arg(long, default_value = "statements")]
    pub publish_with: scenarios::pg::PublishWith,
    /// The scheduling policy of the bare pool floor's workers: `batch` (`SCHED_BATCH`, as the
    /// project's workers have by default) or `normal`.
    #[arg(long, default_value = "batch")]
    pub floor_scheduling: dispatcher_pool::WorkerScheduling,
    /// Pause between two messages, milliseconds (`latency`: 2 by default; `queue`: the spacing
    /// of the latency jobs, 5 by default).
    #[arg(long)]
    pub pause_ms: Option<f64>,
    /// `queue`: jobs of the latency phase (one every `--pause-ms`).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub latency_jobs: u64,
    /// `queue`: also run graphile-worker (the durable-queue peer) in the same invocation,
    /// interleaved with this project's runs, and report both and their ratio. Skipped with a
    /// message when its script is absent.
    #[arg(long)]
    pub peer: bool,
    /// `queue --peer`: the peer's run script (`run.sh DBNAME JOBS CONCURRENCY BATCH`).
    #[arg(long, env = "PEER_GW_SCRIPT", default_value = "peer-gw/run.sh")]
    pub peer_script: std::path::PathBuf,
    /// `queue --peer`: the peer's job count.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub peer_jobs: u64,
    /// `queue --peer`: the peer's concurrency.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub peer_concurrency: u64,
    /// Rounds: `pool`, `pg`, `latency`, `control` run their same-run floor and then the
    /// scenario, this many times, and report medians (default 3; `control --flood`: 1).
    /// `queue`: runs of each side (default 3 with `--peer`, else 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub rounds: Option<u64>,
    /// The service's history size. Default: 10,000 (`pg`), at least the task count (`pool`,
    /// `latency`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub history: Option<u64>,
    /// `control`: first publish this many `bench.sleep` tasks (1 s each), so that the requests
    /// are timed while they wait behind the service's intake pause; the report then gives the
    /// round trips without the flood (measured first, same run) beside those with it.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub flood: Option<u64>,
    /// `pg`: the service also serves the web dashboard, and a viewer keeps its live overview
    /// open for the whole run (what an operator watching costs; compare with a run without).
    #[arg(long)]
    pub dashboard: bool,
    /// `serve` only: serve the dashboard on this address.
    #[arg(long, hide = true)]
    pub dashboard_address: Option<String>,
    /// `serve` only: the channel to listen on.
    #[arg(long, hide = true)]
    pub channel: Option<String>,
    /// `serve` only: also consume the durable queue of the channel.
    #[arg(long, hide = true)]
    pub queue: bool,
}

fn main() -> ExitCode {
    // As a service's `main` does (the `serve` mode is the measured service).
    dispatcher_server::limit_malloc_arenas(1);
    if let Some(code) = floor::pool::run_if_bare_worker() {
        return code;
    }
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
        Err(error::BenchError::Served) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dispatcher-bench: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
