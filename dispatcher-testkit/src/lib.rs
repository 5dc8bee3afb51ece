//! Test support for the dispatcher.
//!
//! * [`MemoryBroker`] ([`memory`]): an in-process pub/sub bus implementing
//!   [`dispatcher_core::Broker`], with backpressure and fault injection ([`Faults`]: drop, delay,
//!   duplicate, disconnect).
//! * [`TestService`] ([`harness`]): a real service running in-process on a `MemoryBroker`, with
//!   a publisher on the same bus and [`TestService::wait_for_calls`].
//! * [`expect`]: assertions on a Call history, expectation first:
//!   `assert_history(&calls).has(call().task("t.x").outcome(Outcome::Ok))`.
//! * [`hooks`]: [`RecordingHook`] and [`SkipAllHook`], publish hooks for tests.
//! * [`conformance`]: suites every [`dispatcher_core::Broker`] and every
//!   [`dispatcher_core::Pool`] implementation should pass, each as one async function or one test
//!   per check: [`broker_conformance!`] ([`conformance::broker`]) and [`pool_conformance!`]
//!   ([`conformance::pool`]: exactly one `Finished` per job with the right outcome, jobs given
//!   back while every worker is busy, timeout, cancel, `workers()`, shutdown with a grace). The
//!   pool suite runs tasks of its own; a test binary whose workers are processes registers them
//!   ([`conformance::pool::registry`]) before it calls `dispatcher_pool::run_if_worker`.
//!
//! ```
//! use std::time::Duration;
//! use dispatcher_core::{task, Outcome, TaskRegistry};
//! use dispatcher_testkit::expect::{assert_history, call};
//! use dispatcher_testkit::TestService;
//! use serde_json::json;
//!
//! /// Adds two numbers.
//! #[task(name = "demo.add")]
//! fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let svc = TestService::builder()
//!     .registry(TaskRegistry::new().register::<add>())
//!     .start()
//!     .await?;
//! let sent = svc.publisher().publish(add::call(2, 3)).await?;
//! svc.publish_raw(r#"{"task": "demo.nope"}"#).await;
//!
//! let calls = svc.wait_for_calls(2, Duration::from_secs(5)).await?;
//! assert_history(&calls)
//!     .count(2)
//!     .has(call().uuid(sent.uuid()).args(json!([2, 3])).outcome(Outcome::Ok).result(json!(5)))
//!     .has_exactly(1, call().outcome(Outcome::Rejected).error_contains("unknown task"))
//!     .has_none(call().outcome(Outcome::Panic));
//! svc.shutdown().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod conformance;
mod error;
pub mod expect;
pub mod harness;
pub mod hooks;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;

pub use conformance::pool::run_pool_conformance;
pub use conformance::run_broker_conformance;
pub use error::TestkitError;
pub use expect::{assert_history, CallExpectation, HistoryAssert};
pub use harness::{TestService, TestServiceBuilder};
pub use hooks::{RecordingHook, SkipAllHook};
pub use memory::{Faults, MemoryBroker};
