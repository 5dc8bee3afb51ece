//! Test support for the dispatcher.
//!
//! * [`MemoryBroker`] ([`memory`]): the runtime's in-process bus
//!   ([`dispatcher_runtime::MemoryBroker`]) with fault injection ([`Faults`]: drop, delay,
//!   duplicate, disconnect) and counters.
//! * [`TestService`] ([`harness`]): a real service running in-process on any broker (a fresh
//!   `MemoryBroker` by default, or e.g. PostgreSQL through `PgFixture`), with a publisher on the
//!   same broker and [`TestService::wait_for_calls`].
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
//!
//! The same harness runs on PostgreSQL: give the builder a broker on a fresh database of
//! `postgres::PgFixture` (feature `postgres`). Faults stay a memory-broker matter
//! ([`TestService::memory_broker`] is `None` here).
//!
#![cfg_attr(feature = "postgres", doc = "```no_run")]
#![cfg_attr(not(feature = "postgres"), doc = "```ignore")]
//! # use std::{sync::Arc, time::Duration};
//! # use dispatcher_core::{task, Broker, Outcome, TaskRegistry};
//! # use dispatcher_testkit::expect::{assert_history, call};
//! # use dispatcher_testkit::TestService;
//! use dispatcher_broker_pg::PgBroker;
//! use dispatcher_testkit::postgres::PgFixture;
//! # #[task(name = "demo.add")]
//! # fn add(a: i64, b: i64) -> i64 { a + b }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!
//! let fx = PgFixture::new().await?;
//! let pg: Arc<dyn Broker> = Arc::new(PgBroker::connect(&fx.url()).await?);
//! let svc = TestService::builder()
//!     .registry(TaskRegistry::new().register::<add>())
//!     .broker(pg)
//!     .start()
//!     .await?;
//! let sent = svc.publisher().publish(add::call(2, 3)).await?;
//! let calls = svc.wait_for_calls(1, Duration::from_secs(20)).await?;
//! assert_history(&calls).has(call().uuid(sent.uuid()).outcome(Outcome::Ok).result(5.into()));
//! svc.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Using it in your crate
//!
//! The testkit is a test-side dependency. Next to your normal dependencies (`dispatcher-core`,
//! `dispatcher-runtime`, and `dispatcher-broker-pg` to run on PostgreSQL), add these, taking
//! `dispatcher-testkit` from the same source (`path`, `git` or registry) as the others:
//!
//! ```toml
//! [dev-dependencies]
//! # feature `postgres`: `postgres::PgFixture`; leave it out for the memory broker alone
//! dispatcher-testkit = { version = "0.1", features = ["postgres"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! serde_json = "1"
//! ```
//!
//! `PgFixture` creates a fresh database per fixture (and drops it after) on the server named by
//! `DATABASE_URL`, a URL or a `key=value` string whose user may `CREATE DATABASE`:
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo test
//! ```
//!
//! Without it, the fixture tries a server on `127.0.0.1:5432` as user `postgres` with trust
//! auth, then a throwaway server started from locally installed PostgreSQL binaries, then (with
//! the feature `testcontainers`) a Docker container; when none can be had it fails saying so,
//! it never skips a test silently.
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
