//! The PostgreSQL broker of the dispatcher: LISTEN/NOTIFY through tokio-postgres.
//!
//! * One dedicated LISTEN connection, driven by its own task that polls it for notifications.
//! * Publishing on separate connection(s) with `SELECT pg_notify($1, $2)` and bound parameters;
//!   concurrent publishes on one connection are pipelined; a batch is one statement
//!   (`pg_notify` over `unnest` of two arrays), so it is one round trip and one transaction.
//! * Payloads of 8000 bytes or more are split into chunks by the core
//!   ([`dispatcher_core::broker::send`]) and reassembled by the service.
//! * A self-check NOTIFYs the broker's own unique channel every few seconds and must receive it
//!   within a bound; a dropped connection, a killed backend or a frozen server is detected that
//!   way (or by the connection failing), and the listener reconnects with backoff, LISTENs every
//!   channel again, and counts and logs the recycle. Notifications sent while no listener
//!   connection exists are lost: that is LISTEN/NOTIFY's nature (see the cookbook for durable
//!   delivery).
//! * TCP keepalives and a TCP user timeout are set on every connection.
//! * The [`Broker`] methods fail with a [`dispatcher_core::BrokerError`]: `InvalidChannel` and
//!   `TooLarge` (payloads of [`NOTIFY_LIMIT`] bytes or more) before anything is sent,
//!   `Unavailable` when no connection works (refused, reset, closed, the server shutting down),
//!   `Timeout` when connecting takes longer than the connect timeout, `Closed` once the
//!   listener is gone, `Other` for the rest (see [`Error`] for the mapping).
//! * Metrics (through the `metrics` facade): `dispatcher_broker_recycles_total`,
//!   `dispatcher_broker_self_checks_total`, `dispatcher_broker_self_check_failures_total`,
//!   `dispatcher_broker_self_check_rtt_seconds` (gauge, last round trip).
//!
//! ```no_run
//! use std::sync::Arc;
//! use dispatcher_broker_pg::PgBroker;
//! use dispatcher_core::{Broker, Publisher};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = Arc::new(PgBroker::connect("postgres://postgres@127.0.0.1/postgres").await?);
//! let publisher = Publisher::new(broker.clone(), "dispatcher")?;
//! let rtt = broker.self_check(std::time::Duration::from_secs(5)).await?;
//! println!("round trip {rtt:?}");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod error;
mod listener;
pub mod metrics;
pub mod queue;
mod redact;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;

use async_trait::async_trait;
use dispatcher_core::broker::{validate_channel, Broker, BrokerError, Subscription};
use futures_util::stream::{poll_fn, Stream, StreamExt};
use tokio::sync::Mutex;
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};

pub use error::{Error, Result};
use listener::Listener;
pub use redact::redact_connection_string;

/// PostgreSQL's limit on a NOTIFY payload: payloads must be shorter.
pub const NOTIFY_LIMIT: usize = 8000;

/// Settings of a [`PgBroker`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgBrokerConfig {
    /// Connection settings (used for every connection).
    pub pg: tokio_postgres::Config,
    /// How many connections publish (round-robin). Default 1.
    pub publish_connections: usize,
    /// How often the listener checks itself. Default 2 s.
    pub self_check_interval: Duration,
    /// How long a self-check notification may take. Default 3 s.
    pub self_check_timeout: Duration,
    /// First reconnect delay; doubles up to `reconnect_max`. Default 100 ms.
    pub reconnect_min: Duration,
    /// Longest reconnect delay. Default 1 s: a retry is one TCP connect, and a longer wait after
    /// the server is back only loses notifications (LISTEN/NOTIFY does not queue them for a
    /// listener that is not connected).
    pub reconnect_max: Duration,
    /// Notifications buffered per subscription; when full, the listener waits (and PostgreSQL
    /// queues notifications server-side). Default 10,000.
    pub subscriber_capacity: usize,
    /// Transport security. Default: none.
    pub tls: Tls,
}

/// Transport security of the broker's connections.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Tls {
    /// Plain TCP (or a Unix socket).
    #[default]
    Disabled,
    /// TLS with rustls (feature `tls`).
    #[cfg(feature = "tls")]
    Rustls(Arc<rustls::ClientConfig>),
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tls::Disabled => f.write_str("Disabled"),
            #[cfg(feature = "tls")]
            Tls::Rustls(_) => f.write_str("Rustls"),
        }
    }
}

