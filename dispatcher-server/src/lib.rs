//! Run a dispatcher service the way operators do: from a TOML file, on PostgreSQL, with worker
//! processes, a Prometheus endpoint, a log level that `set_log_level` can change, and a graceful
//! stop on SIGTERM or SIGINT.
//!
//! ```no_run
//! use std::process::ExitCode;
//! use dispatcher_core::{task, TaskRegistry};
//! use dispatcher_server::{Server, ServerConfig};
//!
//! #[task(name = "app.ping")]
//! fn ping() {}
//!
//! fn main() -> ExitCode {
//!     // Before any thread starts: one malloc arena per core is most of a service's memory.
//!     dispatcher_server::limit_malloc_arenas(1);
//!     let registry = TaskRegistry::collected().expect("task names are unique");
//!     if let Some(code) = dispatcher_pool::run_if_worker(&registry) {
//!         return code; // a worker process
//!     }
//!     let mut config = ServerConfig::from_file("dispatcher.toml".as_ref()).expect("valid config");
//!     config.apply_env(); // DATABASE_URL
//!     // One worker thread: the hot path is one task (see `service_runtime`).
//!     let rt = dispatcher_server::service_runtime().expect("runtime");
//!     match rt.block_on(Server::new(config, registry).run()) {
//!         Ok(()) => ExitCode::SUCCESS,
//!         Err(e) => {
//!             eprintln!("{e}");
//!             ExitCode::FAILURE
//!         }
//!     }
//! }
//! ```
#![warn(missing_docs)]

pub mod config;
mod error;
mod logging;
mod memory;
mod runtime;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dispatcher_broker_pg::queue::{PgQueue, PgQueueConfig};
use dispatcher_broker_pg::{PgBroker, PgBrokerConfig};
use dispatcher_core::Registry;
use dispatcher_pool::{ProcessPool, ProcessPoolConfig};
use dispatcher_runtime::{Service, ServiceBuilder, ServiceConfig, ServiceHandle};

pub use config::ServerConfig;
pub use error::{Error, Result};
pub use logging::{init_logging, init_logging_as, level_filter, LogFormat, LogHandle};
pub use memory::{limit_malloc_arenas, release_free_memory};
pub use runtime::service_runtime;

type Configure = Box<dyn FnOnce(ServiceBuilder) -> ServiceBuilder + Send>;

/// A service to run from a [`ServerConfig`].
#[must_use]
pub struct Server {
    config: ServerConfig,
    registry: Arc<dyn Registry>,
    log: Option<Arc<LogHandle>>,
    configure: Option<Configure>,
    pool: Option<ProcessPoolConfig>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server for these settings and tasks.
    pub fn new(config: ServerConfig, registry: impl Registry) -> Self {
        Server {
            config,
            registry: Arc::new(registry),
            log: None,
            configure: None,
            pool: None,
        }
    }

    /// Lets `set_log_level` change the log filter (see [`init_logging`]).
    pub fn log_handle(mut self, log: Arc<LogHandle>) -> Self {
        self.log = Some(log);
        self
    }

    /// Adjusts the service builder (e.g. add scheduled tasks) before it starts.
    pub fn configure(
        mut self,
        f: impl FnOnce(ServiceBuilder) -> ServiceBuilder + Send + 'static,
    ) -> Self {
        self.configure = Some(Box::new(f));
        self
    }

    /// Replaces the pool settings derived from the file (e.g. to run another worker program).
    pub fn pool_config(mut self, pool: ProcessPoolConfig) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The pool settings the file describes.
    pub fn pool_settings(config: &ServerConfig) -> Result<ProcessPoolConfig> {
        let p = &config.pool;
        let mut c = ProcessPoolConfig::default();
        c.min_workers = p.min_workers;
        c.max_workers = p.max_workers;
        c.max_tasks_per_worker = p.max_tasks_per_worker;
        c.max_worker_age = p
            .max_worker_age
            .map(|a| config::seconds("pool.max_worker_age", a))
            .transpose()?;
        c.scale_down_after = config::seconds("pool.scale_down_after", p.scale_down_after)?;
        c.kill_grace = config::seconds("pool.kill_grace", p.kill_grace)?;
        c.health_interval = config::seconds("pool.health_interval", p.health_interval)?;
        c.health_timeout = config::seconds("pool.health_timeout", p.health_timeout)?;
        c.max_worker_rss = p.max_worker_memory_mb.map(|mb| mb * 1024 * 1024);
        c.max_worker_processes = p.max_worker_processes;
        c.worker_scheduling = p.worker_scheduling;
        Ok(c)
    }

