//! The service's configuration file (TOML).
//!
//! Every key is optional except `broker.url` (which `DATABASE_URL` may supply); unknown keys and
//! bad values are errors that name the key and the expected form.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

mod example;
mod sections;

pub use example::EXAMPLE;
pub use sections::*;

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
    /// Once at least this many Calls have finished since the last time and a second passes
    /// without one, hand the memory malloc holds free back to the system
    /// ([`crate::release_free_memory`]); 0: never. Default 10,000.
    #[serde(default = "default_release_memory_after")]
    pub release_memory_after: u64,
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
fn default_release_memory_after() -> u64 {
    10_000
}
fn default_grace() -> f64 {
    30.0
}
fn default_log_level() -> String {
    "info".to_owned()
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
            release_memory_after: default_release_memory_after(),
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
