//! The PostgreSQL broker of the dispatcher: LISTEN/NOTIFY through tokio-postgres.
//!
//! * One dedicated LISTEN connection, driven by its own task that polls it for notifications;
//!   a second one for control channels ([`Broker::subscribe_control`]), started by its first
//!   such subscription and closed when the last is dropped (every listening backend costs
//!   PostgreSQL a wake-up per NOTIFY in the database), so that a full subscription (whose
//!   listener then waits) never delays them.
//! * Publishing on separate connection(s) with `SELECT pg_notify($1, $2)` and bound parameters;
//!   concurrent publishes on one connection are pipelined; a batch is one statement
//!   (`pg_notify` over `unnest` of two arrays), so it is one round trip and one transaction.
//! * A request that waits for answers ([`Broker::subscribe_and_publish`], what
//!   `control::request_with` calls) is one simple query on the listener connection:
//!   `LISTEN "reply_to_…"; NOTIFY "c_control", '…'; NOTIFY "c", '…'` (payloads quoted as
//!   literals). One round trip and one transaction: the LISTEN is in effect when the NOTIFYs
//!   commit, so no reply is missed. It is sent at most once: a connection that fails under it, or
//!   that gives no answer within `call_timeout` (it is then recycled), fails the call; nothing is
//!   retried, since the command may have gone out. While that listener is reconnecting the
//!   request subscribes, then publishes.
//! * Payloads of 8000 bytes or more are split into chunks by the core
//!   ([`dispatcher_core::broker::send`]) and reassembled by the service.
//! * **Deadlines.** The whole connect of every connection (TCP, TLS, the startup and
//!   authentication exchange, preparing the statements) must finish within
//!   [`PgBrokerConfig::connect_timeout`]; every round trip on an open connection (publish,
//!   batch, control replies, LISTEN/UNLISTEN, a request's LISTEN and NOTIFYs, the self-check's
//!   NOTIFY, the backend pid query)
//!   within [`PgBrokerConfig::call_timeout`] (the self-check's NOTIFY within
//!   `self_check_timeout`). A publishing connection that misses a deadline is replaced: its
//!   slot is emptied and its task aborted (calls pipelined behind it fail over to a fresh
//!   connection), the call fails with [`Error::CallTimeout`], and the next publish opens a new
//!   connection. A LISTEN connection that misses one is recycled.
//! * A self-check NOTIFYs each listener's own channel every few seconds **through the broker's
//!   publishing connections** (round-robin), so both paths are checked: a NOTIFY that misses its
//!   bound replaces that publishing connection (and the check runs again at once), a
//!   notification that does not arrive within the bound of its NOTIFY recycles the listener. A
//!   dropped connection, a killed backend or a frozen server is detected that way (or by the
//!   connection failing), and the listener reconnects with backoff, LISTENs every channel again,
//!   and counts and logs the recycle. Notifications sent while no listener connection exists
//!   are lost: that is LISTEN/NOTIFY's nature (see the cookbook for durable delivery).
//! * TCP keepalives and a TCP user timeout are set on every connection.
//! * The [`Broker`] methods fail with a [`dispatcher_core::BrokerError`]: `InvalidChannel` and
//!   `TooLarge` (payloads of [`NOTIFY_LIMIT`] bytes or more) before anything is sent,
//!   `Unavailable` when no connection works (refused, reset, closed, the server shutting down),
//!   `Timeout` when connecting or a call misses its deadline (naming it and what timed out),
//!   `Closed` once the listener is gone, `Other` for the rest (see [`Error`] for the mapping).
//! * Metrics (through the `metrics` facade; the counters are registered at zero when a broker
//!   starts, so they are exported before their first event): `dispatcher_broker_recycles_total`,
//!   `dispatcher_broker_self_checks_total`, `dispatcher_broker_self_check_failures_total` (a
//!   NOTIFY or notification that missed its bound, or a connection that died while a check was
//!   out), `dispatcher_broker_publisher_replacements_total`,
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
//!
//! // Deadlines: the whole connect (authentication included), and each call.
//! let mut config = dispatcher_broker_pg::PgBrokerConfig::from_url("postgres://app@db/app")?;
//! config.connect_timeout = std::time::Duration::from_secs(3);
//! config.call_timeout = std::time::Duration::from_secs(2);
//! let broker = PgBroker::with_config(config).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod conninfo;
mod error;
mod listener;
pub mod metrics;
mod publishers;
pub mod queue;
mod redact;

use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;

use async_trait::async_trait;
use dispatcher_core::broker::{validate_channel, Broker, BrokerError, Subscription};
use futures_util::stream::{poll_fn, Stream};
use serde_json::json;
use tokio_postgres::{AsyncMessage, Client, NoTls};

