//! Messages of the wire format (the repository's `docs/WIRE.md`): task messages, control messages,
//! chunk envelopes.
//!
//! [`decode`] turns one payload into a [`Decoded`] value; it never panics, whatever the input,
//! and every error names what was wrong.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The longest task name accepted, in bytes.
pub const MAX_TASK_NAME: usize = 255;
/// The longest `uuid` or `guid` accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// A request to run a task, as published on a channel.
///
/// Only routing data travels with it: execution policy (timeout, duplicates) is what the
/// receiving service's registry declares for the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TaskMessage {
    /// Registered task name.
    pub task: String,
    /// Call id; the service assigns one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Positional arguments.
    #[serde(default)]
    pub args: Vec<Value>,
    /// Named arguments.
    #[serde(default)]
    pub kwargs: Map<String, Value>,
    /// Publish time, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_pub: Option<f64>,
    /// Correlation id, kept on the Call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    /// Seconds to hold the call before dispatching it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<f64>,
}

impl TaskMessage {
    /// A message for `task` with no arguments.
    pub fn new(task: impl Into<String>) -> Self {
        TaskMessage {
            task: task.into(),
            ..TaskMessage::default()
        }
    }

    /// Encodes the message as JSON text.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|source| Error::Serialize {
            what: format!("message for task {:?}", self.task),
            source,
        })
    }
}

/// A control command, answered on `reply_to` when present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlMessage {
    /// The command name.
    pub control: String,
    /// The command's data; an empty object when absent.
    #[serde(default)]
    pub control_data: Map<String, Value>,
    /// The channel to publish the reply on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

/// One piece of a payload too large for one notification (`docs/WIRE.md`, Chunks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEnvelope {
    /// Always `"v1"`.
    #[serde(rename = "__dispatcherd_chunk__")]
    pub version: String,
    /// Shared by all pieces of one payload.
    pub message_id: String,
    /// This piece's position, from 0.
    pub index: u64,
    /// How many pieces the payload has.
    pub total: u64,
    /// This piece's slice of the payload text.
    pub payload: String,
}

/// What one payload turned out to be.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Decoded {
    /// A task to run.
    Task(TaskMessage),
    /// A control command.
    Control(ControlMessage),
    /// A piece of a larger payload.
    Chunk(ChunkEnvelope),
}

/// Fields some publishers send that never override the registry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IgnoredFields {
    /// `timeout` was present.
    pub timeout: bool,
    /// `on_duplicate` was present.
    pub on_duplicate: bool,
    /// `bind` was present.
    pub bind: bool,
}

impl IgnoredFields {
    /// True when any ignored field was present.
    pub fn any(&self) -> bool {
        self.timeout || self.on_duplicate || self.bind
    }
}

#[derive(Deserialize)]
struct Raw {
    task: Option<String>,
    control: Option<String>,
    uuid: Option<String>,
    args: Option<Vec<Value>>,
    kwargs: Option<Map<String, Value>>,
    time_pub: Option<f64>,
    guid: Option<String>,
    delay: Option<f64>,
    control_data: Option<Value>,
    reply_to: Option<String>,
    timeout: Option<IgnoredAny>,
    on_duplicate: Option<IgnoredAny>,
    bind: Option<IgnoredAny>,
    #[serde(rename = "__dispatcherd_chunk__")]
    chunk: Option<String>,
    message_id: Option<String>,
    index: Option<u64>,
    total: Option<u64>,
    payload: Option<String>,
}

