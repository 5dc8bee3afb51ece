//! The file's sections other than the top level: `[broker]`, `[pool]`, `[limits]`,
//! `[security]`, `[metrics]`, `[dashboard]`, `[queue]`.

use serde::Deserialize;

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
    /// The workers' scheduling policy: `"batch"` (the default: a worker woken for a job does
    /// not preempt the service) or `"normal"`.
    #[serde(default)]
    pub worker_scheduling: dispatcher_pool::WorkerScheduling,
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
            worker_scheduling: dispatcher_pool::WorkerScheduling::default(),
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

pub(super) fn one() -> usize {
    1
}
pub(super) fn one_f() -> f64 {
    1.0
}
pub(super) fn two() -> f64 {
    2.0
}
pub(super) fn three() -> f64 {
    3.0
}
pub(super) fn four() -> usize {
    4
}
pub(super) fn five() -> f64 {
    5.0
}
pub(super) fn thirty() -> f64 {
    30.0
}
