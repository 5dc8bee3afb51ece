//! The runtime of the dispatcher: a [`Service`] takes messages from its brokers, applies each
//! task's declared policy and runs it in a pool, recording every execution as a
//! [`Call`](dispatcher_core::Call). Also here: [`InProcessPool`] (worker threads), the bounded
//! [`History`] and [`MemoryBroker`], an in-process bus for single-process applications.
//!
//! The contract it runs against (tasks, the wire format, the `Broker` and `Pool` traits) is
//! `dispatcher-core`; most applications use both through the facade crate `dispatcher`.
//!
//! ```
//! use std::time::Duration;
//! use dispatcher_core::{task, CallFilter, Outcome, TaskRegistry};
//! use dispatcher_runtime::{InProcessPool, Service};
//!
//! /// Adds two numbers.
//! #[task(name = "demo.add")]
//! fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! /// Fails on odd input.
//! #[task(name = "demo.even", timeout = 5.0, on_duplicate = "discard")]
//! async fn even(n: u32) -> Result<u32, String> {
//!     if n % 2 == 0 { Ok(n) } else { Err(format!("{n} is odd")) }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> dispatcher_runtime::Result<()> {
//! let service = Service::builder()
//!     .registry(TaskRegistry::new().register::<add>().register::<even>())
//!     .pool(InProcessPool::new(2))
//!     .start()
//!     .await?;
//! service.submit(add::call(1, 2)).await?;
//! service.submit(even::call(3)).await?;
//! service.wait_for_finished(2, Duration::from_secs(5)).await?;
//! let failed = service.history(&CallFilter { outcome: Some(Outcome::Error), ..Default::default() });
//! assert_eq!(failed[0].error.as_deref(), Some("3 is odd"));
//! service.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! The service above has no broker: work reaches it through [`ServiceHandle::submit`]. To publish
//! to it the way other processes would over PostgreSQL (a
//! [`Publisher`](dispatcher_core::Publisher), control commands, several services on one bus),
//! give it a [`MemoryBroker`], the in-process bus for single-process applications and
//! quickstarts; swapping it for a `PgBroker` later changes nothing else:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use dispatcher_core::{task, Broker, Publisher, TaskRegistry};
//! use dispatcher_runtime::{InProcessPool, MemoryBroker, Service};
//!
//! /// Adds two numbers.
//! #[task(name = "demo.add")]
//! fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
//! let service = Service::builder()
//!     .registry(TaskRegistry::new().register::<add>())
//!     .broker(bus.clone())
//!     .channels(["jobs"])
//!     .pool(InProcessPool::new(2))
//!     .start()
//!     .await?;
//! Publisher::new(bus, "jobs")?.publish(add::call(20, 22)).await?;
//! service.wait_for_finished(1, Duration::from_secs(5)).await?;
//! assert_eq!(service.history(&Default::default())[0].result, Some(42.into()));
//! service.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Crate map: [`service`] (the loop, one file per pipeline stage), [`inprocess`] (thread pool),
//! [`memory`] (in-process broker), [`history`], [`metrics`] (names exported through the
//! `metrics` facade).
#![warn(missing_docs)]

mod error;
pub mod history;
pub mod inprocess;
pub mod memory;
pub mod metrics;
pub mod service;

pub use error::{Error, Result};
pub use history::History;
pub use inprocess::InProcessPool;
pub use memory::MemoryBroker;
pub use service::{
    FinishedCounter, LogLevelControl, Service, ServiceBuilder, ServiceConfig, ServiceHandle,
    LOCAL_CHANNEL,
};
