//! [`Submission`]: a typed request to run a task, as `add::call(1, 2)` builds it.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::call::new_uuid;
use crate::context::TaskContext;
use crate::error::{Error, Result};
use crate::message::TaskMessage;
use crate::task::Task;

/// One typed request to run task `T`, built by the function `#[task]` generates
/// (`add::call(1, 2)`), with optional routing: channel, delay and uuid.
///
/// Execution policy (timeout, duplicates) is not a submission option: it is what the registry
/// declares for `T`.
pub struct Submission<T> {
    args: Result<Vec<Value>>,
    channel: Option<String>,
    delay: Option<Duration>,
    uuid: Option<String>,
    _task: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Submission<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Submission")
            .field("args", &self.args)
            .field("channel", &self.channel)
            .field("delay", &self.delay)
            .field("uuid", &self.uuid)
            .finish()
    }
}

/// Serializes one argument for a submission (used by generated code).
#[doc(hidden)]
pub fn to_argument<A: Serialize + ?Sized>(task: &str, name: &str, value: &A) -> Result<Value> {
    serde_json::to_value(value).map_err(|source| Error::Serialize {
        what: format!("argument `{name}` of task {task:?}"),
        source,
    })
}

impl<T: Task> Submission<T> {
    /// A submission with these positional arguments (used by generated code).
    #[doc(hidden)]
    pub fn from_arguments(args: Vec<Result<Value>>) -> Self {
        Submission {
            args: args.into_iter().collect(),
            channel: None,
            delay: None,
            uuid: None,
            _task: PhantomData,
        }
    }

    /// Publishes on `channel` instead of the task's declared queue or the publisher's default.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = Some(channel.into());
        self
    }

    /// Asks the service to hold the Call for `delay` before dispatching it.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Sets the Call's uuid (one is generated otherwise).
    pub fn uuid(mut self, uuid: impl Into<String>) -> Self {
        self.uuid = Some(uuid.into());
        self
    }

    /// The channel and wire message; the channel is the submission's, else the task's declared
    /// queue, else `default_channel`.
    pub fn into_message(self, default_channel: &str) -> Result<(String, TaskMessage)> {
        let args = self.args?;
        let channel = self
            .channel
            .or_else(|| T::descriptor().config().queue.map(str::to_owned))
            .unwrap_or_else(|| default_channel.to_owned());
        let message = TaskMessage {
            task: T::NAME.to_owned(),
            uuid: Some(self.uuid.unwrap_or_else(new_uuid)),
            args,
            kwargs: serde_json::Map::new(),
            time_pub: None,
            guid: None,
            delay: self.delay.map(|d| d.as_secs_f64()),
        };
        Ok((channel, message))
    }
}

impl TaskContext {
    /// Submits another registered task to this service; returns the child's uuid.
    ///
    /// Channel and delay set on the submission are kept; the child runs on this service.
    pub fn submit<T: Task>(&self, submission: Submission<T>) -> Result<String> {
        let (_, message) = submission.into_message("")?;
        self.submit_message(message)
    }
}
