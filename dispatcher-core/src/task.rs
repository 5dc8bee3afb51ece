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

/// How many times a durable-queue job may run when its task does not say
/// ([`TaskConfig::max_attempts`]).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The base of the retry backoff when a task does not say ([`TaskConfig::backoff`]).
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

/// The longest retry backoff before jitter, whatever the base and the attempt
/// ([`TaskConfig::retry_delay`]).
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The smallest jitter factor [`TaskConfig::retry_delay`] applies.
const MIN_JITTER: f64 = 0.75;
/// The largest jitter factor [`TaskConfig::retry_delay`] applies.
const MAX_JITTER: f64 = 1.25;

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
    /// How many times a durable-queue job of this task may run before it is failed. `None`: the
    /// queue's default, [`DEFAULT_MAX_ATTEMPTS`] (see [`TaskConfig::attempts_allowed`]).
    pub max_attempts: Option<u32>,
    /// The base of the exponential backoff between a durable-queue job's attempts. `None`:
    /// [`DEFAULT_BACKOFF`] (see [`TaskConfig::retry_delay`]).
    pub backoff: Option<Duration>,
    /// Durable queue: a second enqueue of this task with the same arguments, while a job of it is
    /// available or running, returns the existing job instead of adding one. Default `false`.
    pub unique: bool,
    /// Durable queue: at most this many Calls of this task run at once, across all services
    /// consuming the queue. `None` (the default): no limit beyond the services' workers.
    pub concurrency: Option<u32>,
}

