//! Calls: the lifecycle record of one execution, and the bounded history of finished ones.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// An immutable string shared by reference count: cloning it allocates nothing.
///
/// [`Call::node_id`] and [`Call::channel`] are the same for many Calls, so every Call shares one
/// copy. It reads, prints, compares and serializes like a `String` (`call.channel == "x"`,
/// `&*call.channel`, `call.channel.to_string()`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SharedStr(Arc<str>);

impl SharedStr {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for SharedStr {
    fn default() -> Self {
        SharedStr::from("")
    }
}

impl Deref for SharedStr {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for SharedStr {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> Self {
        SharedStr(Arc::from(s))
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> Self {
        SharedStr(Arc::from(s))
    }
}

impl From<Arc<str>> for SharedStr {
    fn from(s: Arc<str>) -> Self {
        SharedStr(s)
    }
}

impl From<SharedStr> for String {
    fn from(s: SharedStr) -> Self {
        s.0.to_string()
    }
}

impl PartialEq<str> for SharedStr {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for SharedStr {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for SharedStr {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<SharedStr> for str {
    fn eq(&self, other: &SharedStr) -> bool {
        *self == *other.0
    }
}

impl PartialEq<SharedStr> for &str {
    fn eq(&self, other: &SharedStr) -> bool {
        **self == *other.0
    }
}

impl PartialEq<SharedStr> for String {
    fn eq(&self, other: &SharedStr) -> bool {
        **self == *other.0
    }
}

impl Serialize for SharedStr {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SharedStr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(deserializer).map(SharedStr::from)
    }
}

/// How a Call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// The task returned normally.
    Ok,
    /// The task returned an error.
    Error,
    /// The task panicked.
    Panic,
    /// The task ran past its declared timeout and was ended.
    Timeout,
    /// The Call was canceled (by a control command or at shutdown).
    Canceled,
    /// The worker running the Call died.
    WorkerLost,
    /// Dropped by the duplicate policy.
    Discarded,
    /// Never run: unknown task, bad arguments, malformed message, a bound exceeded.
    Rejected,
}

impl Outcome {
    /// The wire name (`ok`, `error`, ..., `rejected`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Panic => "panic",
            Outcome::Timeout => "timeout",
            Outcome::Canceled => "canceled",
            Outcome::WorkerLost => "worker_lost",
            Outcome::Discarded => "discarded",
            Outcome::Rejected => "rejected",
        }
    }

    /// Every outcome, in declaration order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Panic,
        Outcome::Timeout,
        Outcome::Canceled,
        Outcome::WorkerLost,
        Outcome::Discarded,
        Outcome::Rejected,
    ];

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A fresh call id (a random UUID, hyphenated).
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The length of a hyphenated UUID (`9760671a-6261-45aa-881a-f66929ff9725`).
pub const UUID_LEN: usize = 36;

/// True when `uuid` matches what a filter gave: the same text, or — when the filter is shorter
/// than a full UUID ([`UUID_LEN`]) and not empty — its beginning. So an operator can type the
/// first characters that a table shows.
///
/// ```
/// use dispatcher_core::call::uuid_matches;
///
/// let uuid = "9760671a-6261-45aa-881a-f66929ff9725";
/// assert!(uuid_matches("9760671a", uuid));
/// assert!(uuid_matches(uuid, uuid));
/// assert!(!uuid_matches("9760671b", uuid));
/// assert!(!uuid_matches("", uuid));
/// ```
pub fn uuid_matches(given: &str, uuid: &str) -> bool {
    if given.is_empty() || given.len() >= UUID_LEN {
        given == uuid
    } else {
        uuid.starts_with(given)
    }
}

/// The record of one execution, from receipt to outcome. It lives only in the service.
///
/// Timestamps are seconds since the Unix epoch; a stage never reached is `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// Call id.
    pub uuid: String,
    /// Task name (empty when the message could not be read far enough to know it).
    pub task: String,
    /// Positional arguments as received.
    pub args: Value,
    /// Named arguments as received.
    pub kwargs: Value,
    /// How it ended; `None` while it is still on its way.
    pub outcome: Option<Outcome>,
    /// Error text for every outcome but `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The task's return value, for `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why it was rejected, for `rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_reason: Option<RejectReason>,
    /// The service that received it (shared by all its Calls).
    pub node_id: SharedStr,
    /// The channel it arrived on (`local` for on-start, scheduled and child submissions; shared
    /// by all Calls of the channel).
    pub channel: SharedStr,
    /// Worker that ran it.
    pub worker_id: Option<u32>,
    /// Process id of that worker.
    pub pid: Option<u32>,
    /// The Call that submitted this one from its context.
    pub parent_uuid: Option<String>,
    /// Correlation id from the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    /// Publish time from the message.
    pub time_pub: Option<f64>,
    /// When the service received it.
    pub received_at: Option<f64>,
    /// When it started waiting (delayed, blocked by a duplicate, or queued for a worker).
    pub queued_at: Option<f64>,
    /// When a worker started it.
    pub started_at: Option<f64>,
    /// When it ended.
    pub finished_at: Option<f64>,
    /// Milliseconds from receipt to start.
    pub wait_ms: Option<f64>,
    /// Milliseconds from start to end.
    pub run_ms: Option<f64>,
    /// Milliseconds from receipt to end.
    pub total_ms: Option<f64>,
    /// Which attempt this is, for a job of a durable queue (1 for the first run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The durable broker's handle, settled when the Call ends; never serialized.
    #[serde(skip)]
    pub delivery: Option<crate::delivery::Delivery>,
}

impl Call {
    /// A Call received now. `node_id` and `channel` are anything that becomes a [`SharedStr`]:
    /// pass a `SharedStr` (a clone) to share one copy among many Calls.
    pub fn received(
        uuid: String,
        task: String,
        node_id: impl Into<SharedStr>,
        channel: impl Into<SharedStr>,
    ) -> Self {
        Call {
            uuid,
            task,
            args: Value::Array(Vec::new()),
            kwargs: Value::Object(serde_json::Map::new()),
            outcome: None,
            error: None,
            result: None,
            reject_reason: None,
            node_id: node_id.into(),
            channel: channel.into(),
            worker_id: None,
            pid: None,
            parent_uuid: None,
            guid: None,
            time_pub: None,
            received_at: Some(now_epoch()),
            queued_at: None,
            started_at: None,
            finished_at: None,
            wait_ms: None,
            run_ms: None,
            total_ms: None,
            attempt: None,
            delivery: None,
        }
    }

