//! A task dispatcher for Rust applications on PostgreSQL.
//!
//! Declare background tasks with [`#[task]`](macro@task); anyone with database access publishes
//! small JSON messages naming a task; a long-running [`Service`] looks the task up in its
//! [registry](TaskRegistry), applies the task's declared policy (timeout, duplicates, delay) and
//! runs it in a pool of worker processes; every execution is recorded as a [`Call`] with full
//! timings, and operators query services with control commands. It speaks the wire format of
//! the Python `dispatcherd`.
//!
//! This crate is the one dependency for the common case; the crates it re-exports can also be
//! used alone:
//!
//! | crate | what | here |
//! |---|---|---|
//! | `dispatcher-core` | the contract: tasks, Calls, wire format, `Broker`/`Pool`/`Registry`/`PublishHook` traits, `Publisher`, typed control replies | always, and as [`core`] |
//! | `dispatcher-runtime` | the service loop, the in-process pool, the in-memory broker | always, and as [`runtime`] |
//! | `dispatcher-broker-pg` | the PostgreSQL brokers: LISTEN/NOTIFY and the durable queue | feature `postgres` (default), as `postgres` |
//! | `dispatcher-pool` | worker processes | feature `process-pool` (default), as `process_pool` |
//! | `dispatcher-server` | a service process from a TOML file, with metrics, logging and signals | feature `server`, as `server` |
//!
//! Feature `tls` adds TLS to the PostgreSQL connections.
//!
//! ```
//! use std::time::Duration;
//! use dispatcher::{task, InProcessPool, Outcome, Service, TaskRegistry};
//!
//! /// Adds two numbers.
//! #[task(name = "demo.add")]
//! fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> dispatcher::Result<()> {
//! let service = Service::builder()
//!     .registry(TaskRegistry::new().register::<add>())
//!     .pool(InProcessPool::new(2))
//!     .start()
//!     .await?;
//! service.submit(add::call(1, 2)).await?;
//! service.wait_for_finished(1, Duration::from_secs(5)).await?;
//! let calls = service.history(&Default::default());
//! assert_eq!(calls[0].outcome, Some(Outcome::Ok));
//! assert_eq!(calls[0].result, Some(3.into()));
//! service.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! With PostgreSQL and worker processes (features `postgres` and `process-pool`, the default),
//! a program lets its workers in first, then runs a service and publishes:
//!
//! ```no_run
//! use std::process::ExitCode;
//! use std::sync::Arc;
//! use dispatcher::{run_if_worker, task, PgBroker, ProcessPool, Publisher, Service, TaskRegistry};
//!
//! #[task(name = "billing.invoice", timeout = 30, on_duplicate = "discard")]
//! async fn invoice(customer_id: i64, amount_cents: u64) -> Result<String, String> {
//!     Ok(format!("invoice for {customer_id}: {amount_cents}"))
//! }
//!
//! fn main() -> ExitCode {
//!     let registry = TaskRegistry::new().register::<invoice>();
//!     // Worker processes are this executable started again: let them in first.
//!     if let Some(code) = run_if_worker(&registry) {
//!         return code;
//!     }
//!     let Ok(rt) = tokio::runtime::Runtime::new() else { return ExitCode::FAILURE };
//!     let run = rt.block_on(async {
//!         let broker = Arc::new(PgBroker::connect("postgres://postgres@127.0.0.1/postgres").await?);
//!         let service = Service::builder()
//!             .registry(registry)
//!             .broker(broker.clone())
//!             .channels(["billing"])
//!             .pool(ProcessPool::new(4))
//!             .start()
//!             .await?;
//!         let publisher = Publisher::new(broker, "billing")?;
//!         invoice::call(7, 1999).publish(&publisher).await?;
//!         service.shutdown().await?;
//!         Ok::<(), dispatcher::Error>(())
//!     });
//!     match run {
//!         Ok(()) => ExitCode::SUCCESS,
//!         Err(e) => {
//!             eprintln!("{e}");
//!             ExitCode::FAILURE
//!         }
//!     }
//! }
//! ```
//!
//! Two PostgreSQL brokers can feed one service: [`PgBroker`] (LISTEN/NOTIFY: at most once, and
//! the path of control commands) and [`PgQueue`] (the durable queue: every job whose enqueue
//! succeeded runs at least once, with retries by the task's policy). A service consumes the
//! queues named like its channels; publishing through a [`Publisher`] over the queue enqueues,
//! and [`PgQueue::enqueue`] adds a priority, a `run_at` and a unique key:
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//! use dispatcher::{
//!     task, InProcessPool, Job, PgBroker, PgQueue, PgQueueConfig, Publisher, Service,
//!     TaskRegistry,
//! };
//!
//! /// Retried on the durable queue: 5 attempts, 2 s backoff doubling per attempt.
//! #[task(name = "billing.charge", max_attempts = 5, backoff = 2)]
//! async fn charge(order_id: i64) -> Result<String, String> {
//!     Ok(format!("charged order {order_id}"))
//! }
//!
//! # async fn run() -> dispatcher::Result<()> {
//! let url = "postgres://postgres@127.0.0.1/postgres";
//! let pg_broker = Arc::new(PgBroker::connect(url).await?);
//! let mut config = PgQueueConfig::from_url(url)?;
//! config.migrate_on_start = true; // or `dispatcherctl migrate` beforehand
//! let queue = Arc::new(PgQueue::connect(config).await?);
//! let service = Service::builder()
//!     .registry(TaskRegistry::new().register::<charge>())
//!     .broker(pg_broker)
//!     .broker(queue.clone())
//!     .channels(["billing"])
//!     .pool(InProcessPool::new(4))
//!     .start()
//!     .await?;
//!
//! // A publisher over the queue enqueues.
//! let durable = Publisher::new(queue.clone(), "billing")?;
//! charge::call(41).publish(&durable).await?;
//! // With options: higher priority first, not before `run_at`, one live job per key.
//! let job = Job::from_submission(charge::call(42), "billing")?
//!     .priority(10)
//!     .run_at(SystemTime::now() + Duration::from_secs(60))
//!     .unique_key("charge-42");
//! let enqueued = queue.enqueue(job).await?;
//! println!("job {} (already there: {})", enqueued.id, enqueued.existing);
//! service.shutdown().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;

