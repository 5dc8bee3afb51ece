//! Start-up against a server that accepts TCP connections and never answers: the demo (its
//! quickstart and `serve`) exits non-zero within 15 s, naming the host and port and that it
//! timed out, the connection string's password hidden.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

const LIMIT: Duration = Duration::from_secs(15);

/// A port that accepts connections and never says a word (kept open for the test's process).
fn silent_port() -> u16 {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming() {
            held.push(s);
        }
    });
    port
}

/// Runs the demo with `args` and `DATABASE_URL` pointing at a silent port; its exit code and
/// stderr, or a failure when it is still running after [`LIMIT`].
async fn demo_against_silent_port(args: &[&str]) -> (u16, i32, String) {
    let port = silent_port();
    let url = format!("postgres://postgres:TOPSECRET@127.0.0.1:{port}/x");
    let start = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_dispatcher-demo"))
        .args(args)
        .env("DATABASE_URL", &url)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("dispatcher-demo {args:?} still running after {LIMIT:?}"))
        .unwrap();
    assert!(start.elapsed() < LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (port, out.status.code().unwrap_or(-1), stderr)
}

fn assert_clear_message(port: u16, code: i32, stderr: &str) {
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
    assert!(stderr.contains("connect_timeout"), "{stderr}");
    assert!(!stderr.contains("TOPSECRET"), "{stderr}");
}

#[tokio::test]
async fn the_quickstart_gives_up_on_a_silent_port() {
    let (port, code, stderr) = demo_against_silent_port(&[]).await;
    assert_clear_message(port, code, &stderr);
    assert!(stderr.contains("postgres://postgres:***@"), "{stderr}");
}

#[tokio::test]
async fn serve_gives_up_on_a_silent_port() {
    let (port, code, stderr) = demo_against_silent_port(&["serve"]).await;
    assert_clear_message(port, code, &stderr);
}