pub use error::{Error, Result};
use listener::{Listener, Role};
use publishers::Publishers;
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
    /// queues notifications server-side). Default 1,000.
    pub subscriber_capacity: usize,
    /// Bytes of payload buffered per subscription (a batch notification carries up to 8,000);
    /// when reached, the listener waits as when the subscription is full. A payload larger than
    /// this goes through alone. Default 256 KiB.
    pub subscriber_max_bytes: usize,
    /// Transport security. Default: none.
    pub tls: Tls,
    /// The whole connect of every connection — TCP, TLS, the startup and authentication
    /// exchange, and what the connection prepares (the publishing statements, LISTEN) — must
    /// finish within this, or fails with [`Error::ConnectTimeout`] naming the host and port.
    /// Default: the connection string's `connect_timeout`, else 5 s.
    pub connect_timeout: Duration,
    /// Every round trip on an open connection (a publish or batch, a control reply, LISTEN and
    /// UNLISTEN, the backend pid query) must be answered within this; a connection that misses
    /// it is replaced (its calls fail with [`Error::CallTimeout`], the next call opens a fresh
    /// connection). Default 5 s.
    pub call_timeout: Duration,
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

/// Opens one connection with the configured transport, TCP to authentication within
/// [`PgBrokerConfig::connect_timeout`].
pub(crate) async fn open(
    config: &PgBrokerConfig,
    what: &'static str,
) -> Result<(Client, Messages)> {
    let timeout = |after: Duration| Error::ConnectTimeout {
        what,
        target: target(&config.pg),
        after,
    };
    let err = |source: tokio_postgres::Error| match config.pg.get_connect_timeout() {
        Some(&after) if error::is_connect_timeout(&source) => timeout(after),
        _ => Error::Connect { what, source },
    };
    let connecting = async {
        match &config.tls {
            Tls::Disabled => {
                let (client, mut conn) = config.pg.connect(NoTls).await.map_err(err)?;
                let messages: Messages = Box::pin(poll_fn(move |cx| conn.poll_message(cx)));
                Ok((client, messages))
            }
            #[cfg(feature = "tls")]
            Tls::Rustls(tls) => {
                let make = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
                let (client, mut conn) = config.pg.connect(make).await.map_err(err)?;
                let messages: Messages = Box::pin(poll_fn(move |cx| conn.poll_message(cx)));
                Ok((client, messages))
            }
        }
    };
    tokio::time::timeout(config.connect_timeout, connecting)
        .await
        .unwrap_or_else(|_| Err(timeout(config.connect_timeout)))
}

/// Where the settings connect to, for messages: `host:port` (several joined with `, `), a Unix
/// socket directory as its path; never a user or password.
pub(crate) fn target(pg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let ports = pg.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| match h {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]:{}", port(i)),
            Host::Tcp(h) => format!("{h}:{}", port(i)),
            #[cfg(unix)]
            Host::Unix(p) => format!("{}:{}", p.display(), port(i)),
        })
        .collect();
    if hosts.is_empty() {
        format!("the default host:{}", port(0))
    } else {
        hosts.join(", ")
    }
}

impl PgBrokerConfig {
    /// Settings from a connection URL or key=value string, completed from the `PG*`
    /// environment variables and the password file as libpq does (an empty string: everything
    /// from the environment; see [`conninfo`]), with keepalives (idle 5 s, interval 2 s,
    /// 3 retries), a 10 s TCP user timeout and a 5 s connect timeout unless the settings have
    /// them (their `connect_timeout` becomes [`PgBrokerConfig::connect_timeout`], the
    /// deadline of the whole connect), and a 5 s [`PgBrokerConfig::call_timeout`].
    pub fn from_url(url: &str) -> Result<Self> {
        Ok(PgBrokerConfig::new(conninfo::config_from_env(url)?))
    }

    /// Settings from a tokio-postgres config (keepalives and timeouts added as in
    /// [`PgBrokerConfig::from_url`]).
    pub fn new(mut pg: tokio_postgres::Config) -> Self {
        pg.keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(10));
        let connect_timeout = match pg.get_connect_timeout() {
            Some(t) => *t,
            None => {
                pg.connect_timeout(Duration::from_secs(5));
                Duration::from_secs(5)
            }
        };
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
            subscriber_max_bytes: 256 * 1024,
            tls: Tls::Disabled,
            connect_timeout,
            call_timeout: Duration::from_secs(5),
        }
    }
}

