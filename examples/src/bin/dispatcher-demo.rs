//! The demo application: how a real application is wired (its `main`, the worker entry, the
//! registry, the configuration), and the first thing to run.
//!
//! * `dispatcher-demo [--log-format text|json]` — the quickstart: runs a service with 4 worker processes, publishes a
//!   showcase of the demo tasks (on PostgreSQL when `DATABASE_URL` is set, in memory otherwise),
//!   waits for them and prints the Call history. On PostgreSQL it also consumes the durable
//!   queue and enqueues `demo.flaky(2)`, which fails on attempts 1 and 2 and succeeds on 3.
//! * `dispatcher-demo serve [--database-url URL] [--channel NAME]... [--workers N] [--node-id ID]
//!   [--config FILE] [--queue] [--dashboard ADDR] [--log-format text|json]` — runs the demo service until SIGTERM or SIGINT; with `--queue`
//!   it also consumes the durable queue of its database (each channel is also a queue; the
//!   queue's schema is migrated on start); with `--dashboard 127.0.0.1:9180` it serves the web
//!   dashboard there (actions enabled by `DISPATCHER_DASHBOARD_TOKEN`).
//! * `dispatcher-demo enqueue [--database-url URL] [--queue NAME] [--kwargs JSON] [--priority N]
//!   [--delay SECONDS] [--unique-key KEY] TASK [ARGS]` — enqueues one job on the durable queue
//!   (default queue `dispatcher`) and prints its id and uuid.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dispatcher::postgres::redact_connection_string;
use dispatcher::server::{init_logging_as, LogFormat, Server, ServerConfig};
use dispatcher::{
    task, Broker, CallFilter, Job, MemoryBroker, Outcome, PgQueue, PgQueueConfig, ProcessPool,
    Publisher, Service, ServiceHandle, TaskContext, TaskMessage, TaskRegistry,
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

/// Fails while its attempt is at most `failures`, then returns the attempt it succeeded on. On
/// the durable queue a failed attempt is retried after a backoff (0.5 s, doubling), up to 5
/// attempts; through NOTIFY every Call is a first attempt, so `failures` ≥ 1 always fails.
#[task(name = "demo.flaky", context, max_attempts = 5, backoff = 0.5)]
fn flaky(ctx: &TaskContext, failures: u32) -> Result<u32, String> {
    let attempt = ctx.attempt();
    if attempt <= failures {
        Err(format!(
            "attempt {attempt} fails on purpose (demo.flaky fails {failures} times)"
        ))
    } else {
        Ok(attempt)
    }
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
        .register::<flaky>()
}

#[derive(Parser, Debug)]
#[command(
    name = "dispatcher-demo",
    version,
    about = "The dispatcher's demo application"
)]
struct Cli {
    /// Log lines as `text` or `json` (one JSON object per line), for the quickstart.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
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
        /// Channel to listen on (repeatable; default `dispatcher`, dispatcherctl's default too).
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
        /// Also consume the durable queue of the same database (each channel is also a queue;
        /// the queue's schema is migrated on start). Control commands stay on NOTIFY.
        #[arg(long)]
        queue: bool,
        /// Serve the web dashboard on this `host:port` (read-only unless
        /// `DISPATCHER_DASHBOARD_TOKEN` holds an access token).
        #[arg(long, value_name = "ADDR")]
        dashboard: Option<String>,
        /// Log lines as `text` or `json` (one JSON object per line); default: the config file's
        /// `log_format`, else text.
        #[arg(long, value_name = "FORMAT")]
        log_format: Option<LogFormat>,
    },
    /// Enqueue one job on the durable queue (the queue's schema is migrated first when missing).
    Enqueue {
        /// PostgreSQL URL (default: `DATABASE_URL`; what it leaves unset, or all when neither is
        /// given, from the PG* variables and ~/.pgpass as for psql).
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// The queue (a service consumes the queues named like its channels).
        #[arg(long, default_value = "dispatcher")]
        queue: String,
        /// Named arguments, a JSON object.
        #[arg(long)]
        kwargs: Option<String>,
        /// Higher runs first.
        #[arg(long, default_value_t = 0)]
        priority: i32,
        /// Run no earlier than this many seconds from now.
        #[arg(long)]
        delay: Option<f64>,
        /// At most one live job with this key in the queue: enqueueing again returns that one.
        #[arg(long)]
        unique_key: Option<String>,
        /// The task's name, e.g. `demo.flaky`.
        task: String,
        /// Positional arguments, a JSON array (default `[]`).
        args: Option<String>,
    },
}

