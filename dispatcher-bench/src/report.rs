//! The JSON report and the measurements that go into it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Result;

/// The figures of one run: the last line on stdout. Fields without meaning for a scenario are
/// left out.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Tasks run (for `control`: requests made).
    pub tasks: u64,
    /// Worker processes.
    pub workers: u64,
    /// Concurrent publishers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publishers: Option<u64>,
    /// Messages per publish batch, where the scenario batches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<u64>,
    /// Seconds from the first submission until the last Call finished.
    pub seconds: f64,
    /// `tasks / seconds`.
    pub tasks_per_sec: f64,
    /// Seconds the publishers took to send everything (scenarios that publish through a broker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_seconds: Option<f64>,
    /// Raw `SELECT pg_notify(...)` transactions per second from `publishers` clients, measured
    /// in the same run (`pg`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_notify_per_sec: Option<f64>,
    /// How the raw rate was measured (`pgbench ...` or `tokio-postgres loop ...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_notify_tool: Option<String>,
    /// `tasks_per_sec / raw_notify_per_sec`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_raw: Option<f64>,
    /// Median latency, milliseconds (what it measures: see `latency`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// Largest latency, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
    /// Median of a second latency figure (see `latency`), milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_total_ms: Option<f64>,
    /// 99th percentile of the second latency figure, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_total_ms: Option<f64>,
    /// What `p50_ms`/`p99_ms` (and `*_total_ms`) measure.
    pub latency: &'static str,
    /// Resident set of the service process after the run, KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_main_kb: Option<u64>,
    /// The anonymous part of `rss_main_kb` (heap, stacks: what the service allocated), KiB. The
    /// rest is file pages of the program and its libraries, which depend on the page cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_main_anon_kb: Option<u64>,
    /// Resident set of the service process 2.5 s after the run (`pg`), KiB: once the server has
    /// seen a quiet second and handed the burst's free memory back (`release_memory_after`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_main_settled_kb: Option<u64>,
    /// Resident set of the service process when the history first became full, KiB (compare
    /// with `rss_main_kb`: running more Calls than the history holds must not grow it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_main_history_full_kb: Option<u64>,
    /// Resident set of the service process before the run, KiB (`soak`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_main_start_kb: Option<u64>,
    /// Messages the service received (`soak`: must equal the Calls finished).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<u64>,
    /// Peak resident set of the service process, KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_main_peak_kb: Option<u64>,
    /// Largest resident set among the worker processes, KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_worker_kb: Option<u64>,
    /// CPU time of the service process per task during the run, microseconds (`pg`: from
    /// `/proc/<pid>/stat`, 10 ms ticks; a load-independent view of its cost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_main_us_per_task: Option<f64>,
    /// CPU time of all worker processes per task during the run, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_workers_us_per_task: Option<f64>,
    /// CPU time of the service's LISTEN backend (a PostgreSQL process) per task, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_pg_listener_us_per_task: Option<f64>,
    /// The largest anonymous part of a worker's resident set, KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_worker_anon_kb: Option<u64>,
    /// The service's history size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_size: Option<usize>,
    /// Calls by outcome.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outcomes: BTreeMap<String, u64>,
    /// Median of the enqueue round trips of the latency phase, milliseconds (`queue`: the part
    /// of the latency spent before the job is committed and its wake-up sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_enqueue_ms: Option<f64>,
    /// 99th percentile of those enqueue round trips, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_enqueue_ms: Option<f64>,
    /// What the same-run floor is (`pool`, `pg`, `latency`, `control`; see [`crate::floor`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor_kind: Option<String>,
    /// The throughput floor measured in the same run, median over the rounds, per second
    /// (`pool`, `pg --batch`: the bare process pool; `pg`: raw `pg_notify` transactions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor_jobs_per_sec: Option<f64>,
    /// CPU time of the bare process pool's parent per job, microseconds, median over the
    /// rounds (compare with `cpu_main_us_per_task`, the service's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor_cpu_main_us_per_task: Option<f64>,
    /// CPU time of the bare pool's workers per job, microseconds (compare with
    /// `cpu_workers_us_per_task`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor_cpu_workers_us_per_task: Option<f64>,
    /// `tasks_per_sec / floor_jobs_per_sec`, the median of the rounds' ratios (each round with
    /// the floor measured just before it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_throughput: Option<f64>,
    /// The latency floor measured in the same run, median, milliseconds (`latency`: raw
    /// LISTEN/NOTIFY publish-to-arrival; `control`: twice that, a command and its reply;
    /// `queue`: a row inserted with a NOTIFY in one statement, synchronous commit, and one
    /// `SELECT 1` round trip on another connection once the notification arrived).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor_p50_ms: Option<f64>,
    /// 99th percentile of that floor, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor_p99_ms: Option<f64>,
    /// One raw NOTIFY arrival, p50, milliseconds (`control`, whose floor is two of them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor_arrival_p50_ms: Option<f64>,
    /// One raw NOTIFY arrival, p99, milliseconds (`control`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor_arrival_p99_ms: Option<f64>,
    /// `p50_ms - floor_p50_ms`, the median of the rounds' differences, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub over_floor_p50_ms: Option<f64>,
    /// `p99_ms - floor_p99_ms`, the median of the rounds' differences, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub over_floor_p99_ms: Option<f64>,
    /// `p50_ms / floor_p50_ms`, the median of the rounds' ratios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_p50: Option<f64>,
    /// `p99_ms / floor_p99_ms`, the median of the rounds' ratios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_p99: Option<f64>,
    /// Runs the figures are medians of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rounds: Option<u64>,
    /// Jobs the latency figures are over (`queue`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_samples: Option<u64>,
    /// Resident set of the service process halfway through the run, KiB (`queue`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_main_mid_kb: Option<u64>,
    /// CPU time of the PostgreSQL backends serving the service (claims, settlements, leases,
    /// wake-ups) per task, microseconds (`queue`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_pg_us_per_task: Option<f64>,
    /// CPU time of the publishers' PostgreSQL backends (enqueueing) per task, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_pg_publish_us_per_task: Option<f64>,
    /// The queue's tables (`jobs` and `claims`) at the start, after the run and after a
    /// `VACUUM` (`queue`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tables: Option<Tables>,
    /// The durable-queue peer's report, medians over its runs (`queue --peer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<serde_json::Value>,
    /// Why the peer did not run, when it was asked for and could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_skipped: Option<String>,
    /// This project's figures over the peer's, from the medians (`queue --peer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_peer: Option<VsPeer>,
    /// The figures of every round (with several rounds), in the order they ran, with the floor
    /// measured before each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<serde_json::Value>,
    /// Figures of one scenario's variant (`control --flood`: the round trips without the flood,
    /// `quiet_p50_ms`, `quiet_p99_ms`, `quiet_max_ms`, and `flood`, the tasks waiting).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Logical CPUs of the machine.
    pub nproc: usize,
}

