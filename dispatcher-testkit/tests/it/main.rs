//! Tests of the testkit: the broker conformance suite on `MemoryBroker` and on a broker written
//! here, the pool conformance suite on a pool written here, broken brokers and pools the suites
//! must catch, fault injection, publish hooks, history assertions and the service harness.

// Test helpers outside `#[test]` functions unwrap too (clippy.toml allows it only inside them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod assertions;
mod conformance;
mod custom_broker;
mod custom_pool;
mod faults;
mod harness;
mod hooks;
mod panic_site;
mod pool_conformance;

use std::time::Duration;

/// Generous bound for anything expected to happen.
pub const WAIT: Duration = Duration::from_secs(10);
