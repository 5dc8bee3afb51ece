//! The testkit's broker conformance suite on `PgBroker`.

use std::sync::Arc;

use dispatcher_broker_pg::PgBroker;
use dispatcher_core::Broker;
use dispatcher_testkit::broker_conformance;
use dispatcher_testkit::postgres::PgFixture;

broker_conformance!(pg_broker, {
    let fx = Arc::new(PgFixture::new().await.unwrap());
    move || {
        let fx = fx.clone();
        async move {
            let b = PgBroker::connect(&fx.url()).await.unwrap();
            Arc::new(b) as Arc<dyn Broker>
        }
    }
});
