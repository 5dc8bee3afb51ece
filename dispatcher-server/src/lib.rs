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
//!     let registry = TaskRegistry::collected().expect("task names are unique");
//!     if let Some(code) = dispatcher_pool::run_if_worker(&registry) {
//!         return code; // a worker process
//!     }
//!     let mut config = ServerConfig::from_file("dispatcher.toml".as_ref()).expect("valid config");
//!     config.apply_env(); // DATABASE_URL
//!     let rt = tokio::runtime::Runtime::new().expect("runtime");
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

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use dispatcher_broker_pg::queue::{PgQueue, PgQueueConfig};
use dispatcher_broker_pg::{PgBroker, PgBrokerConfig};
use dispatcher_core::Registry;
use dispatcher_pool::{ProcessPool, ProcessPoolConfig};
use dispatcher_runtime::{Service, ServiceBuilder, ServiceConfig, ServiceHandle};

pub use config::ServerConfig;
pub use error::{Error, Result};
pub use logging::{init_logging, LogHandle};

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
        Ok(c)
    }

    /// Starts everything: metrics endpoint, broker, pool, service. Returns the running service.
    pub async fn start(self) -> Result<Running> {
        let c = &self.config;
        c.validate()?;
        let metrics = match &c.metrics {
            Some(m) => Some(start_metrics(&m.address)?),
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
        tracing::info!(node = %handle.node_id(), channels = ?c.channels, metrics = ?metrics, "dispatcher service running");
        Ok(Running { handle, metrics })
    }

    /// Runs until SIGTERM or SIGINT, then stops gracefully (see [`Running::until`]).
    pub async fn run(self) -> Result<()> {
        let running = self.start().await?;
        running.until(shutdown_signal()?).await
    }
}

/// A started server.
#[derive(Debug)]
pub struct Running {
    handle: ServiceHandle,
    metrics: Option<SocketAddr>,
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

    /// Waits for `stop` (or for the service to end), then stops gracefully: no new work, running
    /// Calls get the configured grace, the rest are ended; Calls that had not started are recorded
    /// as canceled and their uuids logged.
    pub async fn until(self, stop: impl Future<Output = ()>) -> Result<()> {
        tokio::select! {
            _ = stop => {
                tracing::info!("stop requested; shutting down gracefully");
                self.handle.shutdown().await?;
            }
            r = self.handle.join() => r?,
        }
        tracing::info!("dispatcher service stopped");
        Ok(())
    }
}

/// Resolves at the first SIGTERM or SIGINT.
pub fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

fn start_metrics(address: &str) -> Result<SocketAddr> {
    let addr: SocketAddr = address.parse().map_err(|e| Error::Metrics {
        address: address.to_owned(),
        reason: format!("not host:port: {e}"),
    })?;
    // Bind first, so that a busy port is an error here rather than a log line later.
    std::net::TcpListener::bind(addr).map_err(|e| Error::Metrics {
        address: address.to_owned(),
        reason: e.to_string(),
    })?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0, 300.0,
        ])
        .map_err(|e| Error::Metrics {
            address: address.to_owned(),
            reason: e.to_string(),
        })?
        .install()
        .map_err(|e| Error::Metrics {
            address: address.to_owned(),
            reason: e.to_string(),
        })?;
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