#[cfg(feature = "tls")]
impl Tls {
    /// TLS with rustls, verifying the server against Mozilla's root certificates.
    pub fn rustls_with_webpki_roots() -> Tls {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        match config {
            Ok(c) => Tls::Rustls(Arc::new(c)),
            // The ring provider supports the default versions; this cannot fail in practice.
            Err(e) => {
                tracing::error!(error = %e, "rustls configuration failed; TLS disabled");
                Tls::Disabled
            }
        }
    }
}

/// A connection's messages (notifications, notices); polling the stream drives the connection.
pub(crate) type Messages =
    Pin<Box<dyn Stream<Item = std::result::Result<AsyncMessage, tokio_postgres::Error>> + Send>>;

/// Opens one connection with the configured transport.
pub(crate) async fn open(
    config: &PgBrokerConfig,
    what: &'static str,
) -> Result<(Client, Messages)> {
    let err = |source: tokio_postgres::Error| match config.pg.get_connect_timeout() {
        Some(&after) if error::is_connect_timeout(&source) => Error::ConnectTimeout { what, after },
        _ => Error::Connect { what, source },
    };
    match &config.tls {
        Tls::Disabled => {
            let (client, mut conn) = config.pg.connect(NoTls).await.map_err(err)?;
            Ok((client, Box::pin(poll_fn(move |cx| conn.poll_message(cx)))))
        }
        #[cfg(feature = "tls")]
        Tls::Rustls(tls) => {
            let make = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
            let (client, mut conn) = config.pg.connect(make).await.map_err(err)?;
            Ok((client, Box::pin(poll_fn(move |cx| conn.poll_message(cx)))))
        }
    }
}

impl PgBrokerConfig {
    /// Settings from a connection URL or key=value string, with keepalives (idle 5 s, interval
    /// 2 s, 3 retries), a 10 s TCP user timeout and a 5 s connect timeout unless the string sets
    /// them.
    pub fn from_url(url: &str) -> Result<Self> {
        let pg: tokio_postgres::Config = url.parse().map_err(|source| Error::Config {
            url: redact_connection_string(url),
            source,
        })?;
        Ok(PgBrokerConfig::new(pg))
    }

    /// Settings from a tokio-postgres config (keepalives and timeouts added as in
    /// [`PgBrokerConfig::from_url`]).
    pub fn new(mut pg: tokio_postgres::Config) -> Self {
        pg.keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(10));
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(5));
        }
        if pg.get_application_name().is_none() {
            pg.application_name("dispatcher");
        }
        PgBrokerConfig {
            pg,
            publish_connections: 1,
            self_check_interval: Duration::from_secs(2),
            self_check_timeout: Duration::from_secs(3),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(1),
            subscriber_capacity: 1_000,
            tls: Tls::Disabled,
        }
    }
}

/// A publishing connection with its prepared statements.
#[derive(Debug)]
struct PubConn {
    client: Client,
    notify: Statement,
    notify_many: Statement,
}

/// The PostgreSQL broker. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct PgBroker {
    config: PgBrokerConfig,
    publishers: Vec<Mutex<Option<Arc<PubConn>>>>,
    next: AtomicUsize,
    listener: Arc<Listener>,
}

impl PgBroker {
    /// Connects with a URL (see [`PgBrokerConfig::from_url`]).
    pub async fn connect(url: &str) -> Result<Self> {
        PgBroker::with_config(PgBrokerConfig::from_url(url)?).await
    }

    /// Connects with these settings: opens the listener and one publishing connection, so that
    /// bad settings fail here.
    pub async fn with_config(config: PgBrokerConfig) -> Result<Self> {
        metrics::describe();
        let n = config.publish_connections.max(1);
        let broker = PgBroker {
            publishers: (0..n).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            listener: Listener::start(config.clone()).await?,
            config,
        };
        broker.publisher(0).await?;
        // The listener publishes its self-check through the broker's publishing path.
        broker.listener.set_publisher(PublishPath {
            config: broker.config.clone(),
            conn: Mutex::new(None),
        });
        Ok(broker)
    }

    /// The settings.
    pub fn config(&self) -> &PgBrokerConfig {
        &self.config
    }

    /// The backend pid of the LISTEN connection (0 while disconnected). Useful to operators and
    /// to tests that disturb it.
    pub fn listener_pid(&self) -> i32 {
        self.listener.backend_pid()
    }

    /// How many times the listener connection was replaced.
    pub fn recycles(&self) -> u64 {
        self.listener.recycles()
    }

