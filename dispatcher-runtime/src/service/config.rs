//! Service settings and the log-level capability an application may give a service.

use std::time::Duration;

use dispatcher_core::chunk::AssemblerLimits;

/// The channel name recorded on Calls that did not come through a broker.
pub const LOCAL_CHANNEL: &str = "local";

/// Service settings. Every field has a sensible default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// This service's name in replies and Calls. Default: `<hostname-ish>-<pid>`.
    pub node_id: String,
    /// Channels to listen on. Default: `dispatcher`.
    pub channels: Vec<String>,
    /// Finished Calls kept for `history`. Default 10,000.
    pub history_size: usize,
    /// Most bytes the history holds (the JSON of the Calls' arguments, results and errors plus
    /// a fixed overhead per Call); the oldest Calls are dropped to stay under it. Default 64 MiB.
    pub history_max_bytes: usize,
    /// Longest `args`, `kwargs`, `result` or `error` of a Call kept whole in the history, in
    /// bytes of JSON text; a longer one is cut there and ends with
    /// [`crate::history::TRUNCATED_MARKER`] and its full size. Default 1 MiB.
    pub history_field_max_bytes: usize,
    /// Most Calls waiting at once (delayed, blocked by a duplicate, or queued for a worker); a
    /// further Call is rejected with a reason saying so. Default 100,000.
    pub max_waiting: usize,
    /// Longest delay a message may ask for. Default one day.
    pub max_delay: Duration,
    /// How long running Calls may finish at shutdown before they are ended. Default 30 s.
    pub shutdown_grace: Duration,
    /// Bounds on chunked payloads (their `max_payload_bytes` also bounds unchunked ones).
    pub chunks: AssemblerLimits,
    /// Capacity of the channel from the pool and of the command channel. Default 4096.
    pub event_capacity: usize,
    /// When this many Calls are queued for a worker, the service stops taking messages from its
    /// brokers until fewer are: what it has not taken waits in the broker (`PgBroker`: in the
    /// subscription's buffer, then in PostgreSQL's notification queue), so a flood costs no more
    /// memory than this many Calls. Control messages behind the flood wait as well. Local
    /// submissions and tasks submitted by tasks are not held back; `max_waiting` still applies to
    /// everything taken in. Default 1,000.
    pub intake_pause_at: usize,
    /// Where the application serves metrics (`host:port`), reported by the `metrics` command as
    /// dispatcherd does (`enabled`, `status`). The service itself serves nothing. Default: none.
    pub metrics_endpoint: Option<String>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            node_id: default_node_id(),
            channels: vec!["dispatcher".to_owned()],
            history_size: 10_000,
            history_max_bytes: crate::history::DEFAULT_MAX_BYTES,
            history_field_max_bytes: crate::history::DEFAULT_FIELD_MAX_BYTES,
            max_waiting: 100_000,
            max_delay: Duration::from_secs(86_400),
            shutdown_grace: Duration::from_secs(30),
            chunks: AssemblerLimits::default(),
            event_capacity: 4096,
            intake_pause_at: 1_000,
            metrics_endpoint: None,
        }
    }
}

fn default_node_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Changes the log level of the running process (the `set_log_level` control command).
///
/// The service does not own logging; the application gives it this capability (for example over a
/// `tracing_subscriber::reload` handle). Without one, `set_log_level` replies with an error.
pub trait LogLevelControl: Send + Sync + 'static {
    /// Sets the filter to `level` (e.g. `debug`, `info,dispatcher_core=trace`); returns the
    /// previous one, or why `level` was refused.
    fn set_level(&self, level: &str) -> std::result::Result<String, String>;
}
