//! [`Claim`]: one word of memory a worker shares with the pool, which decides who owns a job
//! queued behind the worker's running one.
//!
//! While the service's queue is deep, the pool writes a worker its next job before the running
//! one ends (see `ProcessPool::try_dispatch`), so the worker goes straight on to it without
//! waiting to be woken. Such a queued job can still be taken back: when another worker falls
//! idle, or the worker must be ended (timeout, cancel, death) before it got to the job. Taking it
//! back and starting it race, and the word settles the race without a round trip: the pool
//! marks the word `queued` for the job before writing it; the worker, about to start a job sent
//! as queued, swaps `queued` for `started`, and the pool, to take the job back, swaps `queued` for
//! `revoked`. Exactly one swap succeeds. A worker that finds its job revoked (or the word already
//! naming a later job) skips it without a word; a pool that finds it started knows the job before
//! it is over, since a worker starts a job only after it reported the previous one.
//!
//! A word names one job until the worker decided it (started or skipped): the pool counts a
//! queued job as running once the worker reported the job before it, but the worker may not have
//! claimed it yet, and a word overwritten before then would make the worker skip it. So there is
//! one word more than the jobs a worker may have queued, and a job is queued on one that is not
//! `queued`.
//!
//! The words live in a small file in the pool's private socket directory, mapped shared by the
//! pool and the worker. Both only ever touch them with atomic operations.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;

use crate::error::{Error, Result};

/// The job is queued and may still be taken back.
const QUEUED: u64 = 1;
/// The worker started the job.
const STARTED: u64 = 2;
/// The pool took the job back; the worker skips it.
const REVOKED: u64 = 3;

/// How many words a claim file has: one per job a worker may have queued, and one for the job the
/// pool counts as running that the worker may not have claimed yet.
pub(crate) const WORDS: usize = crate::pipeline::QUEUE_DEPTH + 1;

/// Bytes of the claim file (one page; only the first words are used).
const LEN: u64 = 4096;

/// The word a job's key and state make: the key in the high bits, the state in the low two.
fn word(key: u64, state: u64) -> u64 {
    (key << 2) | state
}

