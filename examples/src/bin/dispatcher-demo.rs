//! The demo application: how a real application is wired (its `main`, the worker entry, the
//! registry, the configuration), and the first thing to run.
//!
//! * `dispatcher-demo` — the quickstart: runs a service with 4 worker processes, publishes a
//!   showcase of the demo tasks (on PostgreSQL when `DATABASE_URL` is set, in memory otherwise),
//!   waits for them and prints the Call history.
//! * `dispatcher-demo serve [--database-url URL] [--channel NAME]... [--workers N] [--node-id ID]
//!   [--config FILE]` — runs the demo service until SIGTERM or SIGINT.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dispatcher::server::{init_logging, Server, ServerConfig};
use dispatcher::{
    task, Broker, MemoryBroker, ProcessPool, Publisher, Service, TaskContext, TaskRegistry,
};

/// Does nothing.
#[task(name = "demo.noop")]
fn noop() {}

/// Returns its argument.
#[task(name = "demo.echo")]
fn echo(value: serde_json::Value) -> serde_json::Value {
    value
}

/// Sleeps `seconds`.
#[task(name = "demo.sleep")]
async fn sleep(seconds: f64) -> Result<f64, String> {
    let d =
        Duration::try_from_secs_f64(seconds).map_err(|e| format!("seconds = {seconds}: {e}"))?;
    tokio::time::sleep(d).await;
    Ok(seconds)
}

/// Declared with a 1 second timeout; sleeps a minute, so it always times out.
#[task(name = "demo.slow", timeout = 1)]
fn slow() {
    std::thread::sleep(Duration::from_secs(60));
}

/// Fails with `message`.
#[task(name = "demo.fail")]
fn fail(message: String) -> Result<(), String> {
    Err(message)
}

/// Panics.
#[task(name = "demo.panic")]
fn panics() {
    panic!("demo.panic panics on purpose");
}

/// Aborts its worker process.
#[task(name = "demo.abort")]
fn abort() {
    std::process::abort();
}

/// Sleeps `seconds`; a duplicate (same arguments) arriving meanwhile is discarded.
#[task(name = "demo.exclusive", on_duplicate = "discard")]
fn exclusive(seconds: f64) -> Result<(), String> {
    let d =
        Duration::try_from_secs_f64(seconds).map_err(|e| format!("seconds = {seconds}: {e}"))?;
    std::thread::sleep(d);
    Ok(())
}

/// Submits `n` `demo.echo` children through its context.
#[task(name = "demo.fanout", context)]
fn fanout(ctx: &TaskContext, n: u32) -> Result<Vec<String>, dispatcher::core::Error> {
    (0..n)
        .map(|i| {
            ctx.submit(echo::call(
                serde_json::json!({ "child": i, "of": ctx.uuid() }),
            ))
        })
        .collect()
}

/// The demo's tasks, registered explicitly (`TaskRegistry::collected()` would find the same).
fn registry() -> TaskRegistry {
    TaskRegistry::new()
        .register::<noop>()
        .register::<echo>()
        .register::<sleep>()
        .register::<slow>()
        .register::<fail>()
        .register::<panics>()
        .register::<abort>()
        .register::<exclusive>()
        .register::<fanout>()
}

