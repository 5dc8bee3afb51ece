//! The service's configuration file (TOML).
//!
//! Every key is optional except `broker.url` (which `DATABASE_URL` may supply); unknown keys and
//! bad values are errors that name the key and the expected form.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// A complete example, the one the README shows (every key with its default or an example).
pub const EXAMPLE: &str = r#"# Name of this service in replies and Calls (default: <hostname>-<pid>).
node_id = "worker-1"
# Channels to listen on.
channels = ["dispatcher"]
# Finished Calls kept for the `history` command.
history_size = 10000
# Most bytes the history holds (arguments, results and errors as JSON); the oldest Calls are
# dropped to stay under it. A field longer than 1 MiB is kept cut, ending in
# "…[truncated by the history: N bytes]".
history_max_bytes = 67108864
# Most Calls waiting at once (delayed + blocked + queued); more are rejected.
max_waiting = 100000
# While this many Calls wait for a worker, the service stops reading from PostgreSQL (messages
# wait in PostgreSQL's queue), so a flood costs bounded memory.
intake_pause_at = 1000
# Seconds running Calls may finish at shutdown before they are ended.
shutdown_grace = 30.0
# Log level: trace, debug, info, warn, error, off (Python's DEBUG ... CRITICAL and 10-50 too),
# for this service's own crates; dependencies stay at info unless named, as in
# "debug,tokio_postgres=debug". The set_log_level command changes it; RUST_LOG overrides it.
log_level = "info"
# Log lines as "text" or "json" (one JSON object per line).
log_format = "text"

[broker]
# PostgreSQL connection URL or key=value string. DATABASE_URL, when set, takes precedence.
url = "postgres://postgres@127.0.0.1:5432/postgres"
# Connections used to publish (replies, batches).
publish_connections = 1
# Seconds between self-checks of the LISTEN connection, and the bound on each.
self_check_interval = 2.0
self_check_timeout = 3.0
# Seconds a whole connect may take (TCP, TLS, authentication, set-up); omit: the URL's
# connect_timeout, else 5. A server that accepts but never answers fails start-up after this.
# connect_timeout = 5.0
# Seconds every call on an open connection may take (publish, control reply, LISTEN); a
# connection that misses it is replaced.
call_timeout = 5.0

[pool]
# Worker processes: at least min_workers, up to max_workers under queue pressure.
min_workers = 4
max_workers = 4
# Replace a worker after this many Calls or this many seconds (omit: never).
max_tasks_per_worker = 10000
max_worker_age = 3600.0
# Seconds an extra idle worker waits before it is stopped.
scale_down_after = 30.0
# Seconds between SIGTERM and SIGKILL when a worker is ended.
kill_grace = 1.0
# Seconds between health pings of idle workers, and the bound on each.
health_interval = 5.0
health_timeout = 2.0
# A worker whose resident memory passes this many MB while running a Call is ended (the Call is
# worker_lost); omit for no limit.
max_worker_memory_mb = 512
# Most processes a worker and what its task starts may have at once; omit for no limit.
max_worker_processes = 64

[limits]
# Largest payload, also after reassembly of chunks, in bytes.
max_payload_bytes = 16777216
# Chunked payloads being assembled at once, the bytes they may hold, and their expiry in seconds.
max_partial_messages = 1024
max_partial_bytes = 67108864
partial_expiry = 60.0
# Longest delay a message may ask for, in seconds.
max_delay = 86400.0

[security]
# Require HMAC-SHA256 signatures on task and control messages (and sign replies). The secret is
# read from this file (or from DISPATCHER_SIGNING_SECRET); it never goes in this file itself.
signing_secret_file = "/etc/dispatcher/signing.key"
# Seconds a signature stays valid (bounds replays).
signature_max_age = 300.0

[metrics]
# Serve Prometheus metrics on http://<address>/metrics (omit the section: no endpoint).
address = "127.0.0.1:9187"

