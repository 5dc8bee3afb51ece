//! Cookbook recipe 2: a periodic task runs once per interval anywhere in the cluster.
//!
//! Run a node (until Ctrl-C or SIGTERM) in two or more terminals:
//!
//! ```sh
//! cargo run -p dispatcher-examples --bin cookbook-periodic -- --node-id a
//! cargo run -p dispatcher-examples --bin cookbook-periodic -- --node-id b
//! ```
//!
//! Every node checks every `--check-ms`; each interval exactly one of them logs "won this
//! interval's run" and its worker prints the report. Stop the node that wins most: the others
//! carry on. See `examples/README.md`.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use dispatcher::{task, Broker, PgBroker, ProcessPool, Service, TaskRegistry};
use dispatcher_examples::cookbook::{self, periodic::PeriodicScheduler};

/// The periodic body: prints which node runs it, and when.
#[task(name = "cookbook.report")]
fn report(node: String) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let line = format!("report from node {node} at {now:.3}");
    println!("{line}");
    line
}

#[derive(Parser, Debug)]
#[command(
    name = "cookbook-periodic",
    about = "Runs a node of a cluster that runs cookbook.report once per interval"
)]
struct Cli {
    #[command(flatten)]
    node: cookbook::NodeArgs,
    /// The interval of cookbook.report, in milliseconds (the same on every node).
    #[arg(long, default_value_t = 2_000)]
    interval_ms: u64,
    /// How often this node checks whether a run is due, in milliseconds.
    #[arg(long, default_value_t = 250)]
    check_ms: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

fn main() -> ExitCode {
    let registry = TaskRegistry::new().register::<report>();
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
    match rt.block_on(node(cli, registry)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cookbook-periodic: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn node(cli: Cli, registry: TaskRegistry) -> Result<(), Box<dyn std::error::Error>> {
    let node_id = cli.node.node_id();
    if cli.workers == 0 || cli.interval_ms == 0 || cli.check_ms == 0 {
        return Err("--workers, --interval-ms and --check-ms must be above zero".into());
    }
    let mut client = cookbook::connect(&cli.node.database_url).await?;
    cookbook::setup(&mut client).await?;
    drop(client);
    // The broker is only for control commands (dispatcherctl); the check needs none.
    let broker: Arc<dyn Broker> = Arc::new(PgBroker::connect(&cli.node.database_url).await?);
    let service = Arc::new(
        Service::builder()
            .registry(registry)
            .broker(broker)
            .channels(["cookbook_periodic"])
            .node_id(node_id.clone())
            .pool(ProcessPool::new(cli.workers))
            .start()
            .await?,
    );
    let interval = Duration::from_millis(cli.interval_ms);
    let periodic = PeriodicScheduler::new(cli.node.database_url.clone(), node_id.clone())
        .every("cookbook.report", interval, report::call(node_id.clone()))
        .check_every(Duration::from_millis(cli.check_ms))
        .start(service.clone())
        .await?;
    println!(
        "node {node_id}: cookbook.report runs once every {} ms somewhere in the cluster; Ctrl-C to stop",
        cli.interval_ms
    );
    cookbook::stop_signal().await?;
    periodic.shutdown().await;
    println!("node {node_id} won {} runs", periodic.wins().len());
    service.shutdown().await?;
    Ok(())
}
