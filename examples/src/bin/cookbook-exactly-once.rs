//! Cookbook recipe 1: exactly one node runs each job, and nothing is lost while no node runs.
//!
//! Run a node (until Ctrl-C or SIGTERM), in as many terminals as you like:
//!
//! ```sh
//! cargo run -p dispatcher-examples --bin cookbook-exactly-once -- --node-id a
//! cargo run -p dispatcher-examples --bin cookbook-exactly-once -- --node-id b
//! ```
//!
//! Submit jobs (with or without nodes running) and exit:
//!
//! ```sh
//! cargo run -p dispatcher-examples --bin cookbook-exactly-once -- --submit 20 --work-ms 500
//! ```
//!
//! Each node logs the jobs it claims and finishes; `SELECT id, state, claimed_by, attempts FROM
//! dispatcher_jobs ORDER BY id` shows who ran what. See `examples/README.md`.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use dispatcher::{task, Broker, PgBroker, ProcessPool, Service, TaskRegistry};
use dispatcher_examples::cookbook::{self, exactly_once};

/// The cookbook's job: sleeps `ms` milliseconds, prints, and returns `n`.
#[task(name = "cookbook.work")]
fn work(n: i64, ms: u64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms));
    println!("job argument {n}: worked {ms} ms");
    n
}

#[derive(Parser, Debug)]
#[command(
    name = "cookbook-exactly-once",
    about = "Runs a node that claims jobs from dispatcher_jobs (or, with --submit, adds jobs)"
)]
struct Cli {
    #[command(flatten)]
    node: cookbook::NodeArgs,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Lease of a claim, in milliseconds: a dead node's jobs run elsewhere after it.
    #[arg(long, default_value_t = 30_000)]
    lease_ms: u64,
    /// Claim without a wake-up this often, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    sweep_ms: u64,
    /// Most jobs this node runs at once.
    #[arg(long, default_value_t = 4)]
    max_in_flight: usize,
    /// Instead of running a node: add this many `cookbook.work` jobs and exit.
    #[arg(long)]
    submit: Option<u32>,
    /// With --submit: how long each job works, in milliseconds.
    #[arg(long, default_value_t = 200)]
    work_ms: u64,
}

fn registry() -> TaskRegistry {
    TaskRegistry::new().register::<work>()
}

fn main() -> ExitCode {
    let registry = registry();
    // Worker processes are this executable started again: enter the worker loop first.
    if let Some(code) = dispatcher::process_pool::run_if_worker(&registry) {
        return code;
    }
    let cli = Cli::parse();
    dispatcher_examples::init_logging();
    let Ok(rt) = tokio::runtime::Runtime::new() else {
        eprintln!("cannot start the async runtime");
        return ExitCode::FAILURE;
    };
    let result = match cli.submit {
        Some(count) => rt.block_on(submit(&cli, count)),
        None => rt.block_on(node(&cli, registry)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cookbook-exactly-once: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error>;

async fn submit(cli: &Cli, count: u32) -> Result<(), BoxError> {
    let mut client = cookbook::connect(&cli.node.database_url).await?;
    cookbook::setup(&mut client).await?;
    // One transaction: all jobs appear, and the nodes are woken once, at commit.
    let tx = client.transaction().await?;
    let mut ids = Vec::new();
    for n in 0..count {
        ids.push(exactly_once::submit(&tx, work::call(i64::from(n), cli.work_ms)).await?);
    }
    tx.commit().await?;
    println!("submitted {} jobs: ids {:?}", ids.len(), ids);
    Ok(())
}

async fn node(cli: &Cli, registry: TaskRegistry) -> Result<(), BoxError> {
    let node_id = cli.node.node_id();
    if cli.workers == 0 || cli.lease_ms == 0 || cli.sweep_ms == 0 {
        return Err("--workers, --lease-ms and --sweep-ms must be above zero".into());
    }
    let mut client = cookbook::connect(&cli.node.database_url).await?;
    cookbook::setup(&mut client).await?;
    drop(client);
    let broker: Arc<dyn Broker> = Arc::new(PgBroker::connect(&cli.node.database_url).await?);
    let service = Arc::new(
        Service::builder()
            .registry(registry)
            .broker(broker.clone())
            .channels(["cookbook_exactly_once"])
            .node_id(node_id.clone())
            .pool(ProcessPool::new(cli.workers))
            .start()
            .await?,
    );
    let mut config =
        exactly_once::JobRunnerConfig::new(cli.node.database_url.clone(), node_id.clone());
    config.lease = Duration::from_millis(cli.lease_ms);
    config.sweep_every = Duration::from_millis(cli.sweep_ms);
    config.max_in_flight = cli.max_in_flight;
    let runner = exactly_once::JobRunner::start(config, Some(broker), service.clone()).await?;
    println!(
        "node {node_id} running jobs from dispatcher_jobs ({} workers); Ctrl-C to stop",
        cli.workers
    );
    cookbook::stop_signal().await?;
    println!("node {node_id} stopping: letting running jobs finish (up to 10 s)");
    runner.shutdown(Duration::from_secs(10)).await;
    println!("node {node_id}: {:?}", runner.stats());
    service.shutdown().await?;
    Ok(())
}
