//! The connection string from `DATABASE_URL` when `--database-url` is not given.

use dispatcher_testkit::postgres::PgFixture;

use crate::support::{service, CHANNEL, RUN_BOUND};

#[tokio::test]
async fn database_url_comes_from_the_environment() {
    let fx = PgFixture::new().await.unwrap();
    let svc = service(&fx, "node-a", None).await;
    let out = tokio::time::timeout(
        RUN_BOUND,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatcherctl"))
            .args([
                "--channel",
                CHANNEL,
                "--expected-replies",
                "1",
                "--timeout",
                "15",
                "alive",
            ])
            .env("DATABASE_URL", fx.url())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "node node-a: alive\n"
    );
    svc.shutdown().await.unwrap();
}