/// Decodes one payload.
///
/// Accepts a JSON object (task, control or chunk), a JSON string naming a task, or a bare task
/// name. Returns the message and which ignored fields were present.
///
/// ```
/// use dispatcher_core::message::{decode, Decoded};
/// let (msg, _) = decode(r#"{"task": "demo.add", "args": [1, 2]}"#).unwrap();
/// assert!(matches!(msg, Decoded::Task(t) if t.task == "demo.add" && t.args.len() == 2));
/// let (bare, _) = decode("demo.noop").unwrap();
/// assert!(matches!(bare, Decoded::Task(t) if t.task == "demo.noop"));
/// ```
pub fn decode(payload: &str) -> Result<(Decoded, IgnoredFields)> {
    let trimmed = payload.trim();
    match trimmed.as_bytes().first() {
        Some(b'{') => decode_object(trimmed),
        Some(b'"') => {
            let name: String = serde_json::from_str(trimmed)
                .map_err(|e| Error::malformed(format!("invalid JSON string: {e}"), payload))?;
            bare_task(&name, payload)
        }
        Some(_) => bare_task(trimmed, payload),
        None => Err(Error::malformed("empty payload", payload)),
    }
}

fn bare_task(name: &str, payload: &str) -> Result<(Decoded, IgnoredFields)> {
    let valid = !name.is_empty()
        && name.len() <= MAX_TASK_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if !valid {
        return Err(Error::malformed(
            "not a JSON object and not a bare task name (letters, digits, '.', '_', '-', ':')",
            payload,
        ));
    }
    Ok((
        Decoded::Task(TaskMessage::new(name)),
        IgnoredFields::default(),
    ))
}

fn check_len(field: &'static str, value: &Option<String>, max: usize, payload: &str) -> Result<()> {
    match value {
        Some(v) if v.len() > max => Err(Error::malformed(
            format!(
                "field `{field}` is {} bytes long, at most {max} allowed",
                v.len()
            ),
            payload,
        )),
        _ => Ok(()),
    }
}

fn decode_object(payload: &str) -> Result<(Decoded, IgnoredFields)> {
    let raw: Raw = serde_json::from_str(payload)
        .map_err(|e| Error::malformed(format!("invalid JSON: {e}"), payload))?;
    let ignored = IgnoredFields {
        timeout: raw.timeout.is_some(),
        on_duplicate: raw.on_duplicate.is_some(),
        bind: raw.bind.is_some(),
    };
    if let Some(version) = raw.chunk {
        if version != "v1" {
            return Err(Error::Chunk(format!(
                "unsupported chunk envelope version {version:?}, expected \"v1\""
            )));
        }
        let (Some(message_id), Some(index), Some(total), Some(piece)) =
            (raw.message_id, raw.index, raw.total, raw.payload)
        else {
            return Err(Error::Chunk(
                "chunk envelope lacks one of `message_id`, `index`, `total`, `payload`".into(),
            ));
        };
        return Ok((
            Decoded::Chunk(ChunkEnvelope {
                version,
                message_id,
                index,
                total,
                payload: piece,
            }),
            ignored,
        ));
    }
    match (raw.task, raw.control) {
        (Some(_), Some(_)) => Err(Error::malformed(
            "message has both `task` and `control`; send one or the other",
            payload,
        )),
        (Some(task), None) => {
            if task.is_empty() || task.len() > MAX_TASK_NAME {
                return Err(Error::malformed(
                    format!(
                        "field `task` must be 1 to {MAX_TASK_NAME} bytes, got {}",
                        task.len()
                    ),
                    payload,
                ));
            }
            check_len("uuid", &raw.uuid, MAX_ID_LEN, payload)?;
            check_len("guid", &raw.guid, MAX_ID_LEN, payload)?;
            if let Some(d) = raw.delay {
                if !d.is_finite() || d < 0.0 {
                    return Err(Error::malformed(
                        format!("field `delay` must be a finite number of seconds >= 0, got {d}"),
                        payload,
                    ));
                }
            }
            Ok((
                Decoded::Task(TaskMessage {
                    task,
                    uuid: raw.uuid,
                    args: raw.args.unwrap_or_default(),
                    kwargs: raw.kwargs.unwrap_or_default(),
                    time_pub: raw.time_pub.filter(|t| t.is_finite()),
                    guid: raw.guid,
                    delay: raw.delay,
                }),
                ignored,
            ))
        }
        (None, Some(control)) => {
            let control_data = match raw.control_data {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => m,
                Some(other) => {
                    return Err(Error::malformed(
                        format!(
                            "field `control_data` must be an object, got {}",
                            kind_of(&other)
                        ),
                        payload,
                    ))
                }
            };
            Ok((
                Decoded::Control(ControlMessage {
                    control,
                    control_data,
                    reply_to: raw.reply_to,
                }),
                ignored,
            ))
        }
        (None, None) => Err(Error::malformed(
            "object has neither `task` nor `control`",
            payload,
        )),
    }
}

