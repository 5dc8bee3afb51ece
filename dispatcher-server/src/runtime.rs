//! [`service_runtime`]: the tokio runtime a service runs best on.

use crate::error::{Error, Result};

/// The environment variable that overrides the worker thread count (tokio's own).
const THREADS_ENV: &str = "TOKIO_WORKER_THREADS";

/// A multi-threaded tokio runtime with **one** worker thread (unless `TOKIO_WORKER_THREADS`
/// sets another count), every driver enabled: what a service needs.
///
/// A service's hot path is one task (the service loop, which also reads the workers' sockets)
/// fed by the broker's listener task; a second worker thread adds little but wake-ups between
/// the two threads as messages go from the listener to the loop. Measured with
/// `dispatcher-bench pg` (4 publishers, 4 workers, two cores), the service's CPU per Call was a
/// quarter lower with one worker thread than with `Runtime::new()`'s one per core. Blocking
/// work (`spawn_blocking`: memory release, file reads) has its own threads either way, and the
/// tasks run in worker processes, not on the runtime.
///
/// ```no_run
/// let rt = dispatcher_server::service_runtime()?;
/// rt.block_on(async { /* Server::new(config, registry).run().await */ });
/// # Ok::<(), dispatcher_server::Error>(())
/// ```
pub fn service_runtime() -> Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os(THREADS_ENV).is_none() {
        builder.worker_threads(1);
    }
    builder.enable_all().build().map_err(Error::Runtime)
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_worker_thread_runs_spawned_tasks() {
        let rt = super::service_runtime().unwrap();
        if std::env::var_os(super::THREADS_ENV).is_none() {
            assert_eq!(rt.metrics().num_workers(), 1);
        }
        let got = rt.block_on(async { tokio::spawn(async { 7 }).await.unwrap() });
        assert_eq!(got, 7);
    }
}
