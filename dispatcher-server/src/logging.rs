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

impl dispatcher_core::LogLevelControl for LogHandle {
    fn set_level(&self, level: &str) -> std::result::Result<String, String> {
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