/// The `reply_to` channel of a payload that looks like a control message (a JSON object with a
/// `control` field and a string `reply_to`), even when [`decode`] refused it (for example for
/// `control_data` of the wrong shape): the service then still answers with an error, so a client
/// does not wait for a reply that never comes.
///
/// ```
/// use dispatcher_core::message::{control_reply_to, decode};
/// let bad = r#"{"control": "running", "control_data": [1], "reply_to": "reply_to_1"}"#;
/// assert!(decode(bad).is_err());
/// assert_eq!(control_reply_to(bad).as_deref(), Some("reply_to_1"));
/// assert_eq!(control_reply_to(r#"{"task": "t", "reply_to": "r"}"#), None);
/// ```
pub fn control_reply_to(payload: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        control: Option<IgnoredAny>,
        reply_to: Option<String>,
    }
    let probe: Probe = serde_json::from_str(payload.trim()).ok()?;
    probe.control?;
    probe.reply_to
}

/// The JSON kind of a value, for error messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(p: &str) -> TaskMessage {
        match decode(p) {
            Ok((Decoded::Task(t), _)) => t,
            other => panic!("expected a task, got {other:?}"),
        }
    }

    #[test]
    fn full_task_message() {
        let t = task(
            r#"{"task": "demo.echo", "uuid": "9760671a", "args": [4], "kwargs": {"label": "x"},
                "time_pub": 1727354869.5126922, "guid": "8f88", "delay": 1.5}"#,
        );
        assert_eq!(t.task, "demo.echo");
        assert_eq!(t.uuid.as_deref(), Some("9760671a"));
        assert_eq!(t.args, vec![Value::from(4)]);
        assert_eq!(t.kwargs.get("label"), Some(&Value::from("x")));
        assert_eq!(t.delay, Some(1.5));
    }

    #[test]
    fn bare_and_string_names() {
        assert_eq!(task("demo.noop").task, "demo.noop");
        assert_eq!(task("\"demo.noop\"").task, "demo.noop");
        assert!(decode("not a task name").is_err());
        assert!(decode("").is_err());
    }

    #[test]
    fn ignored_fields_are_reported() {
        let (_, ign) = decode(r#"{"task": "t", "timeout": 5, "on_duplicate": "discard"}"#).unwrap();
        assert!(ign.timeout && ign.on_duplicate && !ign.bind);
    }

    #[test]
    fn errors_name_the_problem() {
        let e = decode(r#"{"task": "t", "args": {"a": 1}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid type"), "{e}");
        let e = decode(r#"{"nothing": 1}"#).unwrap_err().to_string();
        assert!(e.contains("neither `task` nor `control`"), "{e}");
        let e = decode(r#"{"control": "x", "control_data": [1]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("control_data"), "{e}");
        let e = decode(r#"{"task": "t", "delay": -1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("delay"), "{e}");
    }

    #[test]
    fn deep_nesting_is_rejected_not_crashing() {
        let deep = format!(
            r#"{{"task": "t", "args": [{}1{}]}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(decode(&deep).is_err());
    }

    #[test]
    fn control_message() {
        match decode(r#"{"control": "running", "control_data": {"task": "x"}, "reply_to": "r"}"#) {
            Ok((Decoded::Control(c), _)) => {
                assert_eq!(c.control, "running");
                assert_eq!(c.reply_to.as_deref(), Some("r"));
            }
            other => panic!("{other:?}"),
        }
    }
}
