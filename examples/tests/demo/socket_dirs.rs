//! The quickstart leaves no socket directory behind: Ctrl-C (SIGINT) stops it through the normal
//! shutdown, and a directory left by SIGKILL is removed by the next run.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

fn pool_dirs(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(dispatcher::process_pool::SOCKET_DIR_PREFIX))
        .collect()
}

/// The in-memory quickstart with `tmp` as its temporary directory, once it printed its first
/// line (the service is up); returns the child and its stdout lines so far.
async fn quickstart(
    tmp: &Path,
) -> (
    Child,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dispatcher-demo"))
        .env_remove("DATABASE_URL")
        .env("TMPDIR", tmp)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap_or_default();
    assert!(first.contains("quickstart: a service"), "{first}");
    (child, lines)
}

#[tokio::test]
async fn sigint_and_sigkill_leave_no_socket_directory_behind() {
    let tmp = std::env::temp_dir().join(format!(
        "demo-tmp-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir(&tmp).unwrap();

    // SIGINT during the showcase (demo.slow alone takes a second): a clean stop.
    let (mut child, mut lines) = quickstart(&tmp).await;
    assert_eq!(pool_dirs(&tmp).len(), 1);
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGINT).unwrap();
    let mut rest = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push(line);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}: {rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("stopping (SIGINT)")),
        "the signal did not stop the showcase: {rest:?}"
    );
    assert_eq!(pool_dirs(&tmp), Vec::<String>::new());

    // SIGKILL leaves the directory; the next run removes it (and its own at the end).
    let (mut child, _lines) = quickstart(&tmp).await;
    let left = pool_dirs(&tmp);
    assert_eq!(left.len(), 1);
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    // Its workers die with it (PR_SET_PDEATHSIG); the directory stays.
    assert_eq!(pool_dirs(&tmp), left);
    let (mut child, _lines) = quickstart(&tmp).await;
    let now = pool_dirs(&tmp);
    assert!(!now.contains(&left[0]), "{now:?}");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the quickstart did not end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(pool_dirs(&tmp), Vec::<String>::new());
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// The quickstart's printed output and its logs, sent to a pipe, carry no ANSI colour.
#[tokio::test]
async fn piped_quickstart_output_has_no_colour() {
    let (code, stdout, stderr) =
        super::demo_once(&[], &[("RUST_LOG", "info"), ("NO_COLOR", "")]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("Every message became a Call."), "{stdout}");
    assert!(stderr.contains("INFO"), "no log lines to check: {stderr}");
    assert!(
        !stdout.contains("\x1b[") && !stderr.contains("\x1b["),
        "{stdout:?}\n{stderr:?}"
    );
}
