//! Connection settings from the environment alone reach the right server and database.

use dispatcher_broker_pg::conninfo::{config_with_env, PgEnv};
use dispatcher_testkit::postgres::PgFixture;
use tokio_postgres::config::Host;
use tokio_postgres::NoTls;

/// The fixture's server as `PG*` variables (host, port, user, database, application name).
pub(crate) fn fixture_env(fx: &PgFixture) -> Vec<(String, String)> {
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
        ("PGAPPNAME".into(), "conninfo-env-test".into()),
        ("PGCONNECT_TIMEOUT".into(), "9".into()),
    ]
}

#[tokio::test]
async fn an_empty_string_connects_with_the_environment_alone() {
    let fx = PgFixture::new().await.unwrap();
    let env = PgEnv::from_map(fixture_env(&fx));
    let config = config_with_env("", &env).unwrap();
    let (client, conn) = config.connect(NoTls).await.unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT current_database()::text, current_setting('application_name')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), fx.database());
    assert_eq!(row.get::<_, String>(1), "conninfo-env-test");

    // The string's database wins over PGDATABASE.
    let config = config_with_env("dbname=postgres", &env).unwrap();
    let (client, conn) = config.connect(NoTls).await.unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT current_database()::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "postgres");
}
