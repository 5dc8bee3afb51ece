//! The service process of the PostgreSQL scenarios: this binary in `serve` mode, and the control
//! requests the bench sends it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher_broker_pg::PgBroker;
use dispatcher_core::{control, Call};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::error::{BenchError, Result};
use crate::report::proc_status_kb;
use crate::scenarios::pool::worker_pids;
use crate::scenarios::serve::READY;

/// How long one control request may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// A running service process, and a broker connection to reach it.
pub struct Remote {
    child: Child,
    stdin: Option<ChildStdin>,
    _stdout: BufReader<ChildStdout>,
    /// The service's process id.
    pub pid: u32,
    /// The channel it listens on.
    pub channel: String,
    /// The bench's own broker (control requests).
    pub broker: Arc<PgBroker>,
    /// Where the service serves its dashboard, when it does.
    pub dashboard: Option<SocketAddr>,
}

/// A live overview kept open ([`Remote::watch_dashboard`]); dropping it closes it.
#[derive(Debug)]
pub struct DashboardViewer {
    task: tokio::task::JoinHandle<()>,
    /// Live updates received.
    pub updates: Arc<std::sync::atomic::AtomicU64>,
    /// Bytes received.
    pub bytes: Arc<std::sync::atomic::AtomicU64>,
}

impl Drop for DashboardViewer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What [`Remote::wait_finished`] saw.
#[derive(Debug, Clone, Default)]
pub struct Waited {
    /// Finished Calls by outcome at the end.
    pub outcomes: BTreeMap<String, u64>,
    /// The service's RSS at the first poll that saw the history full, KiB.
    pub rss_history_full_kb: Option<u64>,
}

impl Remote {
    /// Starts `dispatcher-bench serve` with `workers` workers and waits until it listens.
    pub async fn start(url: &str, workers: u64, history: Option<u64>) -> Result<Remote> {
        Remote::spawn(url, workers, history, false, None).await
    }