    /// Starts everything: metrics endpoint, broker, pool, service. Returns the running service.
    pub async fn start(self) -> Result<Running> {
        let c = &self.config;
        c.validate()?;
        let metrics = match &c.metrics {
            Some(m) => Some(start_metrics(&m.address).await?),
            None => None,
        };
        let url = c.broker.url.clone().ok_or_else(|| {
            Error::Config(
                "no broker URL: set `url` in the `[broker]` section or the DATABASE_URL environment variable".into(),
            )
        })?;
        let mut bc = PgBrokerConfig::from_url(&url)?;
        bc.publish_connections = c.broker.publish_connections;
        bc.self_check_interval =
            config::seconds("broker.self_check_interval", c.broker.self_check_interval)?;
        bc.self_check_timeout =
            config::seconds("broker.self_check_timeout", c.broker.self_check_timeout)?;
        if let Some(t) = c.broker.connect_timeout {
            bc.connect_timeout = config::seconds("broker.connect_timeout", t)?;
        }
        bc.call_timeout = config::seconds("broker.call_timeout", c.broker.call_timeout)?;
        let broker = PgBroker::with_config(bc)
            .await
            .map_err(|source| Error::Connect {
                target: dispatcher_broker_pg::redact_connection_string(&url),
                source,
            })?;
        let broker = Arc::new(broker);
        let pool = match self.pool {
            Some(p) => p,
            None => Server::pool_settings(c)?,
        };
        let mut sc = ServiceConfig::default();
        if let Some(n) = &c.node_id {
            sc.node_id = n.clone();
        }
        sc.channels = c.channels.clone();
        sc.history_size = c.history_size;
        sc.history_max_bytes = c.history_max_bytes;
        sc.max_waiting = c.max_waiting;
        sc.intake_pause_at = c.intake_pause_at;
        sc.shutdown_grace = config::seconds("shutdown_grace", c.shutdown_grace)?;
        let grace = sc.shutdown_grace;
        sc.max_delay = config::seconds("limits.max_delay", c.limits.max_delay)?;
        sc.chunks.max_payload_bytes = c.limits.max_payload_bytes;
        sc.chunks.max_partials = c.limits.max_partial_messages;
        sc.chunks.max_buffered_bytes = c.limits.max_partial_bytes;
        sc.chunks.expiry = config::seconds("limits.partial_expiry", c.limits.partial_expiry)?;
        sc.metrics_endpoint = metrics.map(|a| a.to_string());
        let signing = c.signing_key()?;
        let mut builder = Service::builder()
            .config(sc)
            .shared_registry(self.registry)
            .broker(broker.clone())
            .pool(ProcessPool::with_config(pool));
        if c.queue.enabled {
            let q = &c.queue;
            let mut qc = PgQueueConfig::new(broker.config().clone()).schema(q.schema.clone());
            qc.migrate_on_start = q.migrate_on_start;
            qc.lease = config::seconds("queue.lease", q.lease)?;
            qc.poll_interval = config::seconds("queue.poll_interval", q.poll_interval)?;
            qc.max_prefetch = q.max_prefetch;
            qc.failed_retention = config::seconds(
                "queue.failed_retention_days",
                q.failed_retention_days * 86_400.0,
            )?;
            if let Some(n) = &c.node_id {
                qc.node = n.clone();
            }
            let queue = PgQueue::connect(qc)
                .await
                .map_err(|source| Error::Connect {
                    target: dispatcher_broker_pg::redact_connection_string(&url),
                    source,
                })?;
            tracing::info!(schema = %q.schema, "consuming the durable queue");
            builder = builder.broker(Arc::new(queue));
        }
        if let Some(log) = self.log {
            builder = builder.log_control(log);
        }
        if let Some(key) = signing {
            tracing::info!("message signing required");
            builder = builder.require_signatures(key);
        }
        if let Some(f) = self.configure {
            builder = f(builder);
        }
        let handle = builder.start().await?;
        let dashboard = match &c.dashboard {
            Some(d) => {
                let mut dc = dispatcher_dashboard::DashboardConfig::new(
                    d.address.clone(),
                    broker.config().clone(),
                );
                dc.channels = c.channels.clone();
                dc.token = c.dashboard_token()?;
                dc.signing = c.signing_key()?;
                if c.queue.enabled {
                    dc.queue_schema = Some(c.queue.schema.clone());
                }
                Some(dispatcher_dashboard::Dashboard::start(dc, broker.clone()).await?)
            }
            None => None,
        };
        let housekeeper =
            memory::release_after_bursts(handle.finished_counter(), c.release_memory_after)
                .map(AbortOnDrop);
        tracing::info!(node = %handle.node_id(), channels = ?c.channels, metrics = ?metrics, dashboard = ?dashboard.as_ref().map(|d| d.address()), "dispatcher service running");
        Ok(Running {
            handle,
            metrics,
            grace,
            dashboard,
            _housekeeper: housekeeper,
        })
    }

    /// Runs until SIGTERM or SIGINT, then stops gracefully; a second SIGTERM or SIGINT stops at
    /// once (see [`Running::until_signals`]).
    pub async fn run(self) -> Result<()> {
        let mut signals = ShutdownSignals::new()?;
        let running = self.start().await?;
        running.until_signals(&mut signals).await
    }
}

/// A started server.
#[derive(Debug)]
pub struct Running {
    handle: ServiceHandle,
    metrics: Option<SocketAddr>,
    grace: Duration,
    dashboard: Option<dispatcher_dashboard::Dashboard>,
    _housekeeper: Option<AbortOnDrop>,
}