/// Sizes and tuple counts of the queue's tables, `jobs` and `claims` together.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TableState {
    /// `pg_total_relation_size`: heap, TOAST, free space and visibility maps, indexes; bytes.
    pub total_bytes: i64,
    /// The heaps alone (`pg_relation_size`), bytes.
    pub heap_bytes: i64,
    /// The indexes (`pg_indexes_size`), bytes.
    pub index_bytes: i64,
    /// `pg_stat_user_tables.n_dead_tup`.
    pub dead_tuples: i64,
    /// Autovacuum runs on the two tables so far.
    pub autovacuums: i64,
}

/// [`TableState`] at three moments.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Tables {
    /// After migrating, before the first job.
    pub start: TableState,
    /// Once every job of the throughput phase is settled (the tables empty).
    pub after: TableState,
    /// After the latency phase and a plain `VACUUM` of both tables.
    pub vacuumed: TableState,
}

/// Ratios of this project's figures to the peer's (same invocation, medians).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct VsPeer {
    /// Jobs per second, ours / theirs (higher is better).
    pub jobs_per_sec: Option<f64>,
    /// Publish-to-start latency p50, ours / theirs (lower is better).
    pub p50: Option<f64>,
    /// Publish-to-start latency p99, ours / theirs (lower is better).
    pub p99: Option<f64>,
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

/// CPU time (user + system, all threads, finished ones included) a process has used so far,
/// milliseconds; `None` when unreadable. From `/proc/<pid>/stat`, in clock ticks of 10 ms.
pub fn proc_cpu_ms(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields after it start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 of `rest` (from 1).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 * 10.0)
}

/// Logical CPUs of this machine.
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Sorts `v` and returns its rounded p50, p99 and maximum.
pub fn summary(v: &mut [f64]) -> (Option<f64>, Option<f64>, Option<f64>) {
    v.sort_unstable_by(f64::total_cmp);
    (
        percentile(v, 0.50).map(round3),
        percentile(v, 0.99).map(round3),
        v.last().copied().map(round3),
    )
}

/// The median of `v` (the mean of the middle two for an even count); `None` when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => v.get(n / 2).copied(),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
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
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn reads_own_cpu() {
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {}
        let ms = proc_cpu_ms(std::process::id());
        assert!(ms.is_some_and(|m| m > 0.0), "{ms:?}");
        assert_eq!(proc_cpu_ms(u32::MAX), None);
    }

    #[test]
    fn reads_own_rss() {
        let kb = proc_status_kb(std::process::id(), "VmRSS");
        assert!(kb.is_some_and(|k| k > 0), "{kb:?}");
        assert_eq!(proc_status_kb(std::process::id(), "NoSuchField"), None);
    }
}
