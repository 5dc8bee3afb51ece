//! The typed replies of the control commands.
//!
//! Every reply is a JSON object that also carries the answering service's `node_id` (see
//! [`super::Reply`]); the types here are the rest of it. Fields follow dispatcherd's names where
//! dispatcherd has the field; fields only this project sends are marked "(ours)". Every field
//! has a default when deserializing, so a reply from a dispatcherd service, which lacks our
//! fields, still reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::broker::BrokerStatus;
use crate::call::Call;
use crate::chunk::{AssemblyStats, PartialStatus};
use crate::pool::WorkerStatus;
use crate::registry::Registry;
use crate::task::TaskConfig;

/// The reply of `alive`: nothing but the node id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AliveReply {}

/// The reply of `main`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MainReply {
    /// The service's process id.
    pub pid: u32,
    /// Messages taken in (tasks, control, rejected payloads).
    pub received_count: u64,
    /// Control commands answered.
    pub control_count: u64,
    /// Seconds since the service started (ours).
    pub uptime: f64,
    /// The version of the runtime serving (ours).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The registered task names, sorted (ours).
    pub registered_tasks: Vec<String>,
    /// Each broker's health (ours).
    pub brokers: Vec<BrokerStatus>,
    /// The pool and the queues in front of it.
    pub pool: PoolSummary,
}

/// The `pool` part of `main`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolSummary {
    /// The id the next worker started will get.
    pub next_worker_id: u32,
    /// Calls a worker finished (ok, error, panic, timeout, worker lost); canceled ones excluded.
    pub finished_count: u64,
    /// Calls canceled (running or waiting).
    pub canceled_count: u64,
    /// Workers retired (recycled, scaled down, replaced).
    pub retirement_count: u64,
    /// Workers now.
    pub worker_ct: u64,
    /// Calls running now.
    pub running_ct: u64,
    /// Calls running or queued for a worker.
    pub active_task_ct: u64,
    /// Calls handed to a worker (ours).
    pub dispatched_count: u64,
    /// Calls discarded by their duplicate policy (ours).
    pub discard_count: u64,
    /// Messages rejected (ours).
    pub rejected_count: u64,
    /// Calls queued for a worker (ours).
    pub queued_count: u64,
    /// Calls held behind a running duplicate (ours).
    pub blocked_count: u64,
    /// Calls waiting for their delay (ours).
    pub delayed_count: u64,
}

/// The reply of `workers`: every worker, keyed `worker-<id>`.
pub type WorkersReply = BTreeMap<String, WorkerStatus>;

/// The key of a worker in [`WorkersReply`] and of its Call in [`RunningReply`].
pub fn worker_key(worker_id: u32) -> String {
    format!("worker-{worker_id}")
}

/// The reply of `running` and `cancel`: Calls keyed `worker-<id>` (running), `queued-<n>`,
/// `blocked-<n>` or `delayed-<n>`.
pub type RunningReply = BTreeMap<String, RunningEntry>;

/// A Call in [`RunningReply`]: the message as received, plus where it stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunningEntry {
    /// The task name.
    pub task: String,
    /// The Call's uuid.
    pub uuid: String,
    /// Positional arguments (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Value>,
    /// Named arguments (absent when none).
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub kwargs: Map<String, Value>,
    /// When the publisher sent it, epoch seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_pub: Option<f64>,
    /// The channel it came on (absent for local submissions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The publisher's guid, when it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    /// When the service took it in, epoch seconds (ours).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_at: Option<f64>,
    /// When it started on a worker, epoch seconds (ours; running Calls only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    /// When a delayed Call is due, epoch seconds (ours; delayed Calls only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_at: Option<f64>,
    /// Seconds it has run so far, by the service's clock (ours; running Calls only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_s: Option<f64>,
    /// Seconds until a delayed Call is due, by the service's clock (ours; delayed Calls only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_in_s: Option<f64>,
    /// The Call that submitted it (ours).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_uuid: Option<String>,
    /// Other fields of the message (from other implementations).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The reply of `history`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryReply {
    /// Finished Calls, oldest first.
    pub calls: Vec<Call>,
}

