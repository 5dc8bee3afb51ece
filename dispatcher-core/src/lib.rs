//! Core of a task dispatcher on PostgreSQL LISTEN/NOTIFY: tasks, Calls, the wire format, the
//! [`Broker`], [`Pool`], [`Registry`] and [`PublishHook`] traits, the [`Publisher`] and the
//! service loop.
//!
//! Declare tasks with [`#[task]`](macro@task), collect them in a [`TaskRegistry`], run a [`Service`] with a broker
//! and a pool, and publish with a [`Publisher`]. Every execution is recorded as a [`Call`].
//!
//! ```
//! use std::time::Duration;
//! use dispatcher_core::{task, CallFilter, InProcessPool, Outcome, Service, TaskRegistry};
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
//! # async fn main() -> dispatcher_core::Result<()> {
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
//! Crate map: [`message`] (wire format), [`chunk`] (large payloads), [`args`] (argument
//! binding), [`task`](mod@task), [`registry`], [`call`] (Calls and history), [`broker`], [`pool`],
//! [`hook`], [`publisher`], [`service`], [`inprocess`] (thread pool).
#![warn(missing_docs)]

pub mod args;
pub mod broker;
pub mod call;
pub mod chunk;
pub mod control;
mod error;
pub mod hook;
pub mod inprocess;
pub mod message;
pub mod metrics;
pub mod pool;
pub mod publisher;
pub mod registry;
pub mod service;
pub mod signing;
pub mod task;

pub use broker::{Broker, Incoming, Subscription};
pub use call::{Call, CallFilter, History, Outcome};
pub use error::{Error, Result};
pub use hook::{HookDecision, Outgoing, PublishHook};
pub use inprocess::InProcessPool;
pub use message::{ControlMessage, TaskMessage};
pub use pool::{Dispatched, Job, Pool, PoolEvent, WorkerState, WorkerStatus};
pub use publisher::{Published, Publisher, Submission};
pub use registry::{Registry, TaskRegistry};
pub use service::{LogLevelControl, Service, ServiceBuilder, ServiceConfig, ServiceHandle};
pub use task::{OnDuplicate, Task, TaskConfig, TaskContext, TaskDescriptor, TaskFailure};

/// Declares a task. See the `dispatcher-macros` crate for the options.
pub use dispatcher_macros::task;

/// What `#[task]` expands to refers to; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::args::decode_argument;
    pub use crate::publisher::to_argument;
    pub use crate::registry::COLLECTED_TASKS;
    pub use crate::task::{
        Invocation, OnDuplicate, Task, TaskConfig, TaskContext, TaskDescriptor, TaskFailure,
        TaskFuture, TaskOutput,
    };
    pub use crate::{Error, Result, Submission};
    pub use linkme;
    pub use serde_json::Value;
    pub use std::boxed::Box;
    pub use std::time::Duration;

    /// Turns a task's plain return value into its output.
    pub fn value_output<T: serde::Serialize>(value: T) -> TaskOutput {
        serde_json::to_value(value)
            .map_err(|e| TaskFailure(format!("could not serialize the task's result: {e}")))
    }

    /// Turns a task's `Result` into its output.
    pub fn result_output<T: serde::Serialize, E: std::fmt::Display>(
        result: std::result::Result<T, E>,
    ) -> TaskOutput {
        match result {
            Ok(v) => value_output(v),
            Err(e) => Err(TaskFailure(e.to_string())),
        }
    }

    /// Turns an argument error into a task failure.
    pub fn argument_failure(e: Error) -> TaskFailure {
        TaskFailure(e.to_string())
    }
}