pub use error::{Error, Result};

/// The contract crate, whole.
pub use dispatcher_core as core;
/// The runtime crate, whole.
pub use dispatcher_runtime as runtime;

pub use dispatcher_core::control;
pub use dispatcher_core::{
    task, Broker, Call, CallFilter, HookDecision, OnDuplicate, Outcome, Outgoing, Pool,
    PublishHook, Published, Publisher, Registry, RejectReason, Submission, Task, TaskConfig,
    TaskContext, TaskDescriptor, TaskMessage, TaskRegistry,
};
pub use dispatcher_runtime::{
    FinishedCounter, InProcessPool, LogLevelControl, MemoryBroker, Service, ServiceBuilder,
    ServiceConfig, ServiceHandle,
};

/// The PostgreSQL broker crate, whole.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use dispatcher_broker_pg as postgres;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use dispatcher_broker_pg::queue::{Job, PgQueue, PgQueueConfig};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use dispatcher_broker_pg::{PgBroker, PgBrokerConfig};

/// The process pool crate, whole.
#[cfg(feature = "process-pool")]
#[cfg_attr(docsrs, doc(cfg(feature = "process-pool")))]
pub use dispatcher_pool as process_pool;
#[cfg(feature = "process-pool")]
#[cfg_attr(docsrs, doc(cfg(feature = "process-pool")))]
pub use dispatcher_pool::{run_if_worker, ProcessPool, ProcessPoolConfig};

/// The server crate, whole: a service process from a TOML file.
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub use dispatcher_server as server;

/// What `#[task]` expands to refers to; not a public API.
#[doc(hidden)]
pub use dispatcher_core::__private;