/// The reply of `metrics`: our counters, and dispatcherd's `enabled`/`status` of the metrics
/// endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsReply {
    /// Messages taken in (ours).
    pub received: u64,
    /// Control commands answered (ours).
    pub control: u64,
    /// Calls handed to a worker (ours).
    pub dispatched: u64,
    /// Messages whose `timeout`/`on_duplicate`/`bind` fields were ignored (ours).
    pub ignored_fields: u64,
    /// Messages refused for a missing or bad signature (ours).
    pub signature_failures: u64,
    /// Finished Calls by outcome (ours).
    pub finished: BTreeMap<String, u64>,
    /// Calls delayed, blocked or queued (ours).
    pub waiting: u64,
    /// Calls queued for a worker (ours).
    pub queue_depth: u64,
    /// Chunked payloads being assembled (ours).
    pub partial_chunked_messages: u64,
    /// Calls in the history (ours).
    pub history_size: u64,
    /// Whether an HTTP metrics endpoint serves.
    pub enabled: bool,
    /// Where it serves, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<MetricsEndpoint>,
}

/// Where a metrics endpoint serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsEndpoint {
    /// Host.
    pub host: String,
    /// Port.
    pub port: Option<u16>,
    /// Whether it is ready.
    pub ready: bool,
    /// Other fields (dispatcherd's `http_server` statistics).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The reply of `set_log_level`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogLevelReply {
    /// The logger changed (dispatcherd's field; ours is the process's filter, `dispatcher`).
    pub logger: String,
    /// The level set.
    pub level: String,
    /// The level before.
    pub previous_level: String,
}

/// The reply of `run`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunReply {
    /// The control data, as sent.
    pub ack: Map<String, Value>,
    /// The uuid of the Call it made (ours).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// The reply of `aio_tasks`: the service's background tasks by name.
pub type AioTasksReply = BTreeMap<String, AioTask>;

/// A background task in [`AioTasksReply`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AioTask {
    /// True when it has ended.
    pub done: bool,
    /// What it is doing (dispatcherd sends a Python stack; we describe the task).
    pub stack: String,
}

/// The reply of `chunks`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChunksReply {
    /// Counts.
    pub status: AssemblyStats,
    /// Payloads being assembled, by message id.
    pub partials: BTreeMap<String, PartialStatus>,
}

/// The reply of `producers`: where work comes from, keyed like dispatcherd's
/// (`pg_notify-producer`, `on-start-producer`, `scheduled-producer`, `control-producer`).
pub type ProducersReply = BTreeMap<String, ProducerStatus>;

/// A producer in [`ProducersReply`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProducerStatus {
    /// Messages it produced.
    pub produced_count: u64,
    /// Seconds it has run.
    pub uptime_seconds: f64,
    /// Times a broker's connection was replaced (brokered producers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recycle_count: Option<u64>,
    /// The broker's self-check (brokered producers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_self_check: Option<BrokerSelfCheck>,
}

/// A broker's self-check as [`ProducerStatus`] reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BrokerSelfCheck {
    /// Whether the broker checks itself.
    pub enabled: bool,
    /// Checks that succeeded.
    pub success_count: u64,
    /// Their mean round trip.
    pub average_time_seconds: Option<f64>,
    /// Their longest round trip.
    pub max_time_seconds: Option<f64>,
}

/// The reply of `tasks` (ours): every registered task's declared policy, keyed by task name.
pub type TasksReply = BTreeMap<String, TaskPolicy>;

/// The reply of `tasks` for the tasks of `registry`.
pub fn tasks_reply(registry: &dyn Registry) -> TasksReply {
    registry
        .names()
        .into_iter()
        .filter_map(|name| {
            let descriptor = registry.lookup(name)?;
            Some((name.to_owned(), TaskPolicy::from(descriptor.config())))
        })
        .collect()
}

/// A task's declared policy in [`TasksReply`] (ours), with the durable queue's defaults applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskPolicy {
    /// Longest a Call may run, in seconds; `None`: no limit.
    pub timeout_s: Option<f64>,
    /// The duplicate policy's wire name: `parallel`, `discard`, `serial` or `queue_one`.
    pub on_duplicate: String,
    /// The channel a publisher sends the task to unless told otherwise; `None`: the
    /// publisher's default.
    pub queue: Option<String>,
    /// How many times a durable-queue job of the task may run before it is failed (the
    /// declared value, else the default; at least 1).
    pub max_attempts: u32,
    /// The base of the backoff between a durable-queue job's attempts, in seconds (the declared
    /// value, else the default).
    pub backoff_s: f64,
    /// Whether a second enqueue with the same arguments, while a job of the task is available
    /// or running, returns the existing job.
    pub unique: bool,
    /// At most this many Calls of the task run at once across a durable queue's services;
    /// `None`: no limit.
    pub concurrency: Option<u32>,
    /// Whether the task takes a task context.
    pub context: bool,
}