#[derive(Parser, Debug)]
#[command(
    name = "dispatcher-demo",
    version,
    about = "The dispatcher's demo application"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the demo service until SIGTERM or SIGINT.
    Serve {
        /// PostgreSQL URL (default: `DATABASE_URL`, then the config file).
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// Channel to listen on (repeatable; default `dispatcher_demo`).
        #[arg(long = "channel")]
        channels: Vec<String>,
        /// Run exactly N worker processes.
        #[arg(long)]
        workers: Option<usize>,
        /// This service's node id.
        #[arg(long)]
        node_id: Option<String>,
        /// A TOML configuration file (see the README for every key).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let registry = registry();
    // Worker processes are this executable started again: enter the worker loop first.
    if let Some(code) = dispatcher::process_pool::run_if_worker(&registry) {
        return code;
    }
    let cli = Cli::parse();
    let Ok(rt) = tokio::runtime::Runtime::new() else {
        eprintln!("cannot start the async runtime");
        return ExitCode::FAILURE;
    };
    let result = match cli.command {
        None => rt.block_on(quickstart(registry)),
        Some(Command::Serve {
            database_url,
            channels,
            workers,
            node_id,
            config,
        }) => rt.block_on(serve(
            registry,
            database_url,
            channels,
            workers,
            node_id,
            config,
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dispatcher-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error>;

async fn serve(
    registry: TaskRegistry,
    database_url: Option<String>,
    channels: Vec<String>,
    workers: Option<usize>,
    node_id: Option<String>,
    config: Option<PathBuf>,
) -> Result<(), BoxError> {
    let mut c = match &config {
        Some(path) => ServerConfig::from_file(path)?,
        None => {
            let mut c = ServerConfig::default();
            c.channels = vec!["dispatcher_demo".to_owned()];
            c
        }
    };
    c.apply_env();
    if let Some(url) = database_url {
        c.broker.url = Some(url);
    }
    if !channels.is_empty() {
        c.channels = channels;
    }
    if let Some(n) = workers {
        if n == 0 {
            return Err("--workers must be at least 1".into());
        }
        c.pool.min_workers = n;
        c.pool.max_workers = n;
    }
    if node_id.is_some() {
        c.node_id = node_id;
    }
    c.validate()?;
    let log = init_logging(&c.log_level)?;
    Server::new(c, registry).log_handle(log).run().await?;
    Ok(())
}

async fn quickstart(registry: TaskRegistry) -> Result<(), BoxError> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .try_init();
    let channel = "dispatcher_demo_quickstart";
    let (broker, where_): (Arc<dyn Broker>, String) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => (
            Arc::new(
                dispatcher::postgres::PgBroker::connect(&url)
                    .await
                    .map_err(|e| {
                        let shown = dispatcher::postgres::redact_connection_string(&url);
                        format!("PostgreSQL at {shown} (DATABASE_URL): {e}")
                    })?,
            ),
            "PostgreSQL (DATABASE_URL)".to_owned(),
        ),
        _ => (
            Arc::new(MemoryBroker::new()),
            "the in-memory broker (set DATABASE_URL to use PostgreSQL)".to_owned(),
        ),
    };
    let service = Service::builder()
        .registry(registry)
        .broker(broker.clone())
        .channels([channel])
        .node_id("demo-quickstart")
        .pool(ProcessPool::new(4))
        .start()
        .await?;
    println!("dispatcher-demo quickstart: a service with 4 worker processes on {where_}\n");
    let p = Publisher::new(broker, channel)?;
    p.publish(noop::call()).await?;
    p.publish(echo::call(serde_json::json!({"hello": "world"})))
        .await?;
    p.publish(sleep::call(0.5)).await?;
    p.publish(slow::call()).await?;
    p.publish(fail::call("this failure is on purpose".into()))
        .await?;
    p.publish(panics::call()).await?;
    p.publish(abort::call()).await?;
    p.publish(exclusive::call(0.5)).await?;
    p.publish(exclusive::call(0.5)).await?;
    p.publish(noop::call().delay(Duration::from_millis(300)))
        .await?;
    p.publish(fanout::call(3)).await?;
    p.publish_message(channel, dispatcher::core::TaskMessage::new("demo.unknown"))
        .await?;
    // 12 published + 3 children of demo.fanout
    service
        .wait_for_finished(15, Duration::from_secs(30))
        .await?;
    let calls = service.history(&Default::default());
    println!("{}", dispatcher_examples::call_table(&calls));
    println!(
        "Every message became a Call. Run `dispatcher-demo serve` for a long-running service."
    );
    service.shutdown().await?;
    Ok(())
}
