//! The cookbook binaries write ANSI colour only to a terminal: piped output is plain text, a
//! terminal (a pseudo-terminal through `script`) gets colour unless `NO_COLOR` is set.

use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Command;

use crate::support::database;

const ESC: &str = "\x1b[";

/// Runs `cmd` until its combined output contains `until` (at most 30 s), then stops it with
/// SIGTERM and returns everything it wrote.
async fn run_until(mut cmd: Command, until: &str) -> String {
    let path = std::env::temp_dir().join(format!(
        "cookbook-colour-{}.out",
        uuid::Uuid::new_v4().simple()
    ));
    let out = std::fs::File::create(&path).unwrap();
    let err = out.try_clone().unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains(until) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {until:?} within 30 s; output so far:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    text
}

fn periodic(url: &str, node: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cookbook-periodic"));
    cmd.args(["--database-url", url, "--node-id", node])
        .args(["--interval-ms", "200", "--check-ms", "50", "--workers", "1"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_output_of_the_cookbook_binaries_has_no_colour() {
    let fx = database().await;
    let url = fx.url();
    let text = run_until(periodic(&url, "plain-p"), "won this interval's run").await;
    assert!(text.contains(" INFO "), "{text}");
    assert!(!text.contains(ESC), "colour in piped output:\n{text:?}");

    let mut submit = Command::new(env!("CARGO_BIN_EXE_cookbook-exactly-once"));
    submit
        .args(["--database-url", &url, "--submit", "2", "--work-ms", "10"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR");
    let out = submit.output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let all = [out.stdout, out.stderr].concat();
    let all = String::from_utf8_lossy(&all);
    assert!(all.contains("submitted 2 jobs"), "{all}");
    assert!(!all.contains(ESC), "{all:?}");

    let mut node = Command::new(env!("CARGO_BIN_EXE_cookbook-exactly-once"));
    node.args([
        "--database-url",
        &url,
        "--node-id",
        "plain-e",
        "--workers",
        "1",
    ])
    .env("RUST_LOG", "info")
    .env_remove("NO_COLOR");
    let text = run_until(node, "job finished").await;
    assert!(!text.contains(ESC), "colour in piped output:\n{text:?}");
}

/// The same binary on a pseudo-terminal (`script` from util-linux): coloured, unless `NO_COLOR`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_gets_colour_unless_no_color_is_set() {
    let fx = database().await;
    let url = fx.url();
    let on_terminal = |no_color: Option<&str>| {
        let inner = periodic(&url, "tty");
        let std = inner.as_std();
        let mut line = String::from("exec");
        for part in std::iter::once(std.get_program()).chain(std.get_args()) {
            line.push_str(&format!(" '{}'", part.to_string_lossy()));
        }
        let mut cmd = Command::new("script");
        cmd.args(["-q", "-e", "-c", &line, "/dev/null"])
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        cmd
    };
    let coloured = run_until(on_terminal(None), "won this interval's run").await;
    assert!(
        coloured.contains(ESC),
        "no colour on a terminal:\n{coloured:?}"
    );
    let plain = run_until(on_terminal(Some("1")), "won this interval's run").await;
    assert!(!plain.contains(ESC), "colour despite NO_COLOR:\n{plain:?}");
}
