//! Exit codes: 1 when nobody (or too few) replied, 2 for usage errors found before connecting, 3
//! when the server cannot be reached.

use std::time::{Duration, Instant};

use dispatcher_testkit::postgres::PgFixture;

use crate::support::ctl_raw;

#[tokio::test]
async fn nobody_listening_is_exit_1() {
    let fx = PgFixture::new().await.unwrap();
    let url = fx.url();
    let run = ctl_raw(&[
        "--database-url",
        &url,
        "--channel",
        "ctl_nobody",
        "--timeout",
        "1",
        "alive",
    ])
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr
            .contains("no service replied on channel \"ctl_nobody\" within 1s"),
        "{run:?}"
    );
    let run = ctl_raw(&[
        "--database-url",
        &url,
        "--channel",
        "ctl_nobody",
        "--timeout",
        "1",
        "--json",
        "alive",
    ])
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.json().is_empty(), "{run:?}");
}

#[tokio::test]
async fn bad_data_is_exit_2() {
    // Usage errors are found before connecting: no server needed.
    let url = "host=127.0.0.1 port=1 user=postgres connect_timeout=2";
    let run = ctl_raw(&["--database-url", url, "running", "--data", "{bad"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains("not valid JSON") && run.stderr.contains("{bad"),
        "{run:?}"
    );
    let run = ctl_raw(&["--database-url", url, "running", "--data", "[1]"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("JSON object") && run.stderr.contains("[1]"),
        "{run:?}"
    );
    let run = ctl_raw(&["--database-url", url, "--timeout", "soon", "alive"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    let run = ctl_raw(&["--database-url", url, "cancel"]).await;
    assert_eq!(run.code, 2, "cancel without a filter: {run:?}");
    assert!(run.stderr.contains("--data '{}'"), "{run:?}");
    let run = ctl_raw(&["alive"]).await;
    assert_eq!(run.code, 2, "no URL at all: {run:?}");
    assert!(run.stderr.contains("--database-url"), "{run:?}");
    // No URL, but PG* variables: the settings come from them, as for psql (here a port where
    // nothing listens: cannot connect).
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatcherctl"))
        .arg("alive")
        .env_remove("DATABASE_URL")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", "1")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "no URL, PG* variables: {stderr}"
    );
    assert!(stderr.contains("could not connect"), "{stderr}");
    let run = ctl_raw(&[
        "--database-url",
        "host=h port=notaport password=hunter2",
        "alive",
    ])
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("port") && !run.stderr.contains("hunter2"),
        "{run:?}"
    );
}

#[tokio::test]
async fn unreachable_server_is_exit_3() {
    let url = "host=127.0.0.1 port=1 user=postgres password=hunter2 connect_timeout=2";
    let start = Instant::now();
    let run = ctl_raw(&["--database-url", url, "--json", "alive"]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.stdout, "", "{run:?}");
    assert!(start.elapsed() < Duration::from_secs(15));
    assert!(
        run.stderr.contains(
            "cannot connect to host=127.0.0.1 port=1 user=postgres password=*** connect_timeout=2"
        ),
        "{run:?}"
    );
    assert!(!run.stderr.contains("hunter2"), "{run:?}");
    assert!(run.stderr.contains("error connecting to server"), "{run:?}");

    let run = ctl_raw(&[
        "--database-url",
        "postgres://postgres:hunter2@127.0.0.1:1/postgres?connect_timeout=2",
        "alive",
    ])
    .await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr
            .contains("postgres://postgres:***@127.0.0.1:1/postgres"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("hunter2"), "{run:?}");
}