impl TaskConfig {
    /// No timeout, parallel duplicates, the publisher's default channel, no context; for a
    /// durable queue, the default attempts and backoff, not unique, no concurrency limit.
    pub const fn new() -> Self {
        TaskConfig {
            timeout: None,
            on_duplicate: OnDuplicate::Parallel,
            queue: None,
            context: false,
            max_attempts: None,
            backoff: None,
            unique: false,
            concurrency: None,
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

    /// Sets how many times a durable-queue job of this task may run (default
    /// [`DEFAULT_MAX_ATTEMPTS`]); 0 counts as 1.
    pub const fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Sets the base of the retry backoff (default [`DEFAULT_BACKOFF`]).
    pub const fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Makes the task unique in a durable queue (default: not unique); see
    /// [`TaskConfig::unique`].
    pub const fn with_unique(mut self) -> Self {
        self.unique = true;
        self
    }

    /// Limits how many Calls of this task run at once across a durable queue's services
    /// (default: no limit); see [`TaskConfig::concurrency`].
    pub const fn with_concurrency(mut self, concurrency: u32) -> Self {
        self.concurrency = Some(concurrency);
        self
    }

    /// How many times a durable-queue job of this task may run before it is failed: the
    /// declared `max_attempts`, else [`DEFAULT_MAX_ATTEMPTS`]; at least 1.
    pub const fn attempts_allowed(&self) -> u32 {
        match self.max_attempts {
            Some(0) => 1,
            Some(n) => n,
            None => DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// The base of the retry backoff: the declared `backoff`, else [`DEFAULT_BACKOFF`].
    pub const fn backoff_base(&self) -> Duration {
        match self.backoff {
            Some(b) => b,
            None => DEFAULT_BACKOFF,
        }
    }

    /// How long to wait before running attempt `attempt + 1` after attempt `attempt` failed:
    /// the backoff base (default [`DEFAULT_BACKOFF`]) times `2^(attempt - 1)`, at most
    /// [`MAX_BACKOFF`], then multiplied by `jitter`.
    ///
    /// `jitter` is a random factor the caller draws; it is clamped to `[0.75, 1.25]` (a NaN
    /// counts as 1). Attempt 0 counts as 1. Never panics: the doubling saturates at the cap.
    pub fn retry_delay(&self, attempt: u32, jitter: f64) -> Duration {
        let base = self.backoff_base();
        let exponent = attempt.saturating_sub(1);
        let cap = MAX_BACKOFF.as_nanos();
        let base = base.as_nanos();
        let nanos = if base == 0 {
            0
        } else if exponent >= 64 {
            // At least 2^64 ns: centuries over the cap.
            cap
        } else {
            base.saturating_mul(1u128 << exponent).min(cap)
        };
        let capped = u64::try_from(nanos).map_or(MAX_BACKOFF, Duration::from_nanos);
        let jitter = if jitter.is_nan() {
            1.0
        } else {
            jitter.clamp(MIN_JITTER, MAX_JITTER)
        };
        // At most MAX_BACKOFF * 1.25: far from overflowing a Duration.
        capped.mul_f64(jitter)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_allowed_defaults_to_three() {
        assert_eq!(TaskConfig::new().attempts_allowed(), DEFAULT_MAX_ATTEMPTS);
        assert_eq!(DEFAULT_MAX_ATTEMPTS, 3);
        assert_eq!(TaskConfig::new().with_max_attempts(7).attempts_allowed(), 7);
        assert_eq!(TaskConfig::new().with_max_attempts(1).attempts_allowed(), 1);
        assert_eq!(TaskConfig::new().with_max_attempts(0).attempts_allowed(), 1);
    }

    #[test]
    fn builders_set_the_durable_queue_policy() {
        let plain = TaskConfig::default();
        assert_eq!(
            (
                plain.max_attempts,
                plain.backoff,
                plain.unique,
                plain.concurrency
            ),
            (None, None, false, None)
        );
        let c = TaskConfig::new()
            .with_max_attempts(5)
            .with_backoff(Duration::from_millis(250))
            .with_unique()
            .with_concurrency(2);
        assert_eq!(c.max_attempts, Some(5));
        assert_eq!(c.backoff, Some(Duration::from_millis(250)));
        assert!(c.unique);
        assert_eq!(c.concurrency, Some(2));
    }

    #[test]
    fn retry_delay_doubles_from_the_default_base() {
        let c = TaskConfig::new();
        assert_eq!(c.retry_delay(1, 1.0), Duration::from_secs(1));
        assert_eq!(c.retry_delay(2, 1.0), Duration::from_secs(2));
        assert_eq!(c.retry_delay(3, 1.0), Duration::from_secs(4));
        assert_eq!(c.retry_delay(10, 1.0), Duration::from_secs(512));
        // Attempt 0 is taken as the first.
        assert_eq!(c.retry_delay(0, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn retry_delay_uses_the_declared_base() {
        let c = TaskConfig::new().with_backoff(Duration::from_millis(500));
        assert_eq!(c.retry_delay(1, 1.0), Duration::from_millis(500));
        assert_eq!(c.backoff_base(), Duration::from_millis(500));
        assert_eq!(TaskConfig::new().backoff_base(), DEFAULT_BACKOFF);
        assert_eq!(c.retry_delay(4, 1.0), Duration::from_secs(4));
        let zero = TaskConfig::new().with_backoff(Duration::ZERO);
        assert_eq!(zero.retry_delay(u32::MAX, 1.25), Duration::ZERO);
    }

    #[test]
    fn retry_delay_is_capped_at_an_hour_and_saturates() {
        let c = TaskConfig::new();
        // 2^12 s is over the cap.
        assert_eq!(c.retry_delay(13, 1.0), MAX_BACKOFF);
        assert_eq!(c.retry_delay(33, 1.0), MAX_BACKOFF);
        assert_eq!(c.retry_delay(64, 1.0), MAX_BACKOFF);
        assert_eq!(c.retry_delay(u32::MAX, 1.0), MAX_BACKOFF);
        // A tiny base keeps doubling past 2^32 before it reaches the cap.
        let tiny = TaskConfig::new().with_backoff(Duration::from_nanos(1));
        assert_eq!(tiny.retry_delay(33, 1.0), Duration::from_nanos(1 << 32));
        assert_eq!(tiny.retry_delay(42, 1.0), Duration::from_nanos(1 << 41));
        assert_eq!(tiny.retry_delay(43, 1.0), MAX_BACKOFF);
        assert_eq!(tiny.retry_delay(65, 1.0), MAX_BACKOFF);
        let huge = TaskConfig::new().with_backoff(Duration::MAX);
        assert_eq!(huge.retry_delay(1, 1.0), MAX_BACKOFF);
        assert_eq!(huge.retry_delay(u32::MAX, 1.25), MAX_BACKOFF.mul_f64(1.25));
    }

    #[test]
    fn retry_delay_applies_clamped_jitter() {
        let c = TaskConfig::new().with_backoff(Duration::from_secs(4));
        assert_eq!(c.retry_delay(1, 0.75), Duration::from_secs(3));
        assert_eq!(c.retry_delay(1, 1.25), Duration::from_secs(5));
        assert_eq!(c.retry_delay(1, 0.0), Duration::from_secs(3));
        assert_eq!(c.retry_delay(1, -4.0), Duration::from_secs(3));
        assert_eq!(c.retry_delay(1, 10.0), Duration::from_secs(5));
        assert_eq!(c.retry_delay(1, f64::INFINITY), Duration::from_secs(5));
        assert_eq!(c.retry_delay(1, f64::NEG_INFINITY), Duration::from_secs(3));
        assert_eq!(c.retry_delay(1, f64::NAN), Duration::from_secs(4));
        // Jitter applies after the cap.
        assert_eq!(c.retry_delay(40, 1.25), MAX_BACKOFF.mul_f64(1.25));
        assert_eq!(c.retry_delay(40, 0.75), MAX_BACKOFF.mul_f64(0.75));
    }
}