    /// Like [`Remote::start`], with the service also serving the web dashboard on a free local
    /// port ([`Remote::dashboard`]).
    pub async fn start_with_dashboard(
        url: &str,
        workers: u64,
        history: Option<u64>,
    ) -> Result<Remote> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| BenchError::Run(format!("no free local port for the dashboard: {e}")))?
            .port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        Remote::spawn(url, workers, history, false, Some(address)).await
    }

    /// Like [`Remote::start`], with the service also consuming the durable queue of its
    /// channel (migrated on start).
    pub async fn start_queue(url: &str, workers: u64, history: Option<u64>) -> Result<Remote> {
        Remote::spawn(url, workers, history, true, None).await
    }

    async fn spawn(
        url: &str,
        workers: u64,
        history: Option<u64>,
        queue: bool,
        dashboard: Option<SocketAddr>,
    ) -> Result<Remote> {
        let channel = format!(
            "bench_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        let exe = std::env::current_exe()
            .map_err(|e| BenchError::Run(format!("cannot find this executable: {e}")))?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("serve")
            .arg("--workers")
            .arg(workers.to_string())
            .arg("--channel")
            .arg(&channel)
            .env("DATABASE_URL", url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(h) = history {
            cmd.arg("--history").arg(h.to_string());
        }
        if queue {
            cmd.arg("--queue");
        }
        if let Some(a) = dashboard {
            cmd.arg("--dashboard-address").arg(a.to_string());
        }
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| BenchError::Run(format!("could not start the service process: {e}")))?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| BenchError::Run("no stdout from the service process".into()))?,
        );
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(60), stdout.read_line(&mut line)).await;
        let pid = match read {
            Ok(Ok(_)) => line
                .strip_prefix(READY)
                .and_then(|rest| rest.trim().parse::<u32>().ok()),
            _ => None,
        }
        .ok_or_else(|| {
            BenchError::Run(format!(
                "the service process did not become ready (it said {line:?}); see its errors above"
            ))
        })?;
        let broker = Arc::new(PgBroker::connect(url).await?);
        eprintln!(
            "service process {pid} ready in {:.2}s, listening on {channel}{}",
            started.elapsed().as_secs_f64(),
            dashboard
                .map(|a| format!(", dashboard on http://{a}/"))
                .unwrap_or_default()
        );
        Ok(Remote {
            child,
            stdin,
            _stdout: stdout,
            pid,
            channel,
            broker,
            dashboard,
        })
    }

    /// Keeps the dashboard's live overview open, as a browser tab does, until the returned
    /// task is aborted; it counts the updates and bytes received.
    pub fn watch_dashboard(&self) -> Option<DashboardViewer> {
        let address = self.dashboard?;
        let updates = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (u, b) = (updates.clone(), bytes.clone());
        let task = tokio::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            // The service binds the dashboard when it starts; it is up by now.
            let Ok(mut s) = tokio::net::TcpStream::connect(address).await else {
                eprintln!("dashboard viewer: cannot connect to {address}");
                return;
            };
            let req = format!("GET /live/overview HTTP/1.1\r\nHost: {address}\r\n\r\n");
            if s.write_all(req.as_bytes()).await.is_err() {
                return;
            }
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                b.fetch_add(n as u64, Relaxed);
                let events = buf[..n].windows(5).filter(|w| w == b"data:").count();
                u.fetch_add(events as u64, Relaxed);
            }
        });
        Some(DashboardViewer {
            task,
            updates,
            bytes,
        })
    }

    /// Sends a control command and returns the one reply.
    pub async fn control(&self, command: &str, data: Map<String, Value>) -> Result<Value> {
        let replies = control::request(
            &*self.broker,
            &self.channel,
            command,
            data,
            Some(1),
            CONTROL_TIMEOUT,
        )
        .await?;
        replies.into_iter().next().ok_or_else(|| {
            BenchError::Run(format!(
                "no reply to {command:?} within {CONTROL_TIMEOUT:?}"
            ))
        })
    }

    /// Finished Calls by outcome (the `metrics` command).
    pub async fn outcomes(&self) -> Result<BTreeMap<String, u64>> {
        let m = self.control("metrics", Map::new()).await?;
        Ok(outcomes_of(&m))
    }

    /// A `/proc/<pid>/status` field of the service process, KiB.
    pub fn status_kb(&self, field: &str) -> Option<u64> {
        proc_status_kb(self.pid, field)
    }

    /// The largest RSS among the workers, and the largest anonymous part of it, KiB.
    pub async fn worker_rss_kb(&self) -> Result<(Option<u64>, Option<u64>)> {
        let pids = worker_pids(&self.control("workers", Map::new()).await?);
        let max = |field: &str| {
            pids.iter()
                .filter_map(|pid| proc_status_kb(*pid, field))
                .max()
        };
        Ok((max("VmRSS"), max("RssAnon")))
    }

    /// The worker pids (the `workers` command).
    pub async fn worker_pids(&self) -> Result<Vec<u32>> {
        Ok(worker_pids(&self.control("workers", Map::new()).await?))
    }

    /// The backend pid of the service's LISTEN connection (the `main` command).
    pub async fn listener_pid(&self) -> Result<Option<u32>> {
        let main = self.control("main", Map::new()).await?;
        Ok(main
            .get("brokers")
            .and_then(|b| b.get(0))
            .and_then(|b| b.get("listener_pid"))
            .and_then(Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0))
    }

    /// The newest `limit` Calls of the history, oldest first.
    pub async fn newest_calls(&self, limit: u64) -> Result<Vec<Call>> {
        let mut data = Map::new();
        data.insert("limit".into(), json!(limit));
        let reply = self.control("history", data).await?;
        let calls = reply
            .get("calls")
            .cloned()
            .ok_or_else(|| BenchError::Run(format!("odd history reply: {reply}")))?;
        Ok(serde_json::from_value(calls)?)
    }

    /// Polls the `metrics` command until `n` Calls finished since `base` was counted; notes the
    /// RSS when the history first holds `history` Calls.
    pub async fn wait_finished(
        &self,
        label: &str,
        base: u64,
        n: u64,
        history: Option<u64>,
    ) -> Result<Waited> {
        let mut waited = Waited::default();
        let start = Instant::now();
        let mut last_change = Instant::now();
        let mut last_done = 0;
        let mut last_print = Instant::now();
        loop {
            let outcomes = self.outcomes().await?;
            let done = outcomes.values().sum::<u64>().saturating_sub(base);
            if waited.rss_history_full_kb.is_none() && history.is_some_and(|h| done >= h) {
                waited.rss_history_full_kb = self.status_kb("VmRSS");
            }
            if done >= n {
                waited.outcomes = outcomes;
                return Ok(waited);
            }
            if done != last_done {
                last_done = done;
                last_change = Instant::now();
            } else if last_change.elapsed() > Duration::from_secs(30) {
                return Err(BenchError::Run(format!(
                    "{label}: stuck at {done}/{n} finished Calls for 30 s (outcomes: {outcomes:?})"
                )));
            }
            if last_print.elapsed() >= Duration::from_secs(1) {
                last_print = Instant::now();
                eprintln!(
                    "{label}: {done}/{n} finished after {:.1}s; service RSS {} KiB",
                    start.elapsed().as_secs_f64(),
                    self.status_kb("VmRSS").unwrap_or(0)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the service gracefully (closes its standard input) and waits for it.
    pub async fn stop(mut self) -> Result<()> {
        drop(self.stdin.take());
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(BenchError::Run(format!(
                "the service process ended with {status}"
            ))),
            Ok(Err(e)) => Err(BenchError::Run(format!(
                "could not wait for the service process: {e}"
            ))),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(BenchError::Run(
                    "the service process did not stop within 30 s; killed".into(),
                ))
            }
        }
    }
}

/// The Calls by outcome counted in `now` and not yet in `before` (one round of a scenario
/// run several times against the same service).
pub fn outcomes_since(
    now: &BTreeMap<String, u64>,
    before: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    now.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Finished Calls by outcome in a `metrics` reply (outcomes with none left out).
pub fn outcomes_of(metrics: &Value) -> BTreeMap<String, u64> {
    metrics
        .get("finished")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                .filter(|(_, v)| *v > 0)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_from_a_metrics_reply() {
        let m = json!({"finished": {"ok": 3, "error": 0, "rejected": 1}, "received": 4});
        let o = outcomes_of(&m);
        assert_eq!(o.len(), 2);
        assert_eq!(o["ok"], 3);
        assert_eq!(o["rejected"], 1);
        assert!(outcomes_of(&Value::Null).is_empty());
    }
}
