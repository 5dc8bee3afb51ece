//! Tasks: what `#[task]` produces and their declared configuration.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;

use crate::context::TaskContext;
use crate::error::Result;

/// What to do with a Call whose task is already running (or waiting) with the same arguments.
///
/// Two Calls are duplicates when task name, `args` and `kwargs` are equal, as in dispatcherd.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnDuplicate {
    /// Run every Call, however many duplicates run at once.
    #[default]
    Parallel,
    /// Drop the Call (outcome `discarded`) when a duplicate is running or waiting.
    Discard,
    /// Hold the Call until no duplicate is running, then run; duplicates run one after another.
    Serial,
    /// Hold at most one Call while a duplicate runs; discard further ones.
    QueueOne,
}

impl OnDuplicate {
    /// The wire name (`parallel`, `discard`, `serial`, `queue_one`).
    pub fn as_str(self) -> &'static str {
        match self {
            OnDuplicate::Parallel => "parallel",
            OnDuplicate::Discard => "discard",
            OnDuplicate::Serial => "serial",
            OnDuplicate::QueueOne => "queue_one",
        }
    }
}

/// Configuration declared once on `#[task(...)]`. Publishers never override it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskConfig {
    /// Longest a Call may run before the pool ends it (outcome `timeout`). `None`: no limit.
    pub timeout: Option<Duration>,
    /// Duplicate policy.
    pub on_duplicate: OnDuplicate,
    /// The channel a publisher sends this task to unless told otherwise.
    pub queue: Option<&'static str>,
    /// Whether the function takes a [`TaskContext`] as its first parameter.
    pub context: bool,
}

impl TaskConfig {
    /// No timeout, parallel duplicates, the publisher's default channel, no context.
    pub const fn new() -> Self {
        TaskConfig {
            timeout: None,
            on_duplicate: OnDuplicate::Parallel,
            queue: None,
            context: false,
        }
    }

    /// Sets the timeout.
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the duplicate policy.
    pub const fn with_on_duplicate(mut self, on_duplicate: OnDuplicate) -> Self {
        self.on_duplicate = on_duplicate;
        self
    }

    /// Sets the default channel.
    pub const fn with_queue(mut self, queue: &'static str) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Declares that the function takes a [`TaskContext`].
    pub const fn with_context(mut self) -> Self {
        self.context = true;
        self
    }
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig::new()
    }
}

/// A task that failed: its error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure(pub String);

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What running a task yields: its JSON result or its error text.
pub type TaskOutput = std::result::Result<Value, TaskFailure>;

/// The future a task's runner returns. Workers poll it on their own thread, so it need not be
/// `Send`.
pub type TaskFuture = Pin<Box<dyn Future<Output = TaskOutput>>>;

/// Everything a worker hands to a task: the call id, bound arguments and the context.
#[derive(Debug)]
pub struct Invocation {
    /// The Call's uuid.
    pub uuid: String,
    /// One value per parameter, in declaration order (`null` where none was given).
    pub args: Vec<Value>,
    /// The task's context.
    pub context: TaskContext,
}

/// Checks bound arguments against the parameter types without running anything.
pub type CheckFn = fn(&[Option<Value>]) -> Result<()>;
/// Runs the task.
pub type RunFn = fn(Invocation) -> TaskFuture;

/// A task as the registry holds it: name, parameters, configuration and how to run it.
///
/// `#[task]` builds one as a `static`; write one by hand only for tasks that are not Rust
/// functions.
#[derive(Clone, Copy)]
pub struct TaskDescriptor {
    name: &'static str,
    params: &'static [&'static str],
    config: TaskConfig,
    check: CheckFn,
    run: RunFn,
}

impl fmt::Debug for TaskDescriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskDescriptor")
            .field("name", &self.name)
            .field("params", &self.params)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TaskDescriptor {
    /// A descriptor from its parts.
    pub const fn new(
        name: &'static str,
        params: &'static [&'static str],
        config: TaskConfig,
        check: CheckFn,
        run: RunFn,
    ) -> Self {
        TaskDescriptor {
            name,
            params,
            config,
            check,
            run,
        }
    }

    /// The registered name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Parameter names in declaration order (the context parameter excluded).
    pub fn params(&self) -> &'static [&'static str] {
        self.params
    }

    /// The declared configuration.
    pub fn config(&self) -> &TaskConfig {
        &self.config
    }

    /// Binds a message's arguments to the parameters and checks their types.
    pub fn bind(
        &self,
        args: Vec<Value>,
        kwargs: serde_json::Map<String, Value>,
    ) -> Result<Vec<Value>> {
        let bound = crate::args::bind_arguments(self.name, self.params, args, kwargs)?;
        (self.check)(&bound)?;
        Ok(bound
            .into_iter()
            .map(|v| v.unwrap_or(Value::Null))
            .collect())
    }

    /// Starts running the task.
    pub fn run(&self, invocation: Invocation) -> TaskFuture {
        (self.run)(invocation)
    }
}

/// A task declared with `#[task]`: its name and descriptor. The macro implements it on a
/// type named like the function.
pub trait Task: 'static {
    /// The registered name.
    const NAME: &'static str;
    /// The task's descriptor.
    fn descriptor() -> &'static TaskDescriptor;
}
