//! `serve`: the service the PostgreSQL scenarios measure, run as users run it: a
//! [`dispatcher_server::Server`] (PostgreSQL broker, a process pool of `--workers` workers of
//! this binary) listening on `--channel`.
//!
//! With `--queue` it also consumes the durable queue (`[queue]`, schema `dispatcher`, migrated on
//! start) of the same channel, as the `queue` scenario needs.
//!
//! It prints `ready <pid>` on stdout once it listens, and stops gracefully when its standard
//! input closes (the bench that started it drops it) or on SIGTERM/SIGINT.

use std::io::{BufRead, Write};

use dispatcher_core::TaskRegistry;
use dispatcher_server::{shutdown_signal, Server, ServerConfig};

use crate::error::{BenchError, Result};
use crate::scenarios::Options;

/// The first word of the line `serve` prints when it is ready.
pub const READY: &str = "ready";

/// The server's settings, as a configuration file would give them; `queue`: also consume the
/// durable queue (migrated on start).
pub fn config_toml(
    url: &str,
    channel: &str,
    workers: u64,
    history: Option<u64>,
    queue: bool,
    dashboard: Option<&str>,
) -> String {
    let mut broker = toml::Table::new();
    broker.insert("url".into(), url.into());
    let mut pool = toml::Table::new();
    let w = i64::try_from(workers).unwrap_or(i64::MAX);
    pool.insert("min_workers".into(), w.into());
    pool.insert("max_workers".into(), w.into());
    let mut t = toml::Table::new();
    t.insert(
        "node_id".into(),
        format!("bench-serve-{}", std::process::id()).into(),
    );
    t.insert("channels".into(), toml::Value::Array(vec![channel.into()]));
    if let Some(h) = history {
        t.insert(
            "history_size".into(),
            i64::try_from(h).unwrap_or(i64::MAX).into(),
        );
    }
    t.insert("shutdown_grace".into(), 5.0.into());
    t.insert("broker".into(), toml::Value::Table(broker));
    t.insert("pool".into(), toml::Value::Table(pool));
    if let Some(address) = dashboard {
        let mut d = toml::Table::new();
        d.insert("address".into(), address.into());
        t.insert("dashboard".into(), toml::Value::Table(d));
    }
    if queue {
        let mut q = toml::Table::new();
        q.insert("enabled".into(), true.into());
        q.insert("migrate_on_start".into(), true.into());
        t.insert("queue".into(), toml::Value::Table(q));
    }
    t.to_string()
}

/// Runs the service until standard input closes or a signal arrives.
pub async fn run(options: Options, registry: TaskRegistry) -> Result<()> {
    let url = options.database_url("serve")?;
    let channel = options
        .channel
        .as_deref()
        .ok_or_else(|| BenchError::Run("serve needs --channel NAME".into()))?;
    let config = ServerConfig::from_toml(&config_toml(
        url,
        channel,
        options.workers,
        options.history,
        options.queue,
        options.dashboard_address.as_deref(),
    ))?;
    let running = Server::new(config, registry).start().await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY} {}", std::process::id())
            .and_then(|()| out.flush())
            .map_err(|e| BenchError::Run(format!("could not write to stdout: {e}")))?;
    }
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        // Reads until end of file: the bench closed its end.
        for line in std::io::stdin().lock().lines() {
            if line.is_err() {
                break;
            }
        }
        let _ = closed_tx.send(());
    });
    let signal = shutdown_signal()?;
    running
        .until(async move {
            tokio::select! {
                _ = closed_rx => {}
                () = signal => {}
            }
        })
        .await?;
    Ok(())
}
