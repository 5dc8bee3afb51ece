//! Integration tests against a real PostgreSQL server (see `dispatcher_testkit::postgres` for
//! where the server comes from). Each test works in a fresh database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod buffers;
mod conformance;
mod conninfo;
mod deadlines;
mod harness;
mod queue;
mod recovery;
mod request;
mod service;
#[cfg(feature = "tls")]
mod tls;

use std::sync::Arc;
use std::time::Duration;

use dispatcher_broker_pg::{PgBroker, PgBrokerConfig};
use dispatcher_testkit::postgres::PgFixture;

pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// A fixture and a broker on it with a fast self-check.
pub(crate) async fn broker() -> (PgFixture, Arc<PgBroker>) {
    let fx = PgFixture::new().await.unwrap();
    let mut config = PgBrokerConfig::new(fx.config().clone());
    config.self_check_interval = Duration::from_millis(500);
    config.self_check_timeout = Duration::from_secs(2);
    let b = PgBroker::with_config(config).await.unwrap();
    (fx, Arc::new(b))
}

mod fixture {
    //! The fixture's throwaway server (started from the local PostgreSQL binaries, also as root).

    use dispatcher_testkit::postgres::PgFixture;

    #[tokio::test]
    async fn throwaway_server_starts_serves_and_stops() {
        let fx = PgFixture::throwaway().await.unwrap();
        let port = fx.config().get_ports()[0];
        assert_ne!(port, 5432, "a server of its own");
        let client = fx.client().await.unwrap();
        let row = client
            .query_one("SELECT current_database()", &[])
            .await
            .unwrap();
        let db: String = row.get(0);
        assert_eq!(db, fx.database());
        drop(client);
        drop(fx);
        // the last fixture stopped the server
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
