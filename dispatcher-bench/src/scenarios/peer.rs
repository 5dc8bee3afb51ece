//! The durable-queue peer for `queue --peer`: graphile-worker (Node), run by its own script
//! (`run.sh DBNAME JOBS CONCURRENCY BATCH`, default `peer-gw/run.sh`, or `PEER_GW_SCRIPT`), which creates
//! and drops its database and prints one JSON object as its last stdout line (`jobs_per_sec`,
//! `latency_p50_ms`, `latency_p99_ms`, ...).
//!
//! The peer is optional: when its script or `node` is missing, [`check`] says why and the
//! `queue` scenario runs alone. Nothing else in the workspace needs Node.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

use crate::error::{BenchError, Result};

/// Why the peer cannot run here, or `Ok` when it can.
pub fn check(script: &Path) -> std::result::Result<(), String> {
    if !script.is_file() {
        return Err(format!(
            "{} not found (set --peer-script or PEER_GW_SCRIPT)",
            script.display()
        ));
    }
    if find_on_path("node").is_none() {
        return Err("node is not on PATH (the peer is graphile-worker, a Node program)".into());
    }
    Ok(())
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// What the peer's run measured.
#[derive(Debug, Clone)]
pub struct PeerRun {
    /// Jobs per second of its run phase.
    pub jobs_per_sec: f64,
    /// Add-to-start latency p50, milliseconds.
    pub p50_ms: Option<f64>,
    /// Add-to-start latency p99, milliseconds.
    pub p99_ms: Option<f64>,
    /// Its whole JSON line.
    pub line: Value,
}

/// Runs the peer once on the server of `pg` (host, port and user go to its script as
/// `PGHOST`, `PGPORT`, `PGUSER`), in a database `db` it creates and drops.
pub async fn run(
    script: &Path,
    pg: &tokio_postgres::Config,
    db: &str,
    jobs: u64,
    concurrency: u64,
    batch: u64,
) -> Result<PeerRun> {
    let mut cmd = tokio::process::Command::new(script);
    cmd.arg(db)
        .arg(jobs.to_string())
        .arg(concurrency.to_string())
        .arg(batch.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if let Some(tokio_postgres::config::Host::Tcp(h)) = pg.get_hosts().first() {
        cmd.env("PGHOST", h);
    }
    if let Some(p) = pg.get_ports().first() {
        cmd.env("PGPORT", p.to_string());
    }
    if let Some(u) = pg.get_user() {
        cmd.env("PGUSER", u);
    }
    eprintln!(
        "peer: {} {db} {jobs} {concurrency} {batch}",
        script.display()
    );
    let out = cmd
        .output()
        .await
        .map_err(|e| BenchError::Run(format!("could not run {}: {e}", script.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let line: Value = serde_json::from_str(last).map_err(|e| {
        BenchError::Run(format!(
            "the peer ({}) did not end with a JSON line ({e}): {last:?}",
            out.status
        ))
    })?;
    eprintln!("peer: {line}");
    parse(line, out.status.success())
}

fn parse(line: Value, success: bool) -> Result<PeerRun> {
    if let Some(e) = line.get("error") {
        return Err(BenchError::Run(format!("the peer failed: {e}")));
    }
    if !success {
        return Err(BenchError::Run(format!(
            "the peer's script failed; its last line: {line}"
        )));
    }
    let jobs_per_sec = line
        .get("jobs_per_sec")
        .and_then(Value::as_f64)
        .ok_or_else(|| BenchError::Run(format!("no jobs_per_sec in the peer's line: {line}")))?;
    Ok(PeerRun {
        jobs_per_sec,
        p50_ms: line.get("latency_p50_ms").and_then(Value::as_f64),
        p99_ms: line.get("latency_p99_ms").and_then(Value::as_f64),
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_script_is_a_reason_to_skip() {
        let why = check(Path::new("/nonexistent/run.sh")).unwrap_err();
        assert!(why.contains("/nonexistent/run.sh"), "{why}");
    }

    #[test]
    fn the_peers_line_is_read() {
        let line = serde_json::json!({"jobs_per_sec": 11203, "latency_p50_ms": 7.72, "latency_p99_ms": 22.48});
        let r = parse(line, true).unwrap();
        assert_eq!(r.jobs_per_sec, 11203.0);
        assert_eq!(r.p50_ms, Some(7.72));
        assert_eq!(r.p99_ms, Some(22.48));
        let e = parse(serde_json::json!({"error": "timeout after 50s"}), false).unwrap_err();
        assert!(e.to_string().contains("timeout"), "{e}");
        assert!(parse(serde_json::json!({}), true).is_err());
    }
}
