//! The testkit's broker conformance suite on `ChannelBroker`: one test per check.

use std::sync::Arc;
use std::time::Duration;

use dispatcher_core::Broker;
use dispatcher_example_custom_broker::ChannelBroker;
use dispatcher_testkit::broker_conformance;
use dispatcher_testkit::conformance::Check;

broker_conformance!(channel_broker, {
    let bus = ChannelBroker::new();
    move || {
        let b = bus.clone();
        async move { Arc::new(b) as Arc<dyn Broker> }
    }
});

// No payload limit: large messages travel whole instead of as chunks.
broker_conformance!(channel_broker_without_payload_limit, {
    let bus = ChannelBroker::with_limits(4096, None);
    move || {
        let b = bus.clone();
        async move { Arc::new(b) as Arc<dyn Broker> }
    }
});

// The suite publishes 1,000 payloads before it reads: a buffer smaller than that loses some.
#[tokio::test]
async fn too_small_a_buffer_fails_the_ordering_check() {
    let bus = ChannelBroker::with_limits(100, None);
    let make = move || {
        let b = bus.clone();
        async move { Arc::new(b) as Arc<dyn Broker> }
    };
    let e = Check::Ordering
        .run_within(&make, Duration::from_millis(500))
        .await
        .expect_err("a 100-payload buffer cannot hold a burst of 1,000");
    assert!(e.to_string().contains("were lost or reordered"), "{e}");
}
