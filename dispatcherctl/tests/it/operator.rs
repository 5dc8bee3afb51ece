//! The operator's experience: a single service answers without the timeout being waited, error
//! replies have their own exit code, `--watch` repeats until Ctrl-C, completions and the man
//! page, and `--timeout` bounds connecting to a server that never answers.

use std::process::Stdio;
use std::time::{Duration, Instant};

use dispatcher_testkit::postgres::PgFixture;
use serde_json::json;

use crate::support::{ctl_raw, service, CHANNEL};

#[tokio::test]
async fn one_service_answers_without_waiting_for_the_timeout() {
    let fx = PgFixture::new().await.unwrap();
    let svc = service(&fx, "node-a", None).await;
    let url = fx.url();
    // A bound far below --timeout 30: the wait ends once the replies go quiet.
    let start = Instant::now();
    let run = ctl_raw(&[
        "--database-url",
        &url,
        "--channel",
        CHANNEL,
        "--timeout",
        "30",
        "alive",
    ])
    .await
    .ok();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}: {run:?}");
    assert_eq!(run.stdout, "node node-a: alive\n", "{run:?}");
    // A longer quiet window is waited out, and still ends well before the timeout.
    let start = Instant::now();
    let run = ctl_raw(&[
        "--database-url",
        &url,
        "--channel",
        CHANNEL,
        "--timeout",
        "30",
        "--quiet-window",
        "1.5",
        "alive",
    ])
    .await
    .ok();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "took {took:?}: {run:?}"
    );
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn error_replies_exit_5_and_are_still_printed() {
    let fx = PgFixture::new().await.unwrap();
    let svc = service(&fx, "node-a", None).await;
    let url = fx.url();
    let base = ["--database-url", url.as_str(), "--channel", CHANNEL];
    for (args, needle) in [
        (&["frobnicate"][..], "No control method frobnicate"),
        (
            &["running", "--data", r#"{"colour": "red"}"#],
            "unknown filter field",
        ),
        (&["run", "--data", r#"{"task": "ctl.nope"}"#], "ctl.nope"),
    ] {
        let mut all = base.to_vec();
        all.extend_from_slice(args);
        let run = ctl_raw(&all).await;
        assert_eq!(run.code, 5, "{args:?}: {run:?}");
        assert!(run.stdout.starts_with("node node-a: error: "), "{run:?}");
        assert!(run.stdout.contains(needle), "{run:?}");
        assert!(
            run.stderr.contains("node node-a answered") && run.stderr.contains(needle),
            "{run:?}"
        );
        // --json: the reply as sent, the same exit code.
        let mut all = base.to_vec();
        all.push("--json");
        all.extend_from_slice(args);
        let run = ctl_raw(&all).await;
        assert_eq!(run.code, 5, "{args:?}: {run:?}");
        assert!(
            run.json()[0]["error"].as_str().unwrap().contains(needle),
            "{run:?}"
        );
    }
    svc.shutdown().await.unwrap();
}

#[tokio::test]
async fn watch_repeats_until_ctrl_c() {
    let fx = PgFixture::new().await.unwrap();
    let svc = service(&fx, "node-a", None).await;
    let url = fx.url();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatcherctl"))
        .args([
            "--database-url",
            &url,
            "--channel",
            CHANNEL,
            "--watch",
            "0.2",
            "alive",
        ])
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    tokio::time::sleep(Duration::from_secs(3)).await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("--watch ends on Ctrl-C")
        .unwrap();
    let code = out.status.code();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(code, Some(0), "{stderr}\n{stdout}");
    // Not a terminal: the runs are appended, no screen clearing.
    let runs = stdout.matches("node node-a: alive\n").count();
    assert!(runs >= 2, "ran {runs} times:\n{stdout}");
    assert!(!stdout.contains('\x1b'), "{stdout:?}");
    svc.shutdown().await.unwrap();

    // Acting commands are refused, before connecting.
    let run = ctl_raw(&[
        "--database-url",
        "host=127.0.0.1 port=1",
        "--watch",
        "1",
        "cancel",
        "--data",
        &json!({"task": "x"}).to_string(),
    ])
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("--watch repeats read-only commands only"),
        "{run:?}"
    );
    assert!(run.stderr.contains("\"cancel\" acts"), "{run:?}");
}

#[tokio::test]
async fn completions_and_man_page() {
    // bash and zsh complete the command names too (clap's fish script completes flags only).
    for (shell, commands) in [("bash", true), ("zsh", true), ("fish", false)] {
        let run = ctl_raw(&["completions", shell]).await.ok();
        assert!(run.stdout.contains("dispatcherctl"), "{shell}: {run:?}");
        for flag in ["watch", "quiet-window", "expected-replies"] {
            assert!(run.stdout.contains(flag), "{shell}: {flag} missing");
        }
        if commands {
            for name in ["alive", "history", "cancel", "migrate", "completions"] {
                assert!(run.stdout.contains(name), "{shell}: {name} missing");
            }
        }
    }
    let run = ctl_raw(&["completions", "tcsh"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("bash, zsh, fish"), "{run:?}");
    let run = ctl_raw(&["man"]).await.ok();
    assert!(
        run.stdout.starts_with(".ie"),
        "roff: {}",
        &run.stdout[..80.min(run.stdout.len())]
    );
    for name in [
        "dispatcherctl",
        "alive",
        "history",
        "retry",
        "completions",
        "Exit codes",
    ] {
        assert!(run.stdout.contains(name), "{name} missing in the man page");
    }
}

#[tokio::test]
async fn timeout_bounds_connecting_to_a_silent_server() {
    // Accepts TCP connections and never says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming().take(4) {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(5));
    });
    let url = format!("postgres://postgres:hunter2@127.0.0.1:{port}/postgres");
    let start = Instant::now();
    let run = ctl_raw(&["--database-url", &url, "--timeout", "1", "alive"]).await;
    let took = start.elapsed();
    assert_eq!(run.code, 3, "{run:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}: {run:?}");
    assert!(
        run.stderr.contains(&format!(
            "timed out connecting to postgres://postgres:***@127.0.0.1:{port}/postgres"
        )),
        "{run:?}"
    );
    assert!(run.stderr.contains("--timeout 1s"), "{run:?}");
    assert!(!run.stderr.contains("hunter2"), "{run:?}");
    drop(held);
}