    async fn publisher(&self, i: usize) -> Result<Arc<PubConn>> {
        let mut slot = self.publishers[i % self.publishers.len()].lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.client.is_closed() {
                return Ok(c.clone());
            }
            tracing::warn!("publishing connection closed; reconnecting");
        }
        let c = Arc::new(open_publisher(&self.config).await?);
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn with_publisher<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: Fn(Arc<PubConn>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = self.publisher(i).await?;
        match f(conn.clone()).await {
            Ok(v) => Ok(v),
            Err(e) if conn.client.is_closed() => {
                // The connection died under us: one retry on a fresh one.
                tracing::warn!(error = %e, "publish failed on a closed connection; retrying once");
                let conn = self.publisher(i).await?;
                f(conn).await.map_err(|source| Error::Query {
                    what: what.to_owned(),
                    source,
                })
            }
            Err(source) => Err(Error::Query {
                what: what.to_owned(),
                source,
            }),
        }
    }
}

async fn open_publisher(config: &PgBrokerConfig) -> Result<PubConn> {
    let (client, mut messages) = open(config, "publisher").await?;
    tokio::spawn(async move {
        while let Some(m) = messages.next().await {
            if let Err(e) = m {
                tracing::warn!(error = %e, "publishing connection ended");
                break;
            }
        }
    });
    let notify = client
        .prepare("SELECT pg_notify($1, $2)")
        .await
        .map_err(|source| Error::Query {
            what: "prepare pg_notify".into(),
            source,
        })?;
    let notify_many = client
        .prepare("SELECT count(pg_notify(c, p)) FROM unnest($1::text[], $2::text[]) AS m(c, p)")
        .await
        .map_err(|source| Error::Query {
            what: "prepare batched pg_notify".into(),
            source,
        })?;
    Ok(PubConn {
        client,
        notify,
        notify_many,
    })
}

/// The listener's own way to publish its self-check notifications.
#[derive(Debug)]
pub(crate) struct PublishPath {
    config: PgBrokerConfig,
    conn: Mutex<Option<Arc<PubConn>>>,
}

impl PublishPath {
    pub(crate) async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        let conn = {
            let mut slot = self.conn.lock().await;
            match slot.as_ref() {
                Some(c) if !c.client.is_closed() => c.clone(),
                _ => {
                    let c = Arc::new(open_publisher(&self.config).await?);
                    *slot = Some(c.clone());
                    c
                }
            }
        };
        conn.client
            .execute(&conn.notify, &[&channel, &payload])
            .await
            .map_err(|source| Error::Query {
                what: "self-check pg_notify".into(),
                source,
            })?;
        Ok(())
    }
}

/// Refuses a payload NOTIFY would refuse: [`NOTIFY_LIMIT`] bytes or more.
fn check_size(payload: &str) -> std::result::Result<(), BrokerError> {
    if payload.len() >= NOTIFY_LIMIT {
        return Err(BrokerError::TooLarge {
            size: payload.len(),
            limit: NOTIFY_LIMIT - 1,
        });
    }
    Ok(())
}

#[async_trait]
impl Broker for PgBroker {
    async fn publish(&self, channel: &str, payload: &str) -> std::result::Result<(), BrokerError> {
        validate_channel(channel)?;
        check_size(payload)?;
        self.with_publisher("pg_notify", |c| async move {
            c.client.execute(&c.notify, &[&channel, &payload]).await
        })
        .await?;
        Ok(())
    }

    /// Checks every message first (nothing is sent when one is invalid), then sends them all in
    /// one statement.
    async fn publish_batch(
        &self,
        messages: &[(String, String)],
    ) -> std::result::Result<(), BrokerError> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut channels = Vec::with_capacity(messages.len());
        let mut payloads = Vec::with_capacity(messages.len());
        for (c, p) in messages {
            validate_channel(c)?;
            check_size(p)?;
            channels.push(c.as_str());
            payloads.push(p.as_str());
        }
        let (channels, payloads) = (&channels, &payloads);
        self.with_publisher("batched pg_notify", |c| async move {
            c.client
                .execute(&c.notify_many, &[channels, payloads])
                .await
        })
        .await?;
        Ok(())
    }

    async fn subscribe(
        &self,
        channels: &[String],
    ) -> std::result::Result<Subscription, BrokerError> {
        for c in channels {
            validate_channel(c)?;
        }
        Ok(self.listener.subscribe(channels).await?)
    }

    fn max_payload(&self) -> Option<usize> {
        Some(NOTIFY_LIMIT)
    }

    fn status(&self) -> dispatcher_core::BrokerStatus {
        self.listener.status()
    }
}

/// Quotes a channel name as an SQL identifier (`"` doubled).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(super::quote_ident("plain"), "\"plain\"");
        assert_eq!(super::quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