/// The PostgreSQL broker. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct PgBroker {
    config: PgBrokerConfig,
    publishers: Arc<Publishers>,
    listener: Arc<Listener>,
    /// The control listener, started by [`Broker::subscribe_control`] and stopped when its last
    /// subscription is dropped.
    control: std::sync::Mutex<Option<Arc<Listener>>>,
    /// Held while a control listener starts, so that one starts at a time.
    control_start: tokio::sync::Mutex<()>,
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
        let publishers = Arc::new(Publishers::new(config.clone()));
        let listener = Listener::start(config.clone(), publishers.clone(), Role::Main).await?;
        publishers.open_first().await?;
        Ok(PgBroker {
            config,
            publishers,
            listener,
            control: std::sync::Mutex::new(None),
            control_start: tokio::sync::Mutex::new(()),
        })
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

    /// The backend pid of the control listener (the LISTEN connection of
    /// [`Broker::subscribe_control`]): `None` while no control subscription is held, 0 while
    /// disconnected.
    pub fn control_listener_pid(&self) -> Option<i32> {
        self.control_listener().map(|l| l.backend_pid())
    }

    /// How many times the control listener's connection was replaced (`None`: not running).
    pub fn control_recycles(&self) -> Option<u64> {
        self.control_listener().map(|l| l.recycles())
    }

    /// The running control listener, if any (not one that is stopping).
    fn control_listener(&self) -> Option<Arc<Listener>> {
        let slot = self.control.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().filter(|l| !l.is_closing()).cloned()
    }

    /// The running control listener, or a new one.
    async fn control_listener_or_start(&self) -> Result<Arc<Listener>> {
        if let Some(l) = self.control_listener() {
            return Ok(l);
        }
        let _one = self.control_start.lock().await;
        if let Some(l) = self.control_listener() {
            return Ok(l);
        }
        let l =
            Listener::start(self.config.clone(), self.publishers.clone(), Role::Control).await?;
        *self.control.lock().unwrap_or_else(|p| p.into_inner()) = Some(l.clone());
        Ok(l)
    }

    /// The backend pid of each publishing connection, in order (0: not open now).
    pub fn publisher_pids(&self) -> Vec<i32> {
        self.publishers.pids()
    }

    /// How many publishing connections were replaced after a call on them missed its deadline.
    pub fn publisher_replacements(&self) -> u64 {
        self.publishers.replacements().0
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
        self.publishers
            .call("pg_notify", self.config.call_timeout, |c| async move {
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
        self.publishers
            .call(
                "batched pg_notify",
                self.config.call_timeout,
                |c| async move {
                    c.client
                        .execute(&c.notify_many, &[channels, payloads])
                        .await
                },
            )
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
        // Control replies for a client in the same process as a service (the dashboard): on
        // the control listener while one runs (the service's intake is paused), so that a flood
        // holding up the main listener does not hold up the replies.
        if only_replies(channels) {
            if let Some(control) = self.control_listener() {
                if let Ok(sub) = control.subscribe(channels).await {
                    return Ok(sub);
                }
            }
        }
        Ok(self.listener.subscribe(channels).await?)
    }

    /// The LISTEN of `channels` and the NOTIFYs of `messages` in one simple query on the
    /// listener connection that [`Broker::subscribe`] would pick for `channels` (the control
    /// listener for reply channels while it runs): one round trip and one transaction, so the
    /// LISTEN is in effect when the notifications are committed. The query is sent at most once:
    /// if the connection fails under it or it gets no answer within `call_timeout`, the call
    /// fails (the messages may have been sent) and nothing is retried. While that listener has
    /// no ready connection, it subscribes and then publishes, as the default does.
    async fn subscribe_and_publish(
        &self,
        channels: &[String],
        messages: &[(String, String)],
    ) -> std::result::Result<Subscription, BrokerError> {
        for c in channels {
            validate_channel(c)?;
        }
        for (c, p) in messages {
            validate_channel(c)?;
            check_size(p)?;
            if p.contains('\0') {
                return Err(BrokerError::other(format!(
                    "a payload for {c:?} contains a NUL character, which PostgreSQL text cannot hold"
                )));
            }
        }
        if !channels.is_empty() && !messages.is_empty() {
            let listener = match self.control_listener() {
                Some(control) if only_replies(channels) => control,
                _ => self.listener.clone(),
            };
            let describe = || {
                format!(
                    "LISTEN of {channels:?} with {} NOTIFY(s) on {:?}",
                    messages.len(),
                    messages
                        .first()
                        .map(|(c, _)| c.as_str())
                        .unwrap_or_default()
                )
            };
            match listener
                .listen_and_run(channels, &notify_sql(messages), describe)
                .await
            {
                Ok(Some(sub)) => return Ok(sub),
                // Not connected right now, or a control listener that is stopping: nothing was
                // sent; the other path below.
                Ok(None) => {}
                Err(Error::Closed) if listener.is_closing() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let sub = self.subscribe(channels).await?;
        self.publish_batch(messages).await?;
        Ok(sub)
    }

    /// Subscribes on the control listener: a LISTEN connection of its own, started by the first
    /// such subscription (and closed when the last one is dropped: every listening backend costs
    /// PostgreSQL a wake-up per NOTIFY in the database), with its own self-check and
    /// reconnects, so that a full subscription of [`Broker::subscribe`] (whose listener then
    /// waits) never delays these channels.
    async fn subscribe_control(
        &self,
        channels: &[String],
    ) -> std::result::Result<Option<Subscription>, BrokerError> {
        for c in channels {
            validate_channel(c)?;
        }
        // A listener whose last subscription went just now refuses (it is stopping): once more
        // on a new one.
        for _ in 0..2 {
            let control = self.control_listener_or_start().await?;
            match control.subscribe(channels).await {
                Ok(sub) => return Ok(Some(sub)),
                Err(Error::Closed) if control.is_closing() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(BrokerError::unavailable(
            "the control listener kept stopping while subscribing",
        ))
    }

    fn max_payload(&self) -> Option<usize> {
        Some(NOTIFY_LIMIT)
    }

    /// The main listener's connection, recycles and self-check at the top level; `connected`
    /// only when the control listener (once started) is connected too. Details:
    /// `listener_pid`, `channels`, `control_listener` (the same fields for the control
    /// listener, once started), `publisher_pids`, `publisher_replacements` and
    /// `last_publisher_replacement_reason`, `connect_timeout_s`, `call_timeout_s`.
    fn status(&self) -> dispatcher_core::BrokerStatus {
        let mut status = self.listener.status();
        if let Some(control) = self.control_listener() {
            let c = control.status();
            status.connected = Some(status.connected == Some(true) && c.connected == Some(true));
            let mut fields = c.details;
            fields.insert("connected".into(), json!(c.connected));
            fields.insert("recycles".into(), json!(c.recycles));
            fields.insert("last_recycle_reason".into(), json!(c.last_recycle_reason));
            fields.insert("self_check".into(), json!(c.self_check));
            status
                .details
                .insert("control_listener".into(), serde_json::Value::Object(fields));
        }
        let (replacements, reason) = self.publishers.replacements();
        let d = &mut status.details;
        d.insert("publisher_pids".into(), json!(self.publishers.pids()));
        d.insert("publisher_replacements".into(), json!(replacements));
        if let Some(reason) = reason {
            d.insert("last_publisher_replacement_reason".into(), json!(reason));
        }
        d.insert(
            "connect_timeout_s".into(),
            json!(self.config.connect_timeout.as_secs_f64()),
        );
        d.insert(
            "call_timeout_s".into(),
            json!(self.config.call_timeout.as_secs_f64()),
        );
        status
    }
}

/// Quotes a channel name as an SQL identifier (`"` doubled).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes text as an SQL string literal, whatever `standard_conforming_strings` says: `'`
/// doubled, and text with a backslash as an escape string (`E'...'`, backslashes doubled).
/// The text must not contain NUL (no PostgreSQL text can).
pub(crate) fn quote_literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// Whether every one of `channels` (at least one) is a control reply channel.
fn only_replies(channels: &[String]) -> bool {
    !channels.is_empty()
        && channels
            .iter()
            .all(|c| c.starts_with(dispatcher_core::control::REPLY_CHANNEL_PREFIX))
}

/// `NOTIFY` statements for `messages`, in order, for a simple query (channels quoted as
/// identifiers, payloads as literals): utility statements, nothing to plan, no rows back.
fn notify_sql(messages: &[(String, String)]) -> String {
    let mut sql = String::new();
    for (c, p) in messages {
        sql.push_str("NOTIFY ");
        sql.push_str(&quote_ident(c));
        sql.push_str(", ");
        sql.push_str(&quote_literal(p));
        sql.push(';');
    }
    sql
}

#[cfg(test)]
mod tests {
    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(super::quote_ident("plain"), "\"plain\"");
        assert_eq!(super::quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn literals_are_quoted() {
        use super::quote_literal;
        assert_eq!(quote_literal("plain"), "'plain'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b'c"), r"E'a\\b''c'");
        assert_eq!(quote_literal(""), "''");
    }

    #[test]
    fn notifications_are_statements_in_order() {
        let sql = super::notify_sql(&[
            ("a_control".into(), r#"{"x":"y'"}"#.into()),
            ("A".into(), r"z\".into()),
        ]);
        assert_eq!(
            sql,
            r#"NOTIFY "a_control", '{"x":"y''"}';NOTIFY "A", E'z\\';"#
        );
    }
}
