//! What a running task gets: its [`TaskContext`] (who it is, and a way to submit other tasks).

use std::fmt;
use std::sync::Arc;

use crate::error::Result;
use crate::message::TaskMessage;

/// Where a [`TaskContext`] sends the tasks a task submits. Implemented by pools.
pub trait ChildSink: Send + Sync + 'static {
    /// Hands `message`, submitted by the Call `parent_uuid`, to the service.
    fn submit(&self, parent_uuid: &str, message: TaskMessage) -> Result<()>;
}

/// Given to a task declared with `context`: who it is, and a way to submit other tasks.
///
/// Submitted tasks are dispatched by the same service, without a broker, and their Calls record
/// this Call's uuid as `parent_uuid`.
#[derive(Clone)]
pub struct TaskContext {
    uuid: String,
    task: &'static str,
    attempt: u32,
    sink: Option<Arc<dyn ChildSink>>,
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("uuid", &self.uuid)
            .field("task", &self.task)
            .field("attempt", &self.attempt)
            .field("can_submit", &self.sink.is_some())
            .finish()
    }
}

impl TaskContext {
    /// A context for the Call `uuid` of `task`; `sink` receives submitted tasks. Its attempt is 1
    /// (see [`TaskContext::with_attempt`]).
    pub fn new(uuid: String, task: &'static str, sink: Option<Arc<dyn ChildSink>>) -> Self {
        TaskContext {
            uuid,
            task,
            attempt: 1,
            sink,
        }
    }

    /// The same context for attempt `attempt` of the Call (1 for a first run).
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// This Call's uuid.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// This Call's task name.
    pub fn task(&self) -> &'static str {
        self.task
    }

    /// Which run of this Call this is: 1 for a first run, 2 for its first retry by a durable
    /// queue, and so on. Always 1 outside a durable queue.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Submits an untyped task message, as [`TaskContext::submit`] does with a typed one;
    /// returns the child's uuid.
    pub fn submit_message(&self, mut message: TaskMessage) -> Result<String> {
        let Some(sink) = &self.sink else {
            return Err(crate::Error::Config(
                "this task context cannot submit tasks (no pool connection)".into(),
            ));
        };
        let uuid = message
            .uuid
            .get_or_insert_with(crate::call::new_uuid)
            .clone();
        sink.submit(&self.uuid, message)?;
        Ok(uuid)
    }
}