[dashboard]
# Serve the live web dashboard on http://<address>/ (omit the section: none). It shows every
# service answering on the channels above, and the durable queue's jobs when [queue] is enabled.
address = "127.0.0.1:9180"
# Enables actions (cancel a Call, retry or discard a failed job) for whoever signs in with the
# token read from this file (or from DISPATCHER_DASHBOARD_TOKEN; 16 characters at least). Without
# one the dashboard is read-only.
token_file = "/etc/dispatcher/dashboard.token"

[queue]
# Also consume the durable queue (jobs kept in tables until they ran; at-least-once) of the
# channels above, in the same database. Control commands keep travelling as NOTIFY.
enabled = true
# Schema of the queue's tables and functions.
schema = "dispatcher"
# Apply missing migrations on start (safe with several services starting at once).
migrate_on_start = true
# Seconds a service's claims stay its own without renewal; a killed service's jobs run elsewhere
# after about this long.
lease = 30.0
# Seconds between looks for jobs when no wake-up arrives (and for expired leases).
poll_interval = 1.0
# Most jobs held beyond the workers.
max_prefetch = 1000
# Days failed and canceled jobs are kept.
failed_retention_days = 7.0
"#;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Node id.
    pub node_id: Option<String>,
    /// Channels to listen on. Default `["dispatcher"]`.
    #[serde(default = "default_channels")]
    pub channels: Vec<String>,
    /// History size. Default 10,000.
    #[serde(default = "default_history")]
    pub history_size: usize,
    /// Most bytes the history holds. Default 64 MiB.
    #[serde(default = "default_history_bytes")]
    pub history_max_bytes: usize,
    /// Most waiting Calls. Default 100,000.
    #[serde(default = "default_waiting")]
    pub max_waiting: usize,
    /// Queued Calls at which the service stops reading its brokers. Default 1,000.
    #[serde(default = "default_intake_pause")]
    pub intake_pause_at: usize,
    /// Shutdown grace in seconds. Default 30.
    #[serde(default = "default_grace")]
    pub shutdown_grace: f64,
    /// Log level, read by [`crate::logging::level_filter`]. Default `info`.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Log line format. Default text.
    #[serde(default)]
    pub log_format: crate::logging::LogFormat,
    /// The broker.
    #[serde(default)]
    pub broker: BrokerSection,
    /// The worker pool.
    #[serde(default)]
    pub pool: PoolSection,
    /// The metrics endpoint.
    pub metrics: Option<MetricsSection>,
    /// The web dashboard.
    pub dashboard: Option<DashboardSection>,
    /// Bounds on input.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Message signing.
    #[serde(default)]
    pub security: SecuritySection,
    /// The durable queue (absent or `enabled = false`: NOTIFY only).
    #[serde(default)]
    pub queue: QueueSection,
}

/// `[queue]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct QueueSection {
    /// Consume the durable queue. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// Schema. Default `dispatcher`.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Migrate on start. Default true.
    #[serde(default = "yes")]
    pub migrate_on_start: bool,
    /// Lease in seconds. Default 30.
    #[serde(default = "thirty")]
    pub lease: f64,
    /// Poll interval in seconds. Default 1.
    #[serde(default = "one_f")]
    pub poll_interval: f64,
    /// Most jobs held beyond the workers. Default 1000.
    #[serde(default = "thousand")]
    pub max_prefetch: usize,
    /// Days failed jobs are kept. Default 7.
    #[serde(default = "seven")]
    pub failed_retention_days: f64,
}

impl Default for QueueSection {
    fn default() -> Self {
        QueueSection {
            enabled: false,
            schema: default_schema(),
            migrate_on_start: true,
            lease: 30.0,
            poll_interval: 1.0,
            max_prefetch: 1000,
            failed_retention_days: 7.0,
        }
    }
}