    /// Records the outcome at `at` and computes the durations.
    pub fn finish(&mut self, outcome: Outcome, error: Option<String>, at: f64) {
        self.outcome = Some(outcome);
        self.error = error;
        self.finished_at = Some(at);
        let ms = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(((b - a) * 1000.0).max(0.0)),
            _ => None,
        };
        self.wait_ms = ms(self.received_at, self.started_at);
        self.run_ms = ms(self.started_at, self.finished_at);
        self.total_ms = ms(self.received_at, self.finished_at);
    }

    /// True when the Call matches every field the filter sets.
    pub fn matches(&self, filter: &CallFilter) -> bool {
        filter.task.as_ref().is_none_or(|t| *t == self.task)
            && filter
                .uuid
                .as_ref()
                .is_none_or(|u| uuid_matches(u, &self.uuid))
            && filter.outcome.is_none_or(|o| Some(o) == self.outcome)
    }
}

/// Why a message was rejected: the kind of problem (the Call's `error` says exactly what). It is
/// also the `reason` label of the `dispatcher_rejected_total` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectReason {
    /// Not JSON, or not a message of the wire format.
    Malformed,
    /// Larger than a configured bound.
    TooLarge,
    /// A chunk envelope that could not be assembled (or expired).
    Chunk,
    /// A missing, forged or stale signature.
    Signature,
    /// No task of the name is registered.
    UnknownTask,
    /// The arguments do not fit the task's parameters.
    BadArguments,
    /// A delay over `max_delay`.
    Delay,
    /// The service had `max_waiting` Calls waiting already.
    Capacity,
    /// A durable job came back (its earlier run's lease expired) with no attempts left.
    Attempts,
}

impl RejectReason {
    /// Every reason.
    pub const ALL: [RejectReason; 9] = [
        RejectReason::Malformed,
        RejectReason::TooLarge,
        RejectReason::Chunk,
        RejectReason::Signature,
        RejectReason::UnknownTask,
        RejectReason::BadArguments,
        RejectReason::Delay,
        RejectReason::Capacity,
        RejectReason::Attempts,
    ];

    /// The wire and label word.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::TooLarge => "too_large",
            RejectReason::Chunk => "chunk",
            RejectReason::Signature => "signature",
            RejectReason::UnknownTask => "unknown_task",
            RejectReason::BadArguments => "bad_arguments",
            RejectReason::Delay => "delay",
            RejectReason::Capacity => "capacity",
            RejectReason::Attempts => "attempts",
        }
    }

    /// The kind of rejection an error of the contract stands for.
    pub fn of(error: &crate::Error) -> RejectReason {
        use crate::Error;
        match error {
            Error::TooLarge { .. } => RejectReason::TooLarge,
            Error::Chunk(_) => RejectReason::Chunk,
            Error::Signature(_) => RejectReason::Signature,
            Error::UnknownTask { .. } => RejectReason::UnknownTask,
            Error::Arguments { .. } => RejectReason::BadArguments,
            _ => RejectReason::Malformed,
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected message: the kind of problem and the text that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The kind.
    pub reason: RejectReason,
    /// What exactly was wrong.
    pub message: String,
}

impl Rejection {
    /// A rejection of `reason` saying `message`.
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
        }
    }
}

impl From<crate::Error> for Rejection {
    fn from(e: crate::Error) -> Self {
        Rejection::new(RejectReason::of(&e), e.to_string())
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Selects Calls from the history (also the data of the `history` control command).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallFilter {
    /// Only this task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Only this uuid, or the uuids that begin with it when it is shorter than a full UUID
    /// ([`uuid_matches`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Only this outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// At most this many, the newest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_str_reads_like_a_string() {
        let c = Call::received("u".into(), "t".into(), "node", String::from("chan"));
        assert_eq!(c.channel, "chan");
        assert_eq!("chan", c.channel);
        assert_eq!(String::from("node"), c.node_id);
        assert_eq!(c.node_id.as_str(), "node");
        assert_eq!(format!("{} {:?}", c.channel, c.channel), "chan \"chan\"");
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["channel"], "chan");
        assert_eq!(json["node_id"], "node");
        let back: Call = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
        let shared = SharedStr::from("x");
        let a = Call::received("a".into(), "t".into(), shared.clone(), shared.clone());
        assert!(std::ptr::eq(a.channel.as_str(), shared.as_str()));
    }

    #[test]
    fn outcome_names_round_trip() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
            assert_eq!(serde_json::to_value(o).unwrap(), Value::from(o.as_str()));
        }
    }
}
