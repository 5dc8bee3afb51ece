//! Logging with a filter the `set_log_level` command can change.

use std::sync::{Arc, Mutex};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::error::{Error, Result};

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

/// Turns a level as operators send it into a filter: tracing's names, Python's names
/// (case-insensitive: NOTSET, DEBUG, INFO, WARNING, ERROR, CRITICAL, FATAL) and numbers (10 to
/// 50, as `logging.WARNING` is 30) become levels; `target=level` directives pass with their level
/// translated. A bare word that is none of these is refused (the filter syntax would take it as a
/// target name and silence everything else).
pub fn level_filter(level: &str) -> std::result::Result<String, String> {
    fn one(word: &str) -> Option<&'static str> {
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
    let mut parts = Vec::new();
    for d in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match d.split_once('=') {
            Some((target, lvl)) => match one(lvl.trim()) {
                Some(l) => parts.push(format!("{}={l}", target.trim())),
                None => parts.push(d.to_owned()),
            },
            None => match one(d) {
                Some(l) => parts.push(l.to_owned()),
                None => {
                    return Err(format!(
                        "{d:?} is neither a level (trace, debug, info, warn, error, off; DEBUG, INFO, WARNING, ERROR, CRITICAL; 10-50) nor a target=level directive"
                    ))
                }
            },
        }
    }
    if parts.is_empty() {
        return Err("empty level".to_owned());
    }
    Ok(parts.join(","))
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

/// Installs the global subscriber: formatted logs on stderr with `level` as the filter
/// (`RUST_LOG` wins when set). Call it once, early.
pub fn init_logging(level: &str) -> Result<Arc<LogHandle>> {
    let level = std::env::var("RUST_LOG")
        .ok()
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| level.to_owned());
    let filter = EnvFilter::try_new(&level)
        .map_err(|e| Error::Config(format!("log level {level:?}: {e}")))?;
    let (layer, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(layer)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .try_init()
        .map_err(|e| Error::Config(format!("a global logger is already installed: {e}")))?;
    Ok(Arc::new(LogHandle {
        reload: handle,
        current: Mutex::new(level),
    }))
}

#[cfg(test)]
mod tests {
    use super::level_filter;

    #[test]
    fn python_and_tracing_levels() {
        assert_eq!(level_filter("WARNING").unwrap(), "warn");
        assert_eq!(level_filter("critical").unwrap(), "error");
        assert_eq!(level_filter("30").unwrap(), "warn");
        assert_eq!(level_filter("10").unwrap(), "debug");
        assert_eq!(
            level_filter("info,dispatcher_core=DEBUG").unwrap(),
            "info,dispatcher_core=debug"
        );
        assert!(level_filter("loud")
            .unwrap_err()
            .contains("neither a level"));
        assert!(level_filter("").is_err());
    }
}