fn default_schema() -> String {
    "dispatcher".into()
}
fn yes() -> bool {
    true
}
fn thousand() -> usize {
    1000
}
fn seven() -> f64 {
    7.0
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LimitsSection {
    /// Largest payload in bytes. Default 16 MiB.
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// Chunked payloads being assembled at once. Default 1024.
    #[serde(default = "default_max_partials")]
    pub max_partial_messages: usize,
    /// Bytes held by partial payloads. Default 64 MiB.
    #[serde(default = "default_max_partial_bytes")]
    pub max_partial_bytes: usize,
    /// Seconds before a partial payload expires. Default 60.
    #[serde(default = "default_partial_expiry")]
    pub partial_expiry: f64,
    /// Longest delay in seconds. Default 86,400.
    #[serde(default = "default_max_delay")]
    pub max_delay: f64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_payload_bytes: default_max_payload(),
            max_partial_messages: default_max_partials(),
            max_partial_bytes: default_max_partial_bytes(),
            partial_expiry: default_partial_expiry(),
            max_delay: default_max_delay(),
        }
    }
}

fn default_max_payload() -> usize {
    16 * 1024 * 1024
}
fn default_max_partials() -> usize {
    1024
}
fn default_max_partial_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_partial_expiry() -> f64 {
    60.0
}
fn default_max_delay() -> f64 {
    86_400.0
}

/// `[security]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SecuritySection {
    /// A file holding the signing secret; signatures are required when a secret is configured
    /// (here or in `DISPATCHER_SIGNING_SECRET`).
    pub signing_secret_file: Option<std::path::PathBuf>,
    /// Seconds a signature stays valid. Default 300.
    pub signature_max_age: Option<f64>,
}

/// Environment variable that holds the signing secret (it wins over the file).
pub const SECRET_ENV: &str = "DISPATCHER_SIGNING_SECRET";

/// `[broker]`. Its `Debug` output hides the password of `url`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BrokerSection {
    /// Connection URL (or `DATABASE_URL`).
    pub url: Option<String>,
    /// Publishing connections. Default 1.
    #[serde(default = "one")]
    pub publish_connections: usize,
    /// Seconds between self-checks. Default 2.
    #[serde(default = "two")]
    pub self_check_interval: f64,
    /// Seconds a self-check may take. Default 3.
    #[serde(default = "three")]
    pub self_check_timeout: f64,
    /// Seconds a whole connect may take. Default: the URL's `connect_timeout`, else 5.
    #[serde(default)]
    pub connect_timeout: Option<f64>,
    /// Seconds every call on an open connection may take. Default 5.
    #[serde(default = "five")]
    pub call_timeout: f64,
}

impl std::fmt::Debug for BrokerSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSection")
            .field(
                "url",
                &self
                    .url
                    .as_deref()
                    .map(dispatcher_broker_pg::redact_connection_string),
            )
            .field("publish_connections", &self.publish_connections)
            .field("self_check_interval", &self.self_check_interval)
            .field("self_check_timeout", &self.self_check_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("call_timeout", &self.call_timeout)
            .finish()
    }
}

impl Default for BrokerSection {
    fn default() -> Self {
        BrokerSection {
            url: None,
            publish_connections: 1,
            self_check_interval: 2.0,
            self_check_timeout: 3.0,
            connect_timeout: None,
            call_timeout: 5.0,
        }
    }
}

/// `[pool]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PoolSection {
    /// Minimum workers. Default 4.
    #[serde(default = "four")]
    pub min_workers: usize,
    /// Maximum workers. Default 4.
    #[serde(default = "four")]
    pub max_workers: usize,
    /// Memory limit per worker in MB (RSS).
    pub max_worker_memory_mb: Option<u64>,
    /// Process limit per worker (its process group).
    pub max_worker_processes: Option<usize>,
    /// Recycle after this many Calls.
    pub max_tasks_per_worker: Option<u64>,
    /// Recycle after this many seconds.
    pub max_worker_age: Option<f64>,
    /// Seconds before an extra idle worker stops. Default 30.
    #[serde(default = "thirty")]
    pub scale_down_after: f64,
    /// Seconds between SIGTERM and SIGKILL. Default 1.
    #[serde(default = "one_f")]
    pub kill_grace: f64,
    /// Seconds between health pings. Default 5.
    #[serde(default = "five")]
    pub health_interval: f64,
    /// Seconds a ping may take. Default 2.
    #[serde(default = "two")]
    pub health_timeout: f64,
}