/// A worker's shared claim words (either side's mapping of them).
pub(crate) struct Claim {
    map: MmapMut,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field(
                "words",
                &(0..WORDS)
                    .map(|i| self.atomic(i).map(|w| w.load(Ordering::Relaxed)))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Claim {
    /// Creates the claim file at `path` (the pool's side, before the worker starts) and maps it.
    pub(crate) fn create(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|source| Error::Claim {
                path: path.to_owned(),
                source,
            })?;
        file.set_len(LEN).map_err(|source| Error::Claim {
            path: path.to_owned(),
            source,
        })?;
        Claim::map(&file, path)
    }

    /// Maps the claim file the pool created at `path` (the worker's side).
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::Claim {
                path: path.to_owned(),
                source,
            })?;
        Claim::map(&file, path)
    }

    #[allow(unsafe_code)]
    fn map(file: &std::fs::File, path: &Path) -> Result<Self> {
        let len = file
            .metadata()
            .map_err(|source| Error::Claim {
                path: path.to_owned(),
                source,
            })?
            .len();
        if len < LEN {
            return Err(Error::Claim {
                path: path.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the claim file has {len} bytes, expected {LEN}"),
                ),
            });
        }
        // SAFETY: the file lives in the pool's private (0700) directory and is only ever changed
        // through this mapping, by the pool and its worker, with atomic operations on its first
        // word; nobody truncates it while it is mapped (it is removed with the directory, which
        // leaves existing mappings valid).
        let map = unsafe { MmapMut::map_mut(file) }.map_err(|source| Error::Claim {
            path: path.to_owned(),
            source,
        })?;
        Ok(Claim { map })
    }

    /// Word `i`; `None` past [`WORDS`] (a frame from elsewhere naming a word that is not there).
    #[allow(unsafe_code)]
    fn atomic(&self, i: usize) -> Option<&AtomicU64> {
        if i >= WORDS {
            return None;
        }
        let ptr = (self.map.as_ptr() as *mut u64).wrapping_add(i);
        // SAFETY: the mapping is page-aligned and `LEN` (4096) bytes long, so its first `WORDS`
        // (a few) words are valid, aligned u64s for as long as `self` (the mapping) lives; every
        // access to them, in either process, is atomic.
        Some(unsafe { AtomicU64::from_ptr(ptr) })
    }

    /// The pool: a word no undecided job names, to queue the next job on.
    pub(crate) fn free_word(&self) -> Option<u8> {
        (0..WORDS).find_map(|i| {
            let w = self.atomic(i)?;
            (w.load(Ordering::SeqCst) & 3 != QUEUED).then_some(i as u8)
        })
    }

    /// The pool: job `key` is about to be written as a job queued on word `i` (a
    /// [`Claim::free_word`]).
    pub(crate) fn queue(&self, i: u8, key: u64) {
        if let Some(w) = self.atomic(i.into()) {
            w.store(word(key, QUEUED), Ordering::SeqCst);
        }
    }

    /// The pool: takes the job `key` queued on word `i` back; false when the worker started it.
    pub(crate) fn revoke(&self, i: u8, key: u64) -> bool {
        self.atomic(i.into()).is_some_and(|w| {
            w.compare_exchange(
                word(key, QUEUED),
                word(key, REVOKED),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        })
    }

    /// The worker: claims the job `key` queued on word `i` before starting it; false when the
    /// pool took it back (the worker skips it).
    pub(crate) fn start(&self, i: u8, key: u64) -> bool {
        self.atomic(i.into()).is_some_and(|w| {
            w.compare_exchange(
                word(key, QUEUED),
                word(key, STARTED),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_of_start_and_revoke_wins() {
        let dir = std::env::temp_dir().join(format!("claim-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("claim-1");
        let pool = Claim::create(&path).unwrap();
        let worker = Claim::open(&path).unwrap();
        assert_eq!(pool.free_word(), Some(0));
        // Started first: the pool cannot take it back.
        pool.queue(0, 7);
        assert_eq!(
            pool.free_word(),
            Some(1),
            "word 0 names 7 until the worker decides"
        );
        assert!(worker.start(0, 7));
        assert_eq!(pool.free_word(), Some(0));
        assert!(!pool.revoke(0, 7));
        // Revoked first: the worker skips it.
        pool.queue(0, 8);
        assert!(pool.revoke(0, 8));
        assert!(!worker.start(0, 8));
        // A revoked job whose word was reused for a later one is still skipped; the later one
        // runs.
        pool.queue(0, 9);
        assert!(pool.revoke(0, 9));
        pool.queue(0, 10);
        assert!(!worker.start(0, 9));
        assert!(worker.start(0, 10));
        // A job the pool counts as running (its predecessor reported) but the worker has not
        // claimed yet keeps its word; the next jobs go on the others, and all run.
        let mut keys = Vec::new();
        for (i, key) in (11..).take(WORDS).enumerate() {
            let free = pool.free_word().unwrap();
            assert_eq!(usize::from(free), i);
            pool.queue(free, key);
            keys.push((free, key));
        }
        assert_eq!(pool.free_word(), None, "every word names an undecided job");
        for (word, key) in keys {
            assert!(worker.start(word, key));
        }
        // A word that is not there is never claimed.
        let past = WORDS as u8;
        assert!(!worker.start(past, 13));
        assert!(!pool.revoke(past, 13));
        // Many racing rounds across threads: never both, never neither.
        let worker = std::sync::Arc::new(worker);
        for key in 100..2_100u64 {
            let i = pool.free_word().unwrap();
            pool.queue(i, key);
            let w = worker.clone();
            let t = std::thread::spawn(move || w.start(i, key));
            let revoked = pool.revoke(i, key);
            let started = t.join().unwrap();
            assert!(
                revoked != started,
                "key {key}: revoked {revoked}, started {started}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
