//! Logging: text or JSON lines on stderr, colour only on a terminal, and a filter the
//! `set_log_level` command can change.
//!
//! A level (`debug`, `INFO`, `30`, ...) is scoped to this project's crates: `debug` and `trace`
//! turn on the `dispatcher*` targets only, and every other crate (tokio-postgres, which logs
//! statements with their parameters at debug, among them) stays at `info`. A dependency's debug
//! output is had by naming it: `tokio_postgres=debug`. The same rules hold for the
//! configuration's `log_level`; `RUST_LOG`, when set, is taken as it is.

use std::str::FromStr;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::error::{Error, Result};

/// The target prefix of this project's crates (`dispatcher_core`, `dispatcher_runtime`,
/// `dispatcher_pool`, ...): a filter directive matches every target that starts with it.
pub const OWN_TARGETS: &str = "dispatcher";

/// What dependencies log at when a level asks for more (`debug`, `trace`).
const DEPENDENCY_LEVEL: &str = "info";

/// The levels and forms `log_level` and `set_log_level` take, for messages.
pub const LEVEL_FORMS: &str = "trace, debug, info, warn, error, off (or Python's DEBUG, INFO, WARNING, ERROR, CRITICAL, or 10-50), optionally followed by target=level directives such as tokio_postgres=debug";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON formatter: `timestamp`, `level`,
    /// `target`, `fields` with the message and every structured field, `span`, `spans`).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("log format {s:?} is not one of: text, json")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// The running process's log filter.
pub struct LogHandle {
    reload: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("current", &self.current())
            .finish()
    }
}

impl LogHandle {
    /// The filter in force.
    pub fn current(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A level word as operators send it: tracing's names, Python's names (case-insensitive) and
/// numbers (10 to 50, as `logging.WARNING` is 30).
fn level_word(word: &str) -> Option<&'static str> {
    if let Ok(n) = word.parse::<i64>() {
        return Some(match n {
            i64::MIN..=0 => "trace",
            1..=10 => "debug",
            11..=20 => "info",
            21..=30 => "warn",
            _ => "error",
        });
    }
    Some(match word.to_ascii_lowercase().as_str() {
        "notset" | "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" | "critical" | "fatal" => "error",
        "off" => "off",
        _ => return None,
    })
}

/// Turns a level as operators send it into the filter in force (tracing-subscriber's
/// `EnvFilter` syntax), the one parser of `log_level` and `set_log_level`:
///
/// * a level (`debug`, `INFO`, `WARNING`, `10`, ...) applies to this project's crates (the
///   `dispatcher*` targets); dependencies log at `info` when the level is more verbose than
///   that, else at the level: `debug` → `info,dispatcher=debug`, `warn` → `warn`;
/// * `target=level` directives pass with their level translated (`tokio_postgres=DEBUG` →
///   `tokio_postgres=debug`): the way to a dependency's debug output;
/// * directives without a level keep everything else at `info`: `tokio_postgres=debug` →
///   `info,tokio_postgres=debug`.
///
/// A bare word that is no level is refused (the filter syntax would take it as a target name
/// and silence everything else), and so is anything `EnvFilter` does not parse.
pub fn level_filter(level: &str) -> std::result::Result<String, String> {
    let mut base: Option<&'static str> = None;
    let mut directives = Vec::new();
    for d in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match d.split_once('=') {
            Some((target, lvl)) => match level_word(lvl.trim()) {
                Some(l) => directives.push(format!("{}={l}", target.trim())),
                None => directives.push(d.to_owned()),
            },
            None => match level_word(d) {
                Some(l) => base = Some(l),
                None => return Err(format!("{d:?} is not a level; use one of {LEVEL_FORMS}")),
            },
        }
    }
    let mut parts = Vec::new();
    match base {
        Some(l @ ("trace" | "debug")) => {
            parts.push(DEPENDENCY_LEVEL.to_owned());
            parts.push(format!("{OWN_TARGETS}={l}"));
        }
        Some(l) => parts.push(l.to_owned()),
        None if directives.is_empty() => {
            return Err(format!("no level given; use one of {LEVEL_FORMS}"))
        }
        None => parts.push(DEPENDENCY_LEVEL.to_owned()),
    }
    parts.extend(directives);
    let filter = parts.join(",");
    EnvFilter::try_new(&filter).map_err(|e| format!("{level:?} is not a valid filter: {e}"))?;
    Ok(filter)
}

