//! The contract of a task dispatcher on PostgreSQL: tasks, Calls, the wire format and the
//! [`Broker`], [`Pool`], [`Registry`] and [`PublishHook`] traits, with the [`Publisher`] and the
//! control-command client.
//!
//! This crate is what a custom broker, a custom pool or a publishing-only application depends on.
//! It holds no service loop and no transport: the runtime (`dispatcher-runtime`) runs services,
//! `dispatcher-broker-pg` carries messages over PostgreSQL, `dispatcher-pool` runs Calls in worker
//! processes. Most applications use the facade crate `dispatcher`, which re-exports all of them
//! behind features.
//!
//! Declare tasks with [`#[task]`](macro@task) and collect them in a [`TaskRegistry`]; a
//! [`Submission`] is a typed request to run one, and a [`Publisher`] sends it through a broker:
//!
//! ```
//! use dispatcher_core::{task, Registry, TaskRegistry};
//!
//! /// Adds two numbers.
//! #[task(name = "demo.add")]
//! fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! /// Fails on odd input; a duplicate of a running Call is dropped.
//! #[task(name = "demo.even", timeout = 5.0, on_duplicate = "discard")]
//! async fn even(n: u32) -> Result<u32, String> {
//!     if n % 2 == 0 { Ok(n) } else { Err(format!("{n} is odd")) }
//! }
//!
//! let registry = TaskRegistry::new().register::<add>().register::<even>();
//! assert_eq!(registry.names(), ["demo.add", "demo.even"]);
//! let (channel, message) = add::call(1, 2).channel("math").into_message("dispatcher")?;
//! assert_eq!((channel.as_str(), message.task.as_str()), ("math", "demo.add"));
//! assert_eq!(message.args, [serde_json::json!(1), serde_json::json!(2)]);
//! # Ok::<(), dispatcher_core::Error>(())
//! ```
//!
//! The wire format is described in the repository's `docs/WIRE.md`; [`message`] decodes it,
//! [`chunk`] splits and joins large payloads, [`signing`] wraps payloads in HMAC envelopes and
//! [`control`] holds the typed control requests and replies and their client.
//!
//! Crate map: [`message`], [`chunk`], [`signing`], [`args`] (argument binding), [`task`](mod@task),
//! [`context`], [`submission`], [`registry`], [`call`] (Calls and outcomes), [`broker`], [`pool`],
//! [`worker`] (running a job), [`hook`], [`publisher`], [`control`].
#![warn(missing_docs)]

pub mod args;
pub mod broker;
pub mod call;
pub mod chunk;
pub mod context;
pub mod control;
pub mod delivery;
mod error;
pub mod hook;
pub mod message;
pub mod pool;
pub mod publisher;
pub mod registry;
pub mod signing;
pub mod submission;
pub mod task;
pub mod time;
pub mod worker;

pub use broker::{Broker, BrokerError, BrokerStatus, Incoming, Subscription};
pub use call::{Call, CallFilter, Outcome, RejectReason, Rejection};
pub use context::{ChildSink, TaskContext};
pub use delivery::{ConsumerInfo, Delivery, Settle, Settlement};
pub use error::{error_chain, Error, Result};
pub use hook::{HookDecision, Outgoing, PublishHook};
pub use message::{ControlMessage, TaskMessage};
pub use pool::{Dispatched, Job, Pool, PoolEvent, PoolStats, WorkerState, WorkerStatus};
pub use publisher::{Published, Publisher};
pub use registry::{Registry, TaskRegistry};
pub use submission::Submission;
pub use task::{OnDuplicate, Task, TaskConfig, TaskDescriptor, TaskFailure};

/// Declares a task. See the `dispatcher-macros` crate for the options.
pub use dispatcher_macros::task;

/// What `#[task]` expands to refers to; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::args::decode_argument;
    pub use crate::context::TaskContext;
    pub use crate::registry::COLLECTED_TASKS;
    pub use crate::submission::to_argument;
    pub use crate::task::{
        Invocation, OnDuplicate, Task, TaskConfig, TaskDescriptor, TaskFailure, TaskFuture,
        TaskOutput,
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
