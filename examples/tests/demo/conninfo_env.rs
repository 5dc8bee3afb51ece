//! The binaries take their connection settings from the `PG*` environment variables, as psql
//! does: with no `--database-url` and no `DATABASE_URL`, `PGHOST`, `PGPORT`, `PGUSER` and
//! `PGDATABASE` name the fixture's database, and the job lands there.

use dispatcher_testkit::postgres::PgFixture;
use tokio_postgres::config::Host;

use super::{count, demo_once, dispatcherctl};

fn pg_env(fx: &PgFixture) -> Vec<(String, String)> {
    let c = fx.config();
    let host = match &c.get_hosts()[0] {
        Host::Tcp(h) => h.clone(),
        Host::Unix(p) => p.display().to_string(),
    };
    vec![
        ("PGHOST".into(), host),
        (
            "PGPORT".into(),
            c.get_ports().first().copied().unwrap_or(5432).to_string(),
        ),
        (
            "PGUSER".into(),
            c.get_user().unwrap_or("postgres").to_owned(),
        ),
        ("PGDATABASE".into(), fx.database().to_owned()),
    ]
}

#[tokio::test]
async fn enqueue_and_dispatcherctl_connect_with_the_environment_alone() {
    let fx = PgFixture::new().await.unwrap();
    let env = pg_env(&fx);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (code, stdout, stderr) = demo_once(
        &["enqueue", "--queue", "env_only", "demo.echo", r#"["hi"]"#],
        &env_refs,
    )
    .await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.starts_with("enqueued job "), "{stdout}");
    // The job is in the database PGDATABASE named.
    let client = fx.client().await.unwrap();
    let n = count(
        &client,
        "SELECT count(*) FROM dispatcher.jobs WHERE queue = 'env_only'",
    )
    .await;
    assert_eq!(n, 1);

    // dispatcherctl: no --database-url, no DATABASE_URL.
    let out = tokio::process::Command::new(dispatcherctl())
        .args(["jobs", "--json"])
        .env_remove("DATABASE_URL")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("env_only"), "{stdout}");

    // Nothing at all: the demo says how to name a database.
    let mut bare = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatcher-demo"));
    bare.args(["enqueue", "demo.echo"])
        .env_remove("DATABASE_URL");
    for v in ["PGHOST", "PGDATABASE", "PGUSER", "PGPORT"] {
        bare.env_remove(v);
    }
    let out = bare.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("PGHOST"), "{stderr}");
}
