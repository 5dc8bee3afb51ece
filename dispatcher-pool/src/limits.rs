//! Per-worker limits: a busy worker's resident memory and the size of its process group, read
//! from `/proc` every `limit_check_interval` by the worker's supervisor.
//!
//! Limits are watched rather than set with `setrlimit`: `RLIMIT_AS` counts virtual memory
//! (thread stacks, allocator arenas) and would kill healthy workers, and `RLIMIT_NPROC` is per
//! user and ignored for root. Every worker runs in its own process group, so over a limit the
//! whole group is killed, and whatever a task started dies with its worker.

use crate::pool::ProcessPoolConfig;

/// True when `config` sets a limit to watch.
pub(crate) fn any(config: &ProcessPoolConfig) -> bool {
    config.max_worker_rss.is_some() || config.max_worker_processes.is_some()
}

/// Why worker `id` (process `pid`) must be ended now, if it broke a limit.
pub(crate) fn over_limits(config: &ProcessPoolConfig, id: u32, pid: u32) -> Option<String> {
    if let Some(limit) = config.max_worker_rss {
        if let Some(rss) = rss_bytes(pid) {
            if rss > limit {
                return Some(format!(
                    "worker {id} (pid {pid}) exceeded its memory limit: RSS {:.1} MB > max_worker_rss {:.1} MB",
                    rss as f64 / 1_048_576.0,
                    limit as f64 / 1_048_576.0
                ));
            }
        }
    }
    if let Some(limit) = config.max_worker_processes {
        let n = group_size(pid);
        if n > limit {
            return Some(format!(
                "worker {id} (pid {pid}) has {n} processes, more than max_worker_processes {limit}; its process group was killed"
            ));
        }
    }
    None
}

/// Resident memory of `pid` in bytes, from `/proc/<pid>/status` (`VmRSS`).
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Live (not zombie) processes in process group `pgid`, from `/proc/*/stat`.
fn group_size(pgid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // Fields after the command name (which may hold spaces) start after the last ')'.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let mut f = rest.split_whitespace();
            let state = f.next();
            let _ppid = f.next();
            let pgrp = f.next().and_then(|p| p.parse::<u32>().ok());
            state != Some("Z") && pgrp == Some(pgid)
        })
        .count()
}
