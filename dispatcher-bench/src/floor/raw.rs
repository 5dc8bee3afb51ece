//! Raw `SELECT pg_notify(...)` throughput: the floor of `pg` (one message per transaction).
//!
//! `P` clients send `SELECT pg_notify('<channel>', '{"task":"bench.noop"}')` for `--raw-seconds`
//! on a channel nobody listens to: pgbench with a custom script (`-n -c P -j P -T S`), or a loop
//! of the prepared statement on `P` tokio-postgres connections (`--raw loop`). `pg` measures it
//! while its service LISTENs, so PostgreSQL signals the service's backend as in the run proper.

use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};
use crate::floor::Floor;
use crate::scenarios::pg::{connect, NOOP};

/// How the raw pg_notify rate is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RawTool {
    /// pgbench when it is found, else the loop.
    Auto,
    /// pgbench with a custom script.
    Pgbench,
    /// A tokio-postgres loop of the prepared statement.
    Loop,
    /// Not measured.
    None,
}

/// Measures the raw rate with `tool`; `None` for [`RawTool::None`].
pub async fn measure(
    url: &str,
    clients: u64,
    seconds: u64,
    tool: RawTool,
) -> Result<Option<Floor>> {
    let Some((rate, how)) = raw_rate(url, clients, seconds, tool).await? else {
        return Ok(None);
    };
    eprintln!("floor: raw pg_notify from {clients} clients: {rate:.0}/s ({how})");
    Ok(Some(Floor {
        kind: format!("raw pg_notify, one per transaction, {clients} clients: {how}"),
        jobs_per_sec: Some(rate.round()),
        ..Floor::default()
    }))
}

/// The raw pg_notify rate of `clients` clients over `seconds`, and how it was measured.
async fn raw_rate(
    url: &str,
    clients: u64,
    seconds: u64,
    tool: RawTool,
) -> Result<Option<(f64, String)>> {
    let channel = format!("bench_raw_{}", std::process::id());
    let pgbench = match tool {
        RawTool::None => return Ok(None),
        RawTool::Loop => None,
        RawTool::Auto | RawTool::Pgbench => find_pgbench(),
    };
    match (pgbench, tool) {
        (Some(bin), _) => {
            let rate =
                run_pgbench(&bin, url, &channel, clients, PgbenchRun::Seconds(seconds)).await?;
            Ok(Some((
                rate,
                format!("pgbench -n -c {clients} -j {clients} -T {seconds}, script: SELECT pg_notify('{channel}', '{NOOP}')"),
            )))
        }
        (None, RawTool::Pgbench) => Err(BenchError::Run(
            "pgbench not found on PATH nor in /usr/lib/postgresql/*/bin".into(),
        )),
        (None, _) => {
            let rate = notify_loop(url, &channel, clients, seconds).await?;
            Ok(Some((
                rate,
                format!(
                    "tokio-postgres loop of the prepared SELECT pg_notify($1, $2) on {clients} connections for {seconds}s"
                ),
            )))
        }
    }
}

/// pgbench on PATH, else the newest under `/usr/lib/postgresql/*/bin`.
pub fn find_pgbench() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("pgbench");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin/pgbench")))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

/// How long pgbench runs.
#[derive(Debug, Clone, Copy)]
pub enum PgbenchRun {
    /// `-T`: this many seconds.
    Seconds(u64),
    /// `-t`: this many transactions per client.
    PerClient(u64),
}

/// Runs pgbench's `clients` clients (a thread each) sending `SELECT pg_notify('<channel>',
/// '<NOOP>')`, one per transaction; returns its `tps`.
pub async fn run_pgbench(
    bin: &std::path::Path,
    url: &str,
    channel: &str,
    clients: u64,
    run: PgbenchRun,
) -> Result<f64> {
    let script = std::env::temp_dir().join(format!(
        "dispatcher-bench-{}-{channel}.sql",
        std::process::id()
    ));
    std::fs::write(
        &script,
        format!("SELECT pg_notify('{channel}', '{NOOP}');\n"),
    )
    .map_err(|e| BenchError::Run(format!("could not write {}: {e}", script.display())))?;
    let out = tokio::process::Command::new(bin)
        .arg("-n")
        .arg("-f")
        .arg(&script)
        .arg("-c")
        .arg(clients.to_string())
        .arg("-j")
        .arg(clients.to_string())
        .args(match run {
            PgbenchRun::Seconds(s) => ["-T".to_owned(), s.to_string()],
            PgbenchRun::PerClient(t) => ["-t".to_owned(), t.to_string()],
        })
        .arg(url)
        .output()
        .await;
    let _ = std::fs::remove_file(&script);
    let out = out.map_err(|e| BenchError::Run(format!("could not run pgbench: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), parse_tps(&text)) {
        (true, Some(tps)) => Ok(tps),
        _ => Err(BenchError::Run(format!(
            "pgbench failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        ))),
    }
}

/// The `tps = ...` figure of pgbench's output.
pub fn parse_tps(output: &str) -> Option<f64> {
    output.lines().find_map(|l| {
        l.trim()
            .strip_prefix("tps = ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

async fn notify_loop(url: &str, channel: &str, clients: u64, seconds: u64) -> Result<f64> {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(connect(url).await?);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for conn in conns {
        let channel = channel.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut count = 0u64;
            while Instant::now() < deadline {
                conn.client
                    .execute(&conn.notify, &[&channel, &NOOP])
                    .await
                    .map_err(|source| BenchError::Db {
                        what: "pg_notify".into(),
                        source,
                    })?;
                count += 1;
            }
            Ok::<u64, BenchError>(count)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t
            .await
            .map_err(|e| BenchError::Run(format!("a raw client failed: {e}")))??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_tps_is_parsed() {
        let out = "number of failed transactions: 0 (0.000%)\nlatency average = 0.165 ms\ntps = 24249.612328 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(24249.612328));
        assert_eq!(parse_tps("nothing"), None);
    }
}
