//! The JSON report and the measurements that go into it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Result;

/// The figures of one run: the last line on stdout.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Tasks run.
    pub tasks: u64,
    /// Worker processes.
    pub workers: u64,
    /// Concurrent publishers.
    pub publishers: u64,
    /// Messages per publish batch, where the scenario batches.
    pub batch: Option<u64>,
    /// Seconds from the first submission until the last Call finished.
    pub seconds: f64,
    /// `tasks / seconds`.
    pub tasks_per_sec: f64,
    /// Median dispatch-to-finish latency (Call `run_ms`), milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile dispatch-to-finish latency (Call `run_ms`), milliseconds.
    pub p99_ms: Option<f64>,
    /// Largest dispatch-to-finish latency (Call `run_ms`), milliseconds.
    pub max_ms: Option<f64>,
    /// Median receipt-to-finish latency (Call `total_ms`, queueing included), milliseconds.
    pub p50_total_ms: Option<f64>,
    /// 99th percentile receipt-to-finish latency (Call `total_ms`), milliseconds.
    pub p99_total_ms: Option<f64>,
    /// What `p50_ms`/`p99_ms` measure.
    pub latency: &'static str,
    /// Resident set of the service process after the run, KiB.
    pub rss_main_kb: Option<u64>,
    /// Peak resident set of the service process, KiB.
    pub rss_main_peak_kb: Option<u64>,
    /// Largest resident set among the worker processes, KiB.
    pub rss_worker_kb: Option<u64>,
    /// Calls by outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Logical CPUs of the machine.
    pub nproc: usize,
}

impl Report {
    /// The report as one line of JSON.
    pub fn to_json_line(&self) -> Result<String> {
        Ok(serde_json::to_string(self)?)
    }
}

/// The `p`-quantile (0..=1) of `sorted` by nearest rank; `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Rounds to three decimals (microseconds, for milliseconds).
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A `kB` field (`VmRSS`, `VmHWM`, ...) of `/proc/<pid>/status`; `None` when unreadable.
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
    }

    #[test]
    fn reads_own_rss() {
        let kb = proc_status_kb(std::process::id(), "VmRSS");
        assert!(kb.is_some_and(|k| k > 0), "{kb:?}");
        assert_eq!(proc_status_kb(std::process::id(), "NoSuchField"), None);
    }
}
