//! A live web dashboard for a dispatcher cluster.
//!
//! It shows every service answering on the configured channels (nodes, workers, the Calls they
//! ran, throughput and latency charts, their tasks' policies) and, with a durable queue, its
//! jobs. It sees the services only through control commands, like `dispatcherctl`: one round of
//! `main`, `workers`, `metrics` and `history` per second on each channel while someone is looking
//! (every 10 s otherwise), however many browsers are open. Pages are rendered on the server
//! (HTML, inline SVG charts) and kept live over server-sent events; the stylesheet and the small
//! script that swaps the live parts are compiled into the binary.
//!
//! Read-only unless an access token is configured: then whoever signs in with it can cancel a
//! running Call and retry or discard failed jobs, through POST forms carrying a token derived
//! from the access token (a cross-site page can neither read nor forge it), from pages whose
//! session cookie is `SameSite=Strict`; every action is logged.
//!
//! ```no_run
//! use std::sync::Arc;
//! use dispatcher_dashboard::{Dashboard, DashboardConfig};
//! use dispatcher_broker_pg::{PgBroker, PgBrokerConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pg = PgBrokerConfig::from_url("postgres://postgres@127.0.0.1/postgres")?;
//! let broker = Arc::new(PgBroker::with_config(pg.clone()).await?);
//! let mut config = DashboardConfig::new("127.0.0.1:9180", pg);
//! config.queue_schema = Some("dispatcher".into()); // the durable queue's jobs page
//! let dashboard = Dashboard::start(config, broker).await?;
//! println!("open http://{}/", dashboard.address());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod auth;
mod collect;
mod error;
mod pages;
mod shared;
mod snapshot;
mod web;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dispatcher_broker_pg::PgBrokerConfig;
use dispatcher_core::signing::SigningKey;
use dispatcher_core::Broker;
use tokio::sync::{watch, Notify};

pub use error::{Error, Result};

/// How the dashboard serves and what it shows.
#[derive(Clone)]
#[non_exhaustive]
pub struct DashboardConfig {
    /// Where it listens, `host:port` (a hostname is resolved; port 0 picks a free one).
    pub address: String,
    /// The access token that enables actions; `None`: read-only.
    pub token: Option<String>,
    /// The channels whose services it shows (default `dispatcher`).
    pub channels: Vec<String>,
    /// The database, for the durable queue's tables.
    pub pg: PgBrokerConfig,
    /// The durable queue's schema, when there is one to show.
    pub queue_schema: Option<String>,
    /// Time between rounds while someone is looking (default 1 s).
    pub refresh: Duration,
    /// Time between rounds while nobody is (default 10 s).
    pub idle_refresh: Duration,
    /// How long after the last page or live update someone counts as looking (default 30 s).
    pub viewer_timeout: Duration,
    /// The longest wait for control replies and the queue's tables (default 2 s).
    pub control_timeout: Duration,
    /// Replies are complete once none arrived for this long (default 150 ms).
    pub quiet_window: Duration,
    /// Signs control commands (services that require signatures).
    pub signing: Option<SigningKey>,
}

impl std::fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardConfig")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("channels", &self.channels)
            .field("queue_schema", &self.queue_schema)
            .field("refresh", &self.refresh)
            .field("idle_refresh", &self.idle_refresh)
            .field("signing", &self.signing.is_some())
            .finish_non_exhaustive()
    }
}

impl DashboardConfig {
    /// A read-only dashboard at `address` for the channel `dispatcher`, without a jobs page.
    pub fn new(address: impl Into<String>, pg: PgBrokerConfig) -> Self {
        DashboardConfig {
            address: address.into(),
            token: None,
            channels: vec!["dispatcher".into()],
            pg,
            queue_schema: None,
            refresh: Duration::from_secs(1),
            idle_refresh: Duration::from_secs(10),
            viewer_timeout: Duration::from_secs(30),
            control_timeout: Duration::from_secs(2),
            quiet_window: Duration::from_millis(150),
            signing: None,
        }
    }
}

/// A running dashboard; dropping it stops it.
#[derive(Debug)]
pub struct Dashboard {
    address: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Dashboard {
    /// Binds the address and starts serving and gathering. Control commands go out through
    /// `broker` (a LISTEN/NOTIFY broker the services listen to).
    pub async fn start(config: DashboardConfig, broker: Arc<dyn Broker>) -> Result<Dashboard> {
        if config.channels.is_empty() {
            return Err(Error::Config(
                "no channels: the dashboard shows the services of at least one channel".into(),
            ));
        }
        if let Some(t) = &config.token {
            if t.len() < 16 {
                return Err(Error::Config(format!(
                    "the dashboard token is {} characters long; use at least 16 (e.g. `openssl rand -hex 16`)",
                    t.len()
                )));
            }
        }
        if let Some(schema) = &config.queue_schema {
            dispatcher_broker_pg::queue::check_schema_name(schema)
                .map_err(|e| Error::Config(format!("dashboard queue schema: {e}")))?;
        }
        let address = config.address.clone();
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|source| Error::Bind {
                address: address.clone(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| Error::Bind {
            address: address.clone(),
            source,
        })?;
        let (snapshot, _) = watch::channel(Arc::new(snapshot::Snapshot::default()));
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(shared::Shared {
            auth: auth::Auth::new(config.token.as_deref()),
            config,
            broker,
            snapshot,
            last_view: Mutex::new(Instant::now()),
            poke: Notify::new(),
            jobs_client: tokio::sync::Mutex::new(None),
            stop: stop_rx.clone(),
        });
        tokio::spawn(collect::run(shared.clone(), stop_rx.clone()));
        tokio::spawn(web::serve(listener, shared, stop_rx));
        tracing::info!(address = %local, "dashboard serving");
        Ok(Dashboard {
            address: local,
            stop,
        })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
