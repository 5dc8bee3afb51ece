//! The pool's private socket directories: removed when the service stops (also on SIGTERM
//! through its normal shutdown) and when a start fails; left behind only by SIGKILL, and then
//! removed by the next pool started in the same parent directory, which keeps live services'
//! directories and never follows symlinks.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use dispatcher_core::TaskRegistry;
use dispatcher_pool::{ProcessPool, SOCKET_DIR_PREFIX};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncBufReadExt;

use crate::support::{config, service, WAIT};

/// The variable naming the parent directory for [`serve_until_signal`].
const ENV_PARENT: &str = "POOL_TEST_SOCKET_PARENT";

/// A fresh parent directory for one test's socket directories.
fn parent(name: &str) -> PathBuf {
    let random = uuid::Uuid::new_v4().simple().to_string();
    let dir = std::env::temp_dir().join(format!("pst-{name}-{}", &random[..8]));
    std::fs::create_dir(&dir).unwrap();
    dir
}

/// The socket directories in `parent`, by name.
fn socket_dirs(parent: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(SOCKET_DIR_PREFIX))
        .collect();
    names.sort();
    names
}

fn of_pid(names: &[String], pid: u32) -> Vec<String> {
    let prefix = format!("{SOCKET_DIR_PREFIX}{pid}-");
    names
        .iter()
        .filter(|n| n.starts_with(&prefix))
        .cloned()
        .collect()
}

/// The child process's side: a service with a process pool whose socket directory is under
/// `$POOL_TEST_SOCKET_PARENT`; prints `ready`, then stops gracefully on SIGTERM or SIGINT.
pub fn serve_until_signal(registry: TaskRegistry) -> ExitCode {
    let Ok(rt) = tokio::runtime::Runtime::new() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).unwrap();
        let mut int = signal(SignalKind::interrupt()).unwrap();
        let mut c = config(1, 1);
        c.socket_parent = std::env::var_os(ENV_PARENT).map(PathBuf::from);
        let svc = dispatcher_runtime::Service::builder()
            .registry(registry)
            .pool(ProcessPool::with_config(c))
            .start()
            .await
            .unwrap();
        println!("ready");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        svc.shutdown().await.unwrap();
    });
    ExitCode::SUCCESS
}

/// A child service using `parent`, started and ready.
async fn child(parent: &Path) -> tokio::process::Child {
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .env("POOL_TEST_SOCKET_SERVE", "1")
        .env(ENV_PARENT, parent)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(out).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line()).await;
    assert_eq!(
        line.ok().and_then(|l| l.ok()).flatten().as_deref(),
        Some("ready")
    );
    child
}

fn pid_of(child: &tokio::process::Child) -> u32 {
    child.id().unwrap()
}

pub async fn sigkill_leaves_a_directory_the_next_start_removes() {
    let parent = parent("killed");
    let mut killed = child(&parent).await;
    let killed_pid = pid_of(&killed);
    assert_eq!(of_pid(&socket_dirs(&parent), killed_pid).len(), 1);
    killed.start_kill().unwrap(); // SIGKILL: no shutdown runs
    killed.wait().await.unwrap();
    let left = of_pid(&socket_dirs(&parent), killed_pid);
    assert_eq!(left.len(), 1, "SIGKILL leaves the directory behind");
    // A symlink named like a stale directory, pointing at a directory with a file: neither the
    // link nor what it points to is touched.
    let target = parent.join("not-a-socket-dir");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), "x").unwrap();
    let link = parent.join(format!("{SOCKET_DIR_PREFIX}{killed_pid}-link"));
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let mut c = config(1, 1);
    c.socket_parent = Some(parent.clone());
    let svc = service(ProcessPool::with_config(c)).await;
    let now = socket_dirs(&parent);
    assert!(
        !now.contains(&left[0]),
        "stale {} still there: {now:?}",
        left[0]
    );
    assert_eq!(
        of_pid(&now, std::process::id()).len(),
        1,
        "the new pool has its own: {now:?}"
    );
    assert!(
        std::fs::symlink_metadata(&link).is_ok(),
        "the symlink was removed"
    );
    assert!(target.join("keep").exists(), "the symlink was followed");
    svc.shutdown().await;
    assert!(
        of_pid(&socket_dirs(&parent), std::process::id()).is_empty(),
        "a normal stop removes its own"
    );
    std::fs::remove_dir_all(&parent).unwrap();
}

pub async fn a_live_services_directory_is_kept_and_sigterm_removes_it() {
    let parent = parent("live");
    let mut live = child(&parent).await;
    let live_pid = pid_of(&live);
    let live_dirs = of_pid(&socket_dirs(&parent), live_pid);
    assert_eq!(live_dirs.len(), 1);
    // A pool starting beside a live service keeps the live one's directory.
    let mut c = config(1, 1);
    c.socket_parent = Some(parent.clone());
    let svc = service(ProcessPool::with_config(c)).await;
    assert_eq!(of_pid(&socket_dirs(&parent), live_pid), live_dirs);
    svc.shutdown().await;
    assert_eq!(of_pid(&socket_dirs(&parent), live_pid), live_dirs);
    assert!(of_pid(&socket_dirs(&parent), std::process::id()).is_empty());
    // SIGTERM: the child's normal shutdown removes its directory.
    kill(Pid::from_raw(live_pid as i32), Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(WAIT, live.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(socket_dirs(&parent), Vec::<String>::new());
    std::fs::remove_dir_all(&parent).unwrap();
}

pub async fn sigint_stops_through_the_normal_shutdown() {
    let parent = parent("sigint");
    let mut live = child(&parent).await;
    let pid = pid_of(&live);
    assert_eq!(of_pid(&socket_dirs(&parent), pid).len(), 1);
    kill(Pid::from_raw(pid as i32), Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(WAIT, live.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(socket_dirs(&parent), Vec::<String>::new());
    std::fs::remove_dir_all(&parent).unwrap();
}

pub async fn a_failed_start_and_a_dropped_pool_leave_nothing() {
    use dispatcher_core::pool::Pool;
    let parent = parent("failed");
    // A worker program that never connects: the start fails after the start timeout.
    let mut c = config(1, 1);
    c.socket_parent = Some(parent.clone());
    c.program = Some("/bin/true".into());
    c.start_timeout = Duration::from_millis(500);
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    let mut pool = ProcessPool::with_config(c);
    assert!(pool.start(tx).await.is_err());
    drop(pool);
    assert_eq!(socket_dirs(&parent), Vec::<String>::new());
    // A started pool dropped without shutdown removes its directory too.
    let mut c = config(1, 1);
    c.socket_parent = Some(parent.clone());
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    let mut pool = ProcessPool::with_config(c);
    pool.start(tx).await.unwrap();
    assert_eq!(of_pid(&socket_dirs(&parent), std::process::id()).len(), 1);
    drop(pool);
    assert_eq!(socket_dirs(&parent), Vec::<String>::new());
    // A parent that does not exist: the error names it.
    let mut c = config(1, 1);
    let missing = parent.join("missing");
    c.socket_parent = Some(missing.clone());
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    let e = ProcessPool::with_config(c)
        .start(tx)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&missing.display().to_string()), "{e}");
    std::fs::remove_dir_all(&parent).unwrap();
}
