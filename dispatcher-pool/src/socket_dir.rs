//! The pool's private socket directory: made at start, removed on every way out, and stale
//! directories of killed services removed at the next start.
//!
//! The directory is `<parent>/dispatcher-pool-<pid>-<random>` (mode 0700), where `<pid>` is the
//! owning service's process id; a file `owner` in it holds that pid and the process's start time
//! (field 22 of `/proc/<pid>/stat`), so a reused pid is not taken for the owner. It is removed
//! when the pool shuts down, when a start fails, and when the pool (or the last task holding its
//! state) is dropped. A service killed with SIGKILL cannot remove it: the next pool started with
//! the same parent removes every such directory whose owner is gone (see
//! [`remove_stale_socket_dirs`]).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// The start of every socket directory's name.
pub const SOCKET_DIR_PREFIX: &str = "dispatcher-pool-";

/// The file naming a directory's owner.
const OWNER_FILE: &str = "owner";

/// A socket directory owned by this process, removed when dropped.
#[derive(Debug)]
pub(crate) struct SocketDir {
    path: PathBuf,
    removed: AtomicBool,
}

impl SocketDir {
    /// Makes a new private (0700) directory under `parent`, with its `owner` file.
    pub(crate) fn create(parent: &Path) -> Result<Self> {
        let pid = std::process::id();
        // 16 random hex digits: short, as a socket's path must stay under 108 bytes.
        let random = uuid::Uuid::new_v4().simple().to_string();
        let path = parent.join(format!("{SOCKET_DIR_PREFIX}{pid}-{}", &random[..16]));
        let err = |source| Error::SocketDir {
            path: path.clone(),
            source,
        };
        std::fs::create_dir(&path).map_err(err)?;
        // From here on, dropping `dir` removes what was made.
        let dir = SocketDir {
            path: path.clone(),
            removed: AtomicBool::new(false),
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        let owner = format!("{pid} {}\n", start_time(pid).unwrap_or_default());
        std::fs::write(path.join(OWNER_FILE), owner).map_err(err)?;
        Ok(dir)
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory (once; later calls do nothing).
    pub(crate) fn remove(&self) {
        if !self.removed.swap(true, Ordering::SeqCst) {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %self.path.display(), error = %e, "could not remove the pool's socket directory");
                }
            }
        }
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Removes the socket directories under `parent` whose owning process is gone (a service killed
/// with SIGKILL leaves its directory behind); returns how many were removed.
///
/// Only entries named `dispatcher-pool-<pid>-...` that are real directories (a symlink is never
/// followed nor removed) owned by this process's user are considered. A directory is removed
/// when no process `<pid>` exists, or when its `owner` file records a start time other than that
/// process's (the pid was reused). A directory whose owner lives, or whose owner cannot be told
/// (no pid in its name), is kept. Pools call this at start with their parent directory.
pub fn remove_stale_socket_dirs(parent: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let me = nix::unistd::geteuid().as_raw();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner_pid) else {
            continue;
        };
        let path = entry.path();
        // `symlink_metadata` does not follow a symlink: a link is not a directory here.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.file_type().is_dir() || meta.uid() != me || owner_alive(&path, pid) {
            continue;
        }
        // `remove_dir_all` does not follow symlinks inside the directory either.
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                removed += 1;
                tracing::info!(dir = %path.display(), pid, "removed the socket directory of a pool whose process is gone");
            }
            Err(e) => {
                tracing::debug!(dir = %path.display(), error = %e, "could not remove a stale socket directory");
            }
        }
    }
    removed
}

/// The owner's pid in a socket directory's name (`dispatcher-pool-<pid>-<random>`).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(SOCKET_DIR_PREFIX)?;
    let (pid, random) = rest.split_once('-')?;
    if random.is_empty() {
        return None;
    }
    pid.parse().ok().filter(|p| *p > 0)
}

/// True when the process that made `dir` still runs.
fn owner_alive(dir: &Path, pid: u32) -> bool {
    if pid == std::process::id() {
        // This process's own pools: never stale while it runs.
        return true;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return true;
    };
    // Anything but "no such process" (EPERM: another user's) means it exists.
    if let Err(nix::errno::Errno::ESRCH) =
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None)
    {
        return false;
    }
    // The pid exists: it is the owner unless the owner file says it started at another time.
    let recorded = std::fs::read_to_string(dir.join(OWNER_FILE))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_owned))
        .filter(|t| !t.is_empty());
    match (recorded, start_time(pid)) {
        (Some(recorded), Some(now)) => recorded == now,
        _ => true,
    }
}

/// A process's start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after its end.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_for_their_pid() {
        assert_eq!(owner_pid("dispatcher-pool-123-abcdef"), Some(123));
        assert_eq!(owner_pid("dispatcher-pool-abcdef"), None);
        assert_eq!(owner_pid("dispatcher-pool-0-abc"), None);
        assert_eq!(owner_pid("dispatcher-pool-12-"), None);
        assert_eq!(owner_pid("other-123-abc"), None);
    }

    #[test]
    fn this_process_has_a_start_time() {
        let t = start_time(std::process::id()).unwrap_or_default();
        assert!(
            !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()),
            "{t:?}"
        );
    }
}