impl Default for PoolSection {
    fn default() -> Self {
        PoolSection {
            min_workers: 4,
            max_workers: 4,
            max_worker_memory_mb: None,
            max_worker_processes: None,
            max_tasks_per_worker: None,
            max_worker_age: None,
            scale_down_after: 30.0,
            kill_grace: 1.0,
            health_interval: 5.0,
            health_timeout: 2.0,
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsSection {
    /// `host:port` to serve `/metrics` on.
    pub address: String,
}

/// `[dashboard]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DashboardSection {
    /// `host:port` to serve the dashboard on.
    pub address: String,
    /// The file holding the access token that enables actions (none: read-only).
    pub token_file: Option<std::path::PathBuf>,
}

impl DashboardSection {
    /// A read-only dashboard at `address`.
    pub fn new(address: impl Into<String>) -> Self {
        DashboardSection {
            address: address.into(),
            token_file: None,
        }
    }
}

/// The environment variable that holds the dashboard's access token (before `token_file`).
pub const DASHBOARD_TOKEN_ENV: &str = "DISPATCHER_DASHBOARD_TOKEN";

fn default_channels() -> Vec<String> {
    vec!["dispatcher".to_owned()]
}
fn default_history() -> usize {
    10_000
}
fn default_history_bytes() -> usize {
    dispatcher_runtime::history::DEFAULT_MAX_BYTES
}
fn default_waiting() -> usize {
    100_000
}
fn default_intake_pause() -> usize {
    1_000
}
fn default_grace() -> f64 {
    30.0
}
fn default_log_level() -> String {
    "info".to_owned()
}
fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}
fn two() -> f64 {
    2.0
}
fn three() -> f64 {
    3.0
}
fn four() -> usize {
    4
}
fn five() -> f64 {
    5.0
}
fn thirty() -> f64 {
    30.0
}

/// Text that may quote lines of the file, with the password of every connection string in it
/// hidden ([`dispatcher_broker_pg::redact_connection_string`]): URLs (from their scheme to the
/// next whitespace or quote) and `password=...` settings.
fn redact_quoted_lines(text: &str) -> String {
    text.lines()
        .map(|line| {
            let mut out = String::with_capacity(line.len());
            let mut rest = line;
            while let Some(i) = rest.find("://") {
                let start = rest[..i]
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
                    .map_or(0, |j| j + 1);
                let end = rest[i..]
                    .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                    .map_or(rest.len(), |j| i + j);
                out.push_str(&rest[..start]);
                out.push_str(&dispatcher_broker_pg::redact_connection_string(
                    &rest[start..end],
                ));
                rest = &rest[end..];
            }
            out.push_str(rest);
            if !out.to_ascii_lowercase().contains("password") {
                return out;
            }
            let body = out.trim_start();
            let indent = &out[..out.len() - body.len()];
            format!(
                "{indent}{}",
                dispatcher_broker_pg::redact_connection_string(body)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rust's type names in serde's messages, in words: `expected usize` → `expected a whole
/// number (0 or more)`.
fn plain_words(message: &str) -> String {
    const WORDS: [(&str, &str); 14] = [
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        ("expected u32", "expected a whole number (0 or more)"),
        ("expected u16", "expected a whole number (0 to 65535)"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        (
            "expected a sequence",
            "expected a list, e.g. [\"a\", \"b\"]",
        ),
        ("expected a boolean", "expected true or false"),
        ("expected a borrowed string", "expected a string"),
        ("expected struct ", "expected a table: "),
        ("invalid type: ", "wrong kind of value: "),
        ("invalid value: ", "value out of range: "),
    ];
    let mut out = message.to_owned();
    for (from, to) in WORDS {
        out = out.replace(from, to);
    }
    out
}

/// Checks the form `host:port` (a name or an IP address, `[v6]:port` too); the name is
/// resolved when the server starts.
pub(crate) fn host_port(address: &str) -> std::result::Result<(), String> {
    if address.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err("no port".into());
    };
    port.parse::<u16>()
        .map_err(|_| format!("port {port:?} is not a whole number from 0 to 65535"))?;
    let name_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !name_ok {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    Ok(())
}

/// Seconds from the file as a duration; `key` names it in the error.
pub(crate) fn seconds(key: &str, v: f64) -> Result<Duration> {
    if !v.is_finite() || v <= 0.0 || v > 1e9 {
        return Err(Error::Config(format!(
            "`{key}` must be a number of seconds above 0, e.g. `{key} = 2.5`; got {v}"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            node_id: None,
            channels: default_channels(),
            history_size: default_history(),
            history_max_bytes: default_history_bytes(),
            max_waiting: default_waiting(),
            intake_pause_at: default_intake_pause(),
            shutdown_grace: default_grace(),
            log_level: default_log_level(),
            log_format: crate::logging::LogFormat::default(),
            broker: BrokerSection::default(),
            pool: PoolSection::default(),
            metrics: None,
            dashboard: None,
            limits: LimitsSection::default(),
            security: SecuritySection::default(),
            queue: QueueSection::default(),
        }
    }
}

impl ServerConfig {
    /// Parses TOML text and checks every value.
    pub fn from_toml(text: &str) -> Result<Self> {
        // toml's message quotes the offending line, which may hold the connection string.
        let c: ServerConfig = toml::from_str(text)
            .map_err(|e| Error::Config(plain_words(&redact_quoted_lines(&e.to_string()))))?;
        c.validate()?;
        Ok(c)
    }

    /// Reads and parses a file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        ServerConfig::from_toml(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The signing key, when signatures are configured: `DISPATCHER_SIGNING_SECRET`, else the
    /// contents of `security.signing_secret_file` (surrounding whitespace removed).
    pub fn signing_key(&self) -> Result<Option<dispatcher_core::signing::SigningKey>> {
        let secret = match std::env::var(SECRET_ENV) {
            Ok(s) if !s.is_empty() => s.into_bytes(),
            _ => match &self.security.signing_secret_file {
                Some(path) => std::fs::read(path)
                    .map_err(|e| {
                        Error::Config(format!(
                            "`security.signing_secret_file` {}: {e}",
                            path.display()
                        ))
                    })?
                    .trim_ascii()
                    .to_vec(),
                None => return Ok(None),
            },
        };
        let mut key = dispatcher_core::signing::SigningKey::new(&secret)
            .map_err(|e| Error::Config(format!("signing secret: {e}")))?;
        if let Some(age) = self.security.signature_max_age {
            key = key.with_max_age(seconds("security.signature_max_age", age)?);
        }
        Ok(Some(key))
    }

    /// The dashboard's access token: `DISPATCHER_DASHBOARD_TOKEN`, else the contents of
    /// `dashboard.token_file`, else none (read-only).
    pub fn dashboard_token(&self) -> Result<Option<String>> {
        if let Ok(t) = std::env::var(DASHBOARD_TOKEN_ENV) {
            if !t.is_empty() {
                return Ok(Some(t));
            }
        }
        let Some(path) = self.dashboard.as_ref().and_then(|d| d.token_file.as_ref()) else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("`dashboard.token_file` {}: {e}", path.display()))
        })?;
        Ok(Some(text.trim().to_owned()))
    }

    /// Applies environment overrides: `DATABASE_URL` replaces `broker.url`.
    pub fn apply_env(&mut self) {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            if !url.is_empty() {
                self.broker.url = Some(url);
            }
        }
    }

    /// Checks every value; errors name the key and the expected form.
    pub fn validate(&self) -> Result<()> {
        if self.channels.is_empty() {
            return Err(Error::Config(
                "`channels` must list at least one channel, e.g. `channels = [\"dispatcher\"]`"
                    .into(),
            ));
        }
        for c in &self.channels {
            dispatcher_core::broker::validate_channel(c)
                .map_err(|e| Error::Config(format!("`channels`: {e}")))?;
        }
        if self.history_size == 0 {
            return Err(Error::Config("`history_size` must be at least 1".into()));
        }
        if self.history_max_bytes < 16 * 1024 * 1024 {
            return Err(Error::Config(format!(
                "`history_max_bytes` is {}: it must be at least 16777216 (16 MiB), room for a few Calls whose fields reach the 1 MiB cut",
                self.history_max_bytes
            )));
        }
        if self.intake_pause_at == 0 {
            return Err(Error::Config("`intake_pause_at` must be at least 1".into()));
        }
        if self.max_waiting == 0 {
            return Err(Error::Config("`max_waiting` must be at least 1".into()));
        }
        seconds("shutdown_grace", self.shutdown_grace)?;
        if self.queue.enabled {
            seconds("queue.lease", self.queue.lease)?;
            seconds("queue.poll_interval", self.queue.poll_interval)?;
            seconds(
                "queue.failed_retention_days",
                self.queue.failed_retention_days,
            )?;
            if self.queue.lease < 1.0 {
                return Err(Error::Config(format!(
                    "`queue.lease` must be at least 1 second, got {}",
                    self.queue.lease
                )));
            }
        }
        crate::logging::level_filter(&self.log_level)
            .map_err(|e| Error::Config(format!("`log_level` = {:?}: {e}", self.log_level)))?;
        let b = &self.broker;
        if b.publish_connections == 0 {
            return Err(Error::Config(
                "`broker.publish_connections` must be at least 1".into(),
            ));
        }
        seconds("broker.self_check_interval", b.self_check_interval)?;
        seconds("broker.self_check_timeout", b.self_check_timeout)?;
        if let Some(t) = b.connect_timeout {
            seconds("broker.connect_timeout", t)?;
        }
        seconds("broker.call_timeout", b.call_timeout)?;
        let p = &self.pool;
        if p.max_workers == 0 {
            return Err(Error::Config(
                "`pool.max_workers` must be at least 1".into(),
            ));
        }
        if p.min_workers > p.max_workers {
            return Err(Error::Config(format!(
                "`pool.min_workers` ({}) must not exceed `pool.max_workers` ({})",
                p.min_workers, p.max_workers
            )));
        }
        if p.max_tasks_per_worker == Some(0) {
            return Err(Error::Config(
                "`pool.max_tasks_per_worker` must be at least 1 (omit it for no limit)".into(),
            ));
        }
        if let Some(a) = p.max_worker_age {
            seconds("pool.max_worker_age", a)?;
        }
        seconds("pool.scale_down_after", p.scale_down_after)?;
        seconds("pool.kill_grace", p.kill_grace)?;
        seconds("pool.health_interval", p.health_interval)?;
        seconds("pool.health_timeout", p.health_timeout)?;
        if p.max_worker_memory_mb == Some(0) {
            return Err(Error::Config(
                "`pool.max_worker_memory_mb` must be at least 1 (omit it for no limit)".into(),
            ));
        }
        if p.max_worker_processes == Some(0) {
            return Err(Error::Config(
                "`pool.max_worker_processes` must be at least 1 (omit it for no limit)".into(),
            ));
        }
        let l = &self.limits;
        for (key, v) in [
            ("limits.max_payload_bytes", l.max_payload_bytes),
            ("limits.max_partial_messages", l.max_partial_messages),
            ("limits.max_partial_bytes", l.max_partial_bytes),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("`{key}` must be at least 1")));
            }
        }
        seconds("limits.partial_expiry", l.partial_expiry)?;
        seconds("limits.max_delay", l.max_delay)?;
        if let Some(a) = self.security.signature_max_age {
            seconds("security.signature_max_age", a)?;
        }
        if let Some(d) = &self.dashboard {
            host_port(&d.address).map_err(|e| {
                Error::Config(format!(
                    "`dashboard.address` = {:?}: {e}; give host:port, e.g. \"127.0.0.1:9180\"",
                    d.address
                ))
            })?;
        }
        if let Some(m) = &self.metrics {
            host_port(&m.address).map_err(|e| {
                Error::Config(format!(
                    "`metrics.address` = {:?}: {e}; give host:port, e.g. \"127.0.0.1:9187\" or \"localhost:9187\"",
                    m.address
                ))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