/// A background task of the server, ended with it.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Running {
    /// The service.
    pub fn handle(&self) -> &ServiceHandle {
        &self.handle
    }

    /// The metrics endpoint's address, when there is one.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// The dashboard's address, when there is one.
    pub fn dashboard_address(&self) -> Option<SocketAddr> {
        self.dashboard.as_ref().map(|d| d.address())
    }

    /// Waits for `stop` (or for the service to end), then stops gracefully: no new work, running
    /// Calls get the configured grace, the rest are ended; Calls that had not started are recorded
    /// as canceled and logged with their task and arguments.
    pub async fn until(self, stop: impl Future<Output = ()>) -> Result<()> {
        self.until_or_now(stop, std::future::pending()).await
    }

    /// [`Running::until`], and when `now` resolves during the graceful stop, the running Calls
    /// are ended at once (recorded `canceled`, logged with their task and arguments) instead of
    /// at the end of the grace.
    pub async fn until_or_now(
        self,
        stop: impl Future<Output = ()>,
        now: impl Future<Output = ()>,
    ) -> Result<()> {
        tokio::select! {
            _ = stop => {}
            r = self.handle.join() => {
                r?;
                tracing::info!("dispatcher service stopped");
                return Ok(());
            }
        }
        self.stop(now).await
    }

    /// Runs until the first SIGTERM or SIGINT of `signals`, then stops gracefully; a second one
    /// ends the running Calls at once (as [`Running::until_or_now`]).
    pub async fn until_signals(self, signals: &mut ShutdownSignals) -> Result<()> {
        tokio::select! {
            name = signals.recv() => tracing::info!("{name} received"),
            r = self.handle.join() => {
                r?;
                tracing::info!("dispatcher service stopped");
                return Ok(());
            }
        }
        self.stop(async {
            let name = signals.recv().await;
            tracing::info!("{name} received again");
        })
        .await
    }

    /// The graceful stop, cut short when `now` resolves.
    async fn stop(self, now: impl Future<Output = ()>) -> Result<()> {
        tracing::info!(
            grace_s = self.grace.as_secs_f64(),
            "stop requested: taking no new work; running Calls have {:.1} s to finish; a second SIGTERM or SIGINT stops at once",
            self.grace.as_secs_f64()
        );
        let graceful = self.handle.shutdown();
        tokio::pin!(graceful);
        tokio::select! {
            r = &mut graceful => r?,
            _ = now => {
                tracing::info!("second stop request: ending the running Calls now");
                self.handle.shutdown_with_grace(Some(Duration::ZERO)).await?;
            }
        }
        tracing::info!("dispatcher service stopped");
        Ok(())
    }
}

/// SIGTERM and SIGINT, listened for from creation on (create it early, so that a signal during
/// start-up is not lost).
#[derive(Debug)]
pub struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Starts listening for SIGTERM and SIGINT.
    pub fn new() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate()).map_err(Error::Signals)?,
            int: signal(SignalKind::interrupt()).map_err(Error::Signals)?,
        })
    }

    /// Resolves at the next SIGTERM or SIGINT, and names it.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Resolves at the first SIGTERM or SIGINT.
pub fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    let mut signals = ShutdownSignals::new()?;
    Ok(async move {
        let name = signals.recv().await;
        tracing::info!("{name} received");
    })
}

/// Resolves `address` (`host:port`; a name is looked up now), binds the first address that
/// works, serves Prometheus metrics there and describes every metric.
async fn start_metrics(address: &str) -> Result<SocketAddr> {
    let err = |reason: String| Error::Metrics {
        address: address.to_owned(),
        reason,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(address)
        .await
        .map_err(|e| err(format!("the name does not resolve: {e}")))?
        .collect();
    // Bind first, so that a busy port is an error here rather than a log line later.
    let mut bound = Err(err("the name resolves to no address".into()));
    for a in addrs {
        match std::net::TcpListener::bind(a) {
            Ok(_) => {
                bound = Ok(a);
                break;
            }
            Err(e) => bound = Err(err(format!("{a}: {e}"))),
        }
    }
    let addr = bound?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0, 300.0,
        ])
        .map_err(|e| err(e.to_string()))?
        .install()
        .map_err(|e| err(e.to_string()))?;
    dispatcher_runtime::metrics::describe();
    dispatcher_broker_pg::metrics::describe();
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_failures_name_the_server_without_its_password() {
        let mut config = ServerConfig::default();
        config.broker.url = Some(
            "postgres://app:TOPSECRET@127.0.0.1:1/app?connect_timeout=2&password=TOPSECRET".into(),
        );
        let e = Server::new(config, dispatcher_core::TaskRegistry::new())
            .start()
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Connect { .. }), "{e:?}");
        let message = e.to_string();
        assert!(
            message.starts_with(
                "PostgreSQL at postgres://app:***@127.0.0.1:1/app?connect_timeout=2&password=***: "
            ),
            "{message}"
        );
        assert!(message.contains("could not connect"), "{message}");
        assert!(!format!("{e:?}").contains("TOPSECRET"), "{e:?}");
    }
}