impl From<&TaskConfig> for TaskPolicy {
    fn from(config: &TaskConfig) -> Self {
        TaskPolicy {
            timeout_s: config.timeout.map(|t| t.as_secs_f64()),
            on_duplicate: config.on_duplicate.as_str().to_owned(),
            queue: config.queue.map(str::to_owned),
            max_attempts: config.attempts_allowed(),
            backoff_s: config.backoff_base().as_secs_f64(),
            unique: config.unique,
            concurrency: config.concurrency,
            context: config.context,
        }
    }
}

/// The reply of `status`: the other read-only replies together (dispatcherd's set, plus the
/// newest Calls).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusReply {
    /// As `main`.
    pub main: MainReply,
    /// As `workers`.
    pub workers: WorkersReply,
    /// As `running`.
    pub running: RunningReply,
    /// As `aio_tasks`.
    pub aio_tasks: AioTasksReply,
    /// As `producers`.
    pub producers: ProducersReply,
    /// As `metrics`.
    pub metrics: MetricsReply,
    /// As `chunks`.
    pub chunks: ChunksReply,
    /// The newest Calls (ours).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryReply>,
}

/// A reply saying what was wrong with the command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What was wrong.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::Result;
    use crate::task::{Invocation, OnDuplicate, TaskDescriptor, TaskFuture};
    use crate::TaskRegistry;

    fn check(_: &[Option<Value>]) -> Result<()> {
        Ok(())
    }

    fn run(_: Invocation) -> TaskFuture {
        Box::pin(async { Ok(Value::Null) })
    }

    static PLAIN: TaskDescriptor =
        TaskDescriptor::new("t.plain", &[], TaskConfig::new(), check, run);
    static TUNED: TaskDescriptor = TaskDescriptor::new(
        "t.tuned",
        &["x"],
        TaskConfig::new()
            .with_timeout(Duration::from_millis(1500))
            .with_on_duplicate(OnDuplicate::QueueOne)
            .with_queue("other")
            .with_context()
            .with_max_attempts(0)
            .with_backoff(Duration::from_millis(250))
            .with_unique()
            .with_concurrency(2),
        check,
        run,
    );

    #[test]
    fn tasks_reply_applies_the_defaults() {
        let mut registry = TaskRegistry::new();
        registry.try_insert(&PLAIN).unwrap();
        registry.try_insert(&TUNED).unwrap();
        let reply = tasks_reply(&registry);
        assert_eq!(reply.keys().collect::<Vec<_>>(), ["t.plain", "t.tuned"]);
        assert_eq!(
            reply["t.plain"],
            TaskPolicy {
                timeout_s: None,
                on_duplicate: "parallel".into(),
                queue: None,
                max_attempts: crate::task::DEFAULT_MAX_ATTEMPTS,
                backoff_s: crate::task::DEFAULT_BACKOFF.as_secs_f64(),
                unique: false,
                concurrency: None,
                context: false,
            }
        );
        assert_eq!(
            reply["t.tuned"],
            TaskPolicy {
                timeout_s: Some(1.5),
                on_duplicate: "queue_one".into(),
                queue: Some("other".into()),
                max_attempts: 1,
                backoff_s: 0.25,
                unique: true,
                concurrency: Some(2),
                context: true,
            }
        );
        // It reads back from its JSON, and a reply missing fields still reads.
        let json = serde_json::to_value(&reply).unwrap();
        assert_eq!(json["t.tuned"]["on_duplicate"], "queue_one");
        assert_eq!(serde_json::from_value::<TasksReply>(json).unwrap(), reply);
        let sparse: TasksReply = serde_json::from_value(serde_json::json!({"t": {}})).unwrap();
        assert_eq!(sparse["t"], TaskPolicy::default());
    }
}
