//! Control commands: their names ([`Command`]), the typed data they take ([`CallSelector`],
//! [`HistoryQuery`], [`LogLevelRequest`]), the typed replies a service sends ([`replies`]), and
//! the client side ([`request`], [`request_signed`], [`Reply`]).
//!
//! The same types serve the service (which serializes them), `dispatcherctl` and anything else
//! that reads replies (which deserialize them). They serialize to the JSON that dispatcherd's
//! clients read: field names follow dispatcherd's where both have the field, and ours are added
//! beside them. The repository's `docs/WIRE.md` describes every command and reply.
//!
//! ```
//! use dispatcher_core::control::{Command, Reply, WorkersReply};
//!
//! assert_eq!(Command::parse("workers"), Some(Command::Workers));
//! let raw = serde_json::json!({
//!     "node_id": "web-1",
//!     "worker-0": {"worker_id": 0, "pid": 41, "status": "ready", "finished_count": 3,
//!                  "current_task": null, "current_task_uuid": null, "active_cancel": false,
//!                  "age": 2.5},
//! });
//! let reply = Reply::from_value(raw);
//! assert_eq!(reply.node_id, "web-1");
//! let workers: WorkersReply = reply.parse()?;
//! assert_eq!(workers["worker-0"].pid, Some(41));
//! # Ok::<(), dispatcher_core::Error>(())
//! ```

mod client;
pub mod replies;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use client::{request, request_signed, request_with, Reply, RequestOptions};
pub use replies::*;

use crate::broker::MAX_CHANNEL_LEN;
use crate::call::{uuid_matches, CallFilter, Outcome};
use crate::error::{Error, Result};

/// A control command a service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// Is the service there: an empty reply.
    Alive,
    /// The service's counts, brokers and pool summary ([`MainReply`]).
    Main,
    /// Every worker ([`WorkersReply`]).
    Workers,
    /// Calls running or waiting, optionally filtered ([`RunningReply`]).
    Running,
    /// Cancels the matching Calls; replies with what it canceled ([`RunningReply`]).
    Cancel,
    /// Everything at once ([`StatusReply`]).
    Status,
    /// Finished Calls ([`HistoryReply`]).
    History,
    /// Counters ([`MetricsReply`]).
    Metrics,
    /// Changes the log filter ([`LogLevelReply`]).
    SetLogLevel,
    /// Runs a task given as the control data ([`RunReply`]).
    Run,
    /// The service's background tasks ([`AioTasksReply`]).
    AioTasks,
    /// Chunked payloads being assembled ([`ChunksReply`]).
    Chunks,
    /// Where the service's work comes from ([`ProducersReply`]).
    Producers,
    /// The registered tasks and their declared policies ([`TasksReply`]; ours).
    Tasks,
}

