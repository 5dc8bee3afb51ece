//! The service process's memory: [`limit_malloc_arenas`] (the one process setting that halves a
//! service's memory) and [`release_free_memory`], which the server runs once a burst of Calls is
//! over (`release_memory_after` in the configuration).

use std::time::Duration;

use dispatcher_runtime::FinishedCounter;
use tokio::task::JoinHandle;

/// Limits glibc's malloc to `arenas` arenas (at least 1); call it first thing in `main`, before
/// the runtime starts its threads. Returns whether the limit was applied: false on a C library
/// other than glibc (musl and the others have no per-thread arenas to limit), or if glibc refused.
///
/// glibc gives threads their own arenas (up to 8 per core) and memory freed in one is not reused
/// by another. A service's Calls are made on one runtime thread and freed on another, so after a
/// few floods every arena holds its own idle memory: measured with a full 10,000-Call history
/// and three floods of 100,000 tasks, 19 MB of RSS with glibc's default against 14.4 MB with one
/// arena (`dispatcher-bench pg --batch 500`), at no measurable cost in throughput. The same as
/// setting `MALLOC_ARENA_MAX=1` in the environment, without relying on whoever starts the
/// process.
///
/// ```
/// // First thing in `main`.
/// dispatcher_server::limit_malloc_arenas(1);
/// ```
pub fn limit_malloc_arenas(arenas: usize) -> bool {
    set_arena_max(arenas.clamp(1, i32::MAX as usize) as i32)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max(n: i32) -> bool {
    // SAFETY: `mallopt` only sets a tuning parameter of the allocator; glibc takes its own lock,
    // and M_ARENA_MAX with a positive value is a valid request at any time.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_n: i32) -> bool {
    false
}

/// Hands the memory malloc holds free back to the operating system (glibc's `malloc_trim(0)`,
/// which also releases the whole free pages in the middle of the heap, not only its top). Returns
/// whether there was a way to: false on a C library other than glibc, where this does nothing.
///
/// After a flood a service has freed what the flood's Calls used, but glibc keeps most of it
/// (the pages of a free chunk below a live one are never returned by `free`): measured with
/// `dispatcher-bench pg`, 3 to 5 MB more RSS than the same live data needs. The server calls
/// this on a blocking thread once a burst is over; an application running its own service may
/// call it whenever it knows it is idle. It takes malloc's lock for about a millisecond per
/// 10 MB of heap.
pub fn release_free_memory() -> bool {
    trim()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() -> bool {
    // SAFETY: `malloc_trim` only returns free memory to the kernel; glibc takes its own locks
    // and keeps every live allocation where it is.
    unsafe { libc::malloc_trim(0) };
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

/// When a burst is over: after at least `calls` Calls finished since the last release, the
/// first tick in which none finished.
#[derive(Debug)]
struct BurstWatch {
    calls: u64,
    released_at: u64,
    last: u64,
}

impl BurstWatch {
    fn new(calls: u64, now: u64) -> Self {
        BurstWatch {
            calls,
            released_at: now,
            last: now,
        }
    }

    /// The finished count at a tick; true when memory should be released now.
    fn tick(&mut self, finished: u64) -> bool {
        let quiet = finished == self.last;
        self.last = finished;
        if quiet && finished.saturating_sub(self.released_at) >= self.calls {
            self.released_at = finished;
            return true;
        }
        false
    }
}

/// How often the server looks whether a burst is over.
const TICK: Duration = Duration::from_secs(1);

/// Releases free memory ([`release_free_memory`]) each time a burst of at least `calls` Calls is
/// over (a whole tick of [`TICK`] without one finishing). `calls == 0`: never (no task).
pub(crate) fn release_after_bursts(counter: FinishedCounter, calls: u64) -> Option<JoinHandle<()>> {
    if calls == 0 {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut watch = BurstWatch::new(calls, counter.get());
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if watch.tick(counter.get()) {
                let started = std::time::Instant::now();
                // Trimming walks the heap under malloc's lock: not on a runtime thread.
                match tokio::task::spawn_blocking(release_free_memory).await {
                    Ok(done) => tracing::debug!(
                        done,
                        finished = watch.released_at,
                        ms = started.elapsed().as_secs_f64() * 1000.0,
                        "a burst of Calls is over: free memory handed back to the system"
                    ),
                    Err(e) => tracing::warn!(error = %e, "releasing free memory failed"),
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::BurstWatch;

    #[test]
    fn a_burst_is_over_at_the_first_quiet_tick_after_enough_calls() {
        let mut w = BurstWatch::new(100, 5);
        assert!(!w.tick(5), "quiet, but no Calls yet");
        assert!(!w.tick(60));
        assert!(!w.tick(105), "enough Calls, still finishing");
        assert!(w.tick(105), "the first quiet tick");
        assert!(!w.tick(105), "released once per burst");
        assert!(!w.tick(150));
        assert!(!w.tick(150), "quiet, but only 45 Calls since the release");
        assert!(!w.tick(205));
        assert!(w.tick(205));
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn releasing_hands_freed_pages_back() {
        fn rss_anon_kb() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        }
        // 40 MB in blocks below glibc's mmap threshold, then everything but the last block freed:
        // the free space is below a live chunk, so `free` cannot give it back by trimming the top.
        let mut blocks: Vec<Vec<u8>> = (0..40_000).map(|i| vec![i as u8; 1000]).collect();
        let last = blocks.pop();
        drop(blocks);
        let before = rss_anon_kb();
        assert!(super::release_free_memory());
        let after = rss_anon_kb();
        drop(last);
        // Other tests of this binary run at the same time, so only most of it must come back.
        assert!(
            before >= after + 20_000,
            "RssAnon {before} kB before the release, {after} kB after: expected 20 MB or more back"
        );
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_limit() {
        assert!(super::limit_malloc_arenas(2));
        assert!(super::limit_malloc_arenas(0), "0 is taken as 1");
    }
}