fn main() -> ExitCode {
    // Before any thread starts (see the function: most of a service's memory otherwise).
    dispatcher::server::limit_malloc_arenas(1);
    let registry = registry();
    // Worker processes are this executable started again: enter the worker loop first.
    if let Some(code) = dispatcher::process_pool::run_if_worker(&registry) {
        return code;
    }
    let cli = Cli::parse();
    // One runtime worker thread: a service's hot path is one task.
    let Ok(rt) = dispatcher::server::service_runtime() else {
        eprintln!("cannot start the async runtime");
        return ExitCode::FAILURE;
    };
    let result = match cli.command {
        None => rt.block_on(quickstart(registry, cli.log_format.unwrap_or_default())),
        Some(Command::Serve {
            database_url,
            channels,
            workers,
            node_id,
            config,
            queue,
            dashboard,
            log_format,
        }) => rt.block_on(serve(
            registry,
            ServeArgs {
                database_url,
                channels,
                workers,
                node_id,
                config,
                queue,
                dashboard,
                log_format,
            },
        )),
        Some(Command::Enqueue {
            database_url,
            queue,
            kwargs,
            priority,
            delay,
            unique_key,
            task,
            args,
        }) => rt.block_on(enqueue(EnqueueArgs {
            database_url,
            queue,
            kwargs,
            priority,
            delay,
            unique_key,
            task,
            args,
        })),
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

struct ServeArgs {
    database_url: Option<String>,
    channels: Vec<String>,
    workers: Option<usize>,
    node_id: Option<String>,
    config: Option<PathBuf>,
    queue: bool,
    dashboard: Option<String>,
    log_format: Option<LogFormat>,
}

async fn serve(registry: TaskRegistry, args: ServeArgs) -> Result<(), BoxError> {
    let ServeArgs {
        database_url,
        channels,
        workers,
        node_id,
        config,
        queue,
        dashboard,
        log_format,
    } = args;
    let mut c = match &config {
        Some(path) => ServerConfig::from_file(path)?,
        // The server's default channel, `dispatcher`: dispatcherctl's default too.
        None => ServerConfig::default(),
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
    if queue {
        c.queue.enabled = true;
        c.queue.migrate_on_start = true;
    }
    if let Some(address) = dashboard {
        c.dashboard = Some(dispatcher::server::config::DashboardSection::new(address));
    }
    if let Some(f) = log_format {
        c.log_format = f;
    }
    c.validate()?;
    let log = init_logging_as(&c.log_level, c.log_format)?;
    Server::new(c, registry).log_handle(log).run().await?;
    Ok(())
}

struct EnqueueArgs {
    database_url: Option<String>,
    queue: String,
    kwargs: Option<String>,
    priority: i32,
    delay: Option<f64>,
    unique_key: Option<String>,
    task: String,
    args: Option<String>,
}

/// Connects to the durable queue of the database at `url`, migrating its schema when needed.
async fn connect_queue(url: &str, node: &str) -> Result<PgQueue, BoxError> {
    let shown = redact_connection_string(url);
    let mut config = PgQueueConfig::from_url(url)?;
    config.migrate_on_start = true;
    config.node = node.to_owned();
    PgQueue::connect(config)
        .await
        .map_err(|e| format!("the durable queue at {shown}: {e}").into())
}

async fn enqueue(a: EnqueueArgs) -> Result<(), BoxError> {
    // Without a URL, the PG* variables (PGHOST, PGDATABASE, ...) say where, as for psql.
    let from_env = ["PGHOST", "PGDATABASE", "PGUSER", "PGPORT"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    let url = match a.database_url.filter(|u| !u.is_empty()) {
        Some(url) => url,
        None if from_env => String::new(),
        None => {
            return Err(
                "no database: pass --database-url, set DATABASE_URL, or set PGHOST/PGDATABASE                  (and the other PG* variables as for psql)"
                    .into(),
            )
        }
    };
    let mut message = TaskMessage::new(a.task);
    if let Some(args) = &a.args {
        message.args = match serde_json::from_str(args) {
            Ok(serde_json::Value::Array(v)) => v,
            Ok(other) => return Err(format!("ARGS must be a JSON array, got {other}").into()),
            Err(e) => return Err(format!("ARGS is not JSON ({e}): {args}").into()),
        };
    }
    if let Some(kwargs) = &a.kwargs {
        message.kwargs = match serde_json::from_str(kwargs) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(other) => return Err(format!("--kwargs must be a JSON object, got {other}").into()),
            Err(e) => return Err(format!("--kwargs is not JSON ({e}): {kwargs}").into()),
        };
    }
    // Every attempt of the job runs as a Call with this uuid.
    let uuid = dispatcher::core::call::new_uuid();
    message.uuid = Some(uuid.clone());
    message.time_pub = Some(dispatcher::core::call::now_epoch());
    let mut job = Job::new(a.queue.clone(), &message)?.priority(a.priority);
    if let Some(seconds) = a.delay {
        let d =
            Duration::try_from_secs_f64(seconds).map_err(|e| format!("--delay {seconds}: {e}"))?;
        job = job.delay(d);
    }
    if let Some(key) = a.unique_key {
        job = job.unique_key(key);
    }
    let queue = connect_queue(&url, "demo-enqueue").await?;
    let done = queue.enqueue(job).await?;
    if done.existing {
        println!(
            "a live job with that unique key exists: job {} on queue {}; nothing added",
            done.id, a.queue
        );
    } else {
        println!(
            "enqueued job {} on queue {}: {} uuid {uuid}",
            done.id, a.queue, message.task
        );
    }
    Ok(())
}

async fn quickstart(registry: TaskRegistry, log_format: LogFormat) -> Result<(), BoxError> {
    // Errors only (RUST_LOG overrides), coloured only on a terminal.
    init_logging_as("error", log_format)?;
    let channel = "dispatcher_demo_quickstart";
    let url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
    let (broker, queue, where_): (Arc<dyn Broker>, Option<Arc<PgQueue>>, String) = match &url {
        Some(url) => {
            let broker = dispatcher::postgres::PgBroker::connect(url)
                .await
                .map_err(|e| {
                    let shown = redact_connection_string(url);
                    format!("PostgreSQL at {shown} (DATABASE_URL): {e}")
                })?;
            let queue = connect_queue(url, "demo-quickstart").await?;
            (
                Arc::new(broker),
                Some(Arc::new(queue)),
                "PostgreSQL (DATABASE_URL): NOTIFY and the durable queue".to_owned(),
            )
        }
        None => (
            Arc::new(MemoryBroker::new()),
            None,
            "the in-memory broker (set DATABASE_URL to use PostgreSQL)".to_owned(),
        ),
    };
    let mut builder = Service::builder()
        .registry(registry)
        .broker(broker.clone())
        .channels([channel])
        .node_id("demo-quickstart")
        .pool(ProcessPool::new(4));
    if let Some(q) = &queue {
        builder = builder.broker(q.clone());
    }
    // Ctrl-C or SIGTERM stops the showcase through the normal shutdown, so the workers and the
    // pool's socket directory go with it. The handlers are in place before anything is printed.
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let service = builder.start().await?;
    println!("dispatcher-demo quickstart: a service with 4 worker processes on {where_}\n");
    let outcome = tokio::select! {
        r = showcase(&service, broker, queue, channel) => r,
        _ = interrupt.recv() => {
            println!("dispatcher-demo: stopping (SIGINT)");
            Ok(())
        }
        _ = terminate.recv() => {
            println!("dispatcher-demo: stopping (SIGTERM)");
            Ok(())
        }
    };
    service.shutdown().await?;
    outcome
}

/// Publishes every demo task, waits for their Calls and prints the history.
async fn showcase(
    service: &ServiceHandle,
    broker: Arc<dyn Broker>,
    queue: Option<Arc<PgQueue>>,
    channel: &str,
) -> Result<(), BoxError> {
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
    p.publish_message(channel, TaskMessage::new("demo.unknown"))
        .await?;
    // 12 published + 3 children of demo.fanout
    let mut expected = 15;
    let mut flaky_uuid = None;
    if let Some(q) = &queue {
        // On the durable queue: fails on attempts 1 and 2, each retried after its backoff.
        let uuid = dispatcher::core::call::new_uuid();
        q.enqueue(Job::from_submission(
            flaky::call(2).uuid(uuid.clone()),
            channel,
        )?)
        .await?;
        flaky_uuid = Some(uuid);
        expected += 3;
    }
    service
        .wait_for_finished(expected, Duration::from_secs(30))
        .await?;
    if let Some(uuid) = &flaky_uuid {
        // The queue may hold jobs of an earlier run on this queue: wait for this one's success.
        let filter = CallFilter {
            uuid: Some(uuid.clone()),
            outcome: Some(Outcome::Ok),
            ..Default::default()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while service.history(&filter).is_empty() {
            if tokio::time::Instant::now() > deadline {
                return Err(format!("demo.flaky (uuid {uuid}) did not succeed within 30 s").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let calls = service.history(&Default::default());
    println!("{}", dispatcher_examples::call_table(&calls));
    println!("Every message became a Call.");
    if flaky_uuid.is_some() {
        println!(
            "demo.flaky(2) ran from the durable queue: attempts 1 and 2 failed and were retried \
             after a backoff, attempt 3 succeeded (the attempt column)."
        );
    }
    println!("Run `dispatcher-demo serve` for a long-running service.");
    Ok(())
}
