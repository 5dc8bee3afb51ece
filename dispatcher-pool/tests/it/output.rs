//! A worker's stdout and stderr are logged line by line, tagged with the worker id.

use std::time::{Duration, Instant};

use dispatcher_pool::ProcessPool;

use crate::support::{config, service, WAIT};
use crate::tasks::*;

static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        // POOL_TEST_LOG (a filter) shows the pool's logs while debugging a test.
        if std::env::var_os("POOL_TEST_LOG").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends this process's logs to a buffer the tests can read.
pub fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_writer(|| LogWriter)
        .with_ansi(false)
        .with_env_filter(
            std::env::var("POOL_TEST_LOG")
                .unwrap_or_else(|_| "dispatcher_pool::worker_output=info".into()),
        )
        .try_init();
}

pub async fn worker_output_is_logged_with_the_worker_id() {
    let svc = service(ProcessPool::with_config(config(1, 1))).await;
    let token = format!("token-{}", dispatcher_core::call::new_uuid());
    svc.publisher()
        .publish(print::call(token.clone()))
        .await
        .unwrap();
    let calls = svc.wait_for_calls(1, WAIT).await.unwrap();
    let worker = calls[0].worker_id.unwrap();
    let start = Instant::now();
    loop {
        let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).to_string();
        let lines: Vec<&str> = logs.lines().filter(|l| l.contains(&token)).collect();
        let has = |stream: &str, prefix: &str| {
            lines.iter().any(|l| {
                l.contains(&format!("{prefix}{token}"))
                    && l.contains(&format!("worker={worker}"))
                    && l.contains(&format!("stream=\"{stream}\""))
            })
        };
        if has("stdout", "") && has("stderr", "err: ") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "worker output not logged: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    svc.shutdown().await;
}