impl dispatcher_runtime::LogLevelControl for LogHandle {
    fn set_level(&self, level: &str) -> std::result::Result<String, String> {
        let level = &level_filter(level)?;
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        self.reload.reload(filter).map_err(|e| e.to_string())?;
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        Ok(std::mem::replace(&mut *cur, level.to_owned()))
    }
}

/// [`init_logging_as`] with text lines.
pub fn init_logging(level: &str) -> Result<Arc<LogHandle>> {
    init_logging_as(level, LogFormat::Text)
}

/// Installs the global subscriber: lines on stderr in `format`, coloured only when stderr is a
/// terminal, filtered by `level` as [`level_filter`] reads it (`RUST_LOG`, when set, wins and is
/// taken as an `EnvFilter` as it is). Records of the `log` crate (tokio-postgres logs through
/// it) go through the same filter. Call it once, early.
pub fn init_logging_as(level: &str, format: LogFormat) -> Result<Arc<LogHandle>> {
    let level = match std::env::var("RUST_LOG").ok().filter(|l| !l.is_empty()) {
        Some(l) => {
            EnvFilter::try_new(&l).map_err(|e| Error::Config(format!("RUST_LOG {l:?}: {e}")))?;
            l
        }
        None => {
            level_filter(level).map_err(|e| Error::Config(format!("`log_level` {level:?}: {e}")))?
        }
    };
    let filter = EnvFilter::try_new(&level)
        .map_err(|e| Error::Config(format!("log level {level:?}: {e}")))?;
    let (layer, handle) = reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let output = match format {
        LogFormat::Text => output.boxed(),
        LogFormat::Json => output.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(layer)
        .with(output)
        .try_init()
        .map_err(|e| Error::Config(format!("a global logger is already installed: {e}")))?;
    Ok(Arc::new(LogHandle {
        reload: handle,
        current: Mutex::new(level),
    }))
}

#[cfg(test)]
mod tests {
    use super::{level_filter, LogFormat};

    #[test]
    fn python_and_tracing_levels() {
        assert_eq!(level_filter("WARNING").unwrap(), "warn");
        assert_eq!(level_filter("critical").unwrap(), "error");
        assert_eq!(level_filter("30").unwrap(), "warn");
        assert_eq!(level_filter("info").unwrap(), "info");
        assert_eq!(
            level_filter("info,dispatcher_core=DEBUG").unwrap(),
            "info,dispatcher_core=debug"
        );
        assert!(level_filter("loud").unwrap_err().contains("not a level"));
        assert!(level_filter("loud").unwrap_err().contains("trace, debug"));
        assert!(level_filter("").is_err());
        assert!(level_filter("info,[nope").is_err());
    }

    #[test]
    fn debug_is_scoped_to_our_crates() {
        assert_eq!(level_filter("debug").unwrap(), "info,dispatcher=debug");
        assert_eq!(level_filter("10").unwrap(), "info,dispatcher=debug");
        assert_eq!(level_filter("TRACE").unwrap(), "info,dispatcher=trace");
        assert_eq!(
            level_filter("tokio_postgres=debug").unwrap(),
            "info,tokio_postgres=debug"
        );
        assert_eq!(
            level_filter("debug,tokio_postgres=DEBUG").unwrap(),
            "info,dispatcher=debug,tokio_postgres=debug"
        );
    }

    #[test]
    fn formats() {
        assert_eq!("JSON".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert!("xml"
            .parse::<LogFormat>()
            .unwrap_err()
            .contains("text, json"));
    }
}