impl Command {
    /// Every command, in the order above.
    pub const ALL: [Command; 14] = [
        Command::Alive,
        Command::Main,
        Command::Workers,
        Command::Running,
        Command::Cancel,
        Command::Status,
        Command::History,
        Command::Metrics,
        Command::SetLogLevel,
        Command::Run,
        Command::AioTasks,
        Command::Chunks,
        Command::Producers,
        Command::Tasks,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Alive => "alive",
            Command::Main => "main",
            Command::Workers => "workers",
            Command::Running => "running",
            Command::Cancel => "cancel",
            Command::Status => "status",
            Command::History => "history",
            Command::Metrics => "metrics",
            Command::SetLogLevel => "set_log_level",
            Command::Run => "run",
            Command::AioTasks => "aio_tasks",
            Command::Chunks => "chunks",
            Command::Producers => "producers",
            Command::Tasks => "tasks",
        }
    }

    /// The command of a wire name.
    pub fn parse(name: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// True for commands that change nothing.
    pub fn is_read_only(self) -> bool {
        !matches!(self, Command::Cancel | Command::SetLogLevel | Command::Run)
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which Calls `running` and `cancel` act on: every given field must match (none: all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSelector {
    /// The task name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The Call's uuid, or its beginning when shorter than a full UUID
    /// ([`uuid_matches`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The positional arguments, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    /// The named arguments, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kwargs: Option<Value>,
}

impl CallSelector {
    /// Reads a selector from control data; an unknown field is an error naming it (dispatcherd
    /// ignores unknown fields, which turns a mistyped `cancel` filter into "cancel everything").
    pub fn from_data(data: &Map<String, Value>) -> std::result::Result<Self, String> {
        for k in data.keys() {
            if !matches!(k.as_str(), "task" | "uuid" | "args" | "kwargs") {
                return Err(format!(
                    "unknown filter field {k:?}; use any of task, uuid, args, kwargs"
                ));
            }
        }
        serde_json::from_value(Value::Object(data.clone()))
            .map_err(|e| format!("bad filter: {e}; task and uuid are strings"))
    }

    /// True when a Call of `task`, `uuid`, `args`, `kwargs` matches.
    pub fn matches(&self, task: &str, uuid: &str, args: &Value, kwargs: &Value) -> bool {
        self.task.as_deref().is_none_or(|t| t == task)
            && self.uuid.as_deref().is_none_or(|u| uuid_matches(u, uuid))
            && self.args.as_ref().is_none_or(|a| a == args)
            && self.kwargs.as_ref().is_none_or(|k| k == kwargs)
    }
}

/// The data of a `history` command: filters on finished Calls.
pub type HistoryQuery = CallFilter;

/// Reads a `history` command's data; an unknown field or a bad value is an error naming it.
pub fn history_query(data: &Map<String, Value>) -> std::result::Result<HistoryQuery, String> {
    let mut filter = CallFilter::default();
    for (k, v) in data {
        match (k.as_str(), v) {
            ("task", Value::String(s)) => filter.task = Some(s.clone()),
            ("uuid", Value::String(s)) => filter.uuid = Some(s.clone()),
            ("outcome", Value::String(s)) => match Outcome::parse(s) {
                Some(o) => filter.outcome = Some(o),
                None => {
                    return Err(format!(
                        "unknown outcome {s:?}; use one of {}",
                        Outcome::ALL.map(Outcome::as_str).join(", ")
                    ))
                }
            },
            ("limit", v) if v.as_u64().is_some() => filter.limit = v.as_u64().map(|n| n as usize),
            (k, v) => {
                return Err(format!(
                    "bad history filter {k:?} = {v}; use task (string), uuid (string), outcome (string), limit (integer)"
                ))
            }
        }
    }
    Ok(filter)
}

/// The data of `set_log_level`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLevelRequest {
    /// A filter (`debug`, `info,dispatcher_runtime=trace`), a Python level name (`WARNING`) or
    /// number (`30`, sent as a JSON number or string).
    pub level: String,
}

impl LogLevelRequest {
    /// Reads the request from control data (dispatcherd's clients may send the level as a
    /// number).
    pub fn from_data(data: &Map<String, Value>) -> Result<Self> {
        match data.get("level") {
            Some(Value::String(s)) => Ok(LogLevelRequest { level: s.clone() }),
            Some(Value::Number(n)) => Ok(LogLevelRequest {
                level: n.to_string(),
            }),
            _ => Err(Error::Config(
                "set_log_level needs control_data {\"level\": \"<filter>\"}, e.g. {\"level\": \"debug\"}"
                    .into(),
            )),
        }
    }
}

/// Serializes a typed value into control data (a JSON object).
pub fn to_data<T: Serialize>(value: &T) -> Result<Map<String, Value>> {
    match serde_json::to_value(value) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(Error::Config(format!(
            "control data must be a JSON object, got {}",
            crate::message::kind_of(&other)
        ))),
        Err(source) => Err(Error::Serialize {
            what: "control data".into(),
            source,
        }),
    }
}

/// The prefix of the channels control replies are sent on: a client listens on
/// `reply_to_<uuid hex>` before it sends a command naming it in `reply_to`.
pub const REPLY_CHANNEL_PREFIX: &str = "reply_to_";

/// The suffix of a channel's control channel.
pub const CONTROL_CHANNEL_SUFFIX: &str = "_control";

/// The control channel of `channel`: `<channel>_control`, or `None` when that name would be
/// longer than a channel name may be.
///
/// Services read their channels' control channels ahead of tasks (when their broker offers a
/// separate path, [`Broker::subscribe_control`](crate::Broker::subscribe_control)), so a command
/// sent there is answered even while thousands of tasks wait. Clients of this crate send every
/// command on both channels ([`request_with`]); a service answers whichever copy it reads first
/// and drops the other (by its `reply_to`). Clients that know only the channel (dispatcherd's)
/// are answered from the channel itself, after the tasks published before them.
///
/// ```
/// assert_eq!(dispatcher_core::control::control_channel("dispatcher").as_deref(), Some("dispatcher_control"));
/// assert_eq!(dispatcher_core::control::control_channel(&"x".repeat(60)), None);
/// ```
pub fn control_channel(channel: &str) -> Option<String> {
    let name = format!("{channel}{CONTROL_CHANNEL_SUFFIX}");
    (name.len() <= MAX_CHANNEL_LEN && !channel.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn command_names_round_trip() {
        for c in Command::ALL {
            assert_eq!(Command::parse(c.as_str()), Some(c));
        }
        assert_eq!(Command::parse("nope"), None);
        assert_eq!(Command::parse("tasks"), Some(Command::Tasks));
        assert!(Command::Tasks.is_read_only());
    }

    #[test]
    fn selectors_refuse_unknown_fields() {
        let data = json!({"taks": "x"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let e = CallSelector::from_data(&data).unwrap_err();
        assert!(e.contains("\"taks\""), "{e}");
        let data = json!({"task": "t", "args": [1]})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let s = CallSelector::from_data(&data).unwrap();
        assert!(s.matches("t", "u", &json!([1]), &json!({})));
        assert!(!s.matches("t", "u", &json!([2]), &json!({})));
    }

    #[test]
    fn selectors_take_uuid_prefixes() {
        let uuid = "9760671a-6261-45aa-881a-f66929ff9725";
        let by = |u: &str| CallSelector {
            uuid: Some(u.to_owned()),
            ..CallSelector::default()
        };
        let (args, kwargs) = (json!([]), json!({}));
        assert!(by("9760").matches("t", uuid, &args, &kwargs));
        assert!(by(uuid).matches("t", uuid, &args, &kwargs));
        assert!(!by("9761").matches("t", uuid, &args, &kwargs));
        // A full-length uuid is compared whole, never as a prefix.
        assert!(!by(&format!("{uuid}0")).matches("t", uuid, &args, &kwargs));
        assert!(!by("").matches("t", uuid, &args, &kwargs));
    }

    #[test]
    fn history_queries_name_bad_values() {
        let data = json!({"outcome": "fine"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let e = history_query(&data).unwrap_err();
        assert!(e.contains("\"fine\"") && e.contains("worker_lost"), "{e}");
    }

    #[test]
    fn log_levels_may_be_numbers() {
        let data = json!({"level": 30})
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(LogLevelRequest::from_data(&data).unwrap().level, "30");
    }
}
