//! [`Kept`]: a finished Call as the history holds it, the same content in about half the memory
//! of a [`Call`] (the history is most of a service's memory: 10,000 Calls by default).
//!
//! A uuid in its canonical form is 16 bytes instead of a string; the task name is shared with
//! every other Call of the task; `args`, `kwargs` and `result` are their compact JSON text (none
//! at all for the usual empty `[]` and `{}`); the timestamps and durations are plain `f64`s with NaN
//! for "none". Converting back gives the Call that went in.

use std::collections::HashMap;

use dispatcher_core::call::{uuid_matches, SharedStr};
use dispatcher_core::{Call, CallFilter, Outcome, RejectReason};
use serde_json::Value;

/// A uuid: 16 bytes when the text is a canonical (lowercase, hyphenated) uuid, else the text.
#[derive(Debug, Clone)]
enum Id {
    Uuid([u8; 16]),
    Text(Box<str>),
}

impl Id {
    fn new(text: String) -> Id {
        match uuid::Uuid::try_parse(&text) {
            Ok(u)
                if *u
                    .hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer())
                    == *text =>
            {
                Id::Uuid(*u.as_bytes())
            }
            _ => Id::Text(text.into_boxed_str()),
        }
    }

    /// The text, written into `buf` when it is a uuid.
    fn as_str<'a>(&'a self, buf: &'a mut [u8; 45]) -> &'a str {
        match self {
            Id::Uuid(b) => uuid::Uuid::from_bytes(*b).hyphenated().encode_lower(buf),
            Id::Text(t) => t,
        }
    }

    fn to_text(&self) -> String {
        match self {
            Id::Uuid(b) => uuid::Uuid::from_bytes(*b).hyphenated().to_string(),
            Id::Text(t) => t.to_string(),
        }
    }
}

/// Shares each task name among the Calls that name it. Bounded: past [`TASK_NAMES`] distinct
/// names (messages naming tasks nobody registered), a name is simply not shared.
#[derive(Debug, Clone, Default)]
pub(super) struct Names {
    names: HashMap<Box<str>, SharedStr>,
}

/// Most task names shared.
const TASK_NAMES: usize = 4096;

impl Names {
    fn get(&mut self, name: String) -> SharedStr {
        if let Some(shared) = self.names.get(name.as_str()) {
            return shared.clone();
        }
        let shared = SharedStr::from(name.as_str());
        if self.names.len() < TASK_NAMES {
            self.names.insert(name.into_boxed_str(), shared.clone());
        }
        shared
    }
}

/// A JSON value as its compact text; `None` for `empty` (the value a missing field means), and
/// the empty text (no allocation) for `null`, the result of every task that returns nothing.
fn text_of(value: &Value, empty: fn(&Value) -> bool) -> Option<Box<str>> {
    if empty(value) {
        return None;
    }
    if value.is_null() {
        return Some(Box::from(""));
    }
    // A value serde cannot write (none that came from JSON) is kept as its debug text.
    Some(
        serde_json::to_string(value)
            .unwrap_or_else(|_| format!("{value:?}"))
            .into_boxed_str(),
    )
}

/// The value `text` holds (see [`text_of`]); a text that is not JSON comes back as a string.
fn value_of(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn no_args(v: &Value) -> bool {
    v.as_array().is_some_and(Vec::is_empty)
}

fn no_kwargs(v: &Value) -> bool {
    v.as_object().is_some_and(serde_json::Map::is_empty)
}

fn never(_: &Value) -> bool {
    false
}

fn time(t: Option<f64>) -> f64 {
    t.unwrap_or(f64::NAN)
}

fn opt(t: f64) -> Option<f64> {
    (!t.is_nan()).then_some(t)
}

/// A finished Call in the history.
#[derive(Debug, Clone)]
pub(super) struct Kept {
    uuid: Id,
    task: SharedStr,
    node_id: SharedStr,
    channel: SharedStr,
    args: Option<Box<str>>,
    kwargs: Option<Box<str>>,
    result: Option<Box<str>>,
    error: Option<Box<str>>,
    parent_uuid: Option<Id>,
    guid: Option<Box<str>>,
    /// `time_pub`, `received_at`, `queued_at`, `started_at`, `finished_at`, `wait_ms`, `run_ms`,
    /// `total_ms`; NaN for none.
    times: [f64; 8],
    worker_id: Option<u32>,
    pid: Option<u32>,
    attempt: Option<u32>,
    outcome: Option<Outcome>,
    reject_reason: Option<RejectReason>,
}

impl Kept {
    /// What the history keeps of `call` (its `delivery`, settled already, is not kept).
    pub(super) fn new(call: Call, names: &mut Names) -> Kept {
        Kept {
            uuid: Id::new(call.uuid),
            task: names.get(call.task),
            node_id: call.node_id,
            channel: call.channel,
            args: text_of(&call.args, no_args),
            kwargs: text_of(&call.kwargs, no_kwargs),
            result: call.result.as_ref().and_then(|r| text_of(r, never)),
            error: call.error.map(String::into_boxed_str),
            parent_uuid: call.parent_uuid.map(Id::new),
            guid: call.guid.map(String::into_boxed_str),
            times: [
                time(call.time_pub),
                time(call.received_at),
                time(call.queued_at),
                time(call.started_at),
                time(call.finished_at),
                time(call.wait_ms),
                time(call.run_ms),
                time(call.total_ms),
            ],
            worker_id: call.worker_id,
            pid: call.pid,
            attempt: call.attempt,
            outcome: call.outcome,
            reject_reason: call.reject_reason,
        }
    }

    /// The Call again.
    pub(super) fn call(&self) -> Call {
        let mut call = Call::received(self.uuid.to_text(), self.task.to_string(), "", "");
        call.node_id = self.node_id.clone();
        call.channel = self.channel.clone();
        call.args = self
            .args
            .as_deref()
            .map_or(Value::Array(Vec::new()), value_of);
        call.kwargs = self
            .kwargs
            .as_deref()
            .map_or(Value::Object(serde_json::Map::new()), value_of);
        call.result = self.result.as_deref().map(value_of);
        call.error = self.error.as_deref().map(str::to_owned);
        call.parent_uuid = self.parent_uuid.as_ref().map(Id::to_text);
        call.guid = self.guid.as_deref().map(str::to_owned);
        let [time_pub, received, queued, started, finished, wait, run, total] = self.times;
        call.time_pub = opt(time_pub);
        call.received_at = opt(received);
        call.queued_at = opt(queued);
        call.started_at = opt(started);
        call.finished_at = opt(finished);
        call.wait_ms = opt(wait);
        call.run_ms = opt(run);
        call.total_ms = opt(total);
        call.worker_id = self.worker_id;
        call.pid = self.pid;
        call.attempt = self.attempt;
        call.outcome = self.outcome;
        call.reject_reason = self.reject_reason;
        call.delivery = None;
        call
    }

    /// True when the Call matches every field the filter sets (as [`Call::matches`]).
    pub(super) fn matches(&self, filter: &CallFilter) -> bool {
        filter.task.as_ref().is_none_or(|t| **t == *self.task)
            && filter.outcome.is_none_or(|o| Some(o) == self.outcome)
            && filter.uuid.as_ref().is_none_or(|u| {
                let mut buf = uuid::Uuid::encode_buffer();
                uuid_matches(u, self.uuid.as_str(&mut buf))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full_call(uuid: &str) -> Call {
        let mut c = Call::received(uuid.to_owned(), "t.task".into(), "node-1", "chan");
        c.args = json!([1, "two", {"three": [3.5, null]}]);
        c.kwargs = json!({"k": "v", "n": 12345678901234567u64});
        c.result = Some(json!({"r": [true, false]}));
        c.error = Some("an error".into());
        c.parent_uuid = Some("9760671a-0b7f-4c1e-8f3a-2f6f3c1d2e4b".into());
        c.guid = Some("guid-1".into());
        c.time_pub = Some(1.5);
        c.queued_at = Some(2.25);
        c.started_at = Some(3.125);
        c.worker_id = Some(0);
        c.pid = Some(4242);
        c.attempt = Some(3);
        c.reject_reason = Some(RejectReason::Capacity);
        c.finish(Outcome::Error, Some("boom".into()), 4.0);
        c
    }

    #[test]
    fn a_kept_call_comes_back_as_it_went_in() {
        let mut names = Names::default();
        for uuid in [
            "9760671a-0b7f-4c1e-8f3a-2f6f3c1d2e4b",
            "9760671A-0B7F-4C1E-8F3A-2F6F3C1D2E4B",
            "9760671a0b7f4c1e8f3a2f6f3c1d2e4b",
            "not-a-uuid",
            "",
        ] {
            let call = full_call(uuid);
            assert_eq!(Kept::new(call.clone(), &mut names).call(), call, "{uuid}");
        }
        // Empty and absent fields, and values that are not objects or arrays.
        let mut call = Call::received("u".into(), "t".into(), "n", "c");
        assert_eq!(Kept::new(call.clone(), &mut names).call(), call);
        call.args = json!("a string");
        call.kwargs = Value::Null;
        call.result = Some(Value::Null);
        assert_eq!(Kept::new(call.clone(), &mut names).call(), call);
        call.args = json!([null, ""]);
        call.kwargs = json!({"": null});
        call.result = Some(json!(""));
        assert_eq!(Kept::new(call.clone(), &mut names).call(), call);
    }

    #[test]
    fn task_names_are_shared_and_bounded() {
        let mut names = Names::default();
        let a = Kept::new(full_call("u1"), &mut names);
        let b = Kept::new(full_call("u2"), &mut names);
        assert!(std::ptr::eq(a.task.as_ptr(), b.task.as_ptr()));
        for i in 0..TASK_NAMES + 10 {
            let mut c = full_call("u");
            c.task = format!("task-{i}");
            let kept = Kept::new(c, &mut names);
            assert_eq!(&*kept.task, format!("task-{i}"));
        }
        assert_eq!(names.names.len(), TASK_NAMES);
    }

    #[test]
    fn matches_as_the_call_does() {
        let mut names = Names::default();
        let call = full_call("9760671a-0b7f-4c1e-8f3a-2f6f3c1d2e4b");
        let kept = Kept::new(call.clone(), &mut names);
        let filters = [
            CallFilter::default(),
            CallFilter {
                uuid: Some("9760671a".into()),
                ..Default::default()
            },
            CallFilter {
                uuid: Some("9760671b".into()),
                ..Default::default()
            },
            CallFilter {
                task: Some("t.task".into()),
                outcome: Some(Outcome::Error),
                ..Default::default()
            },
            CallFilter {
                task: Some("t.other".into()),
                ..Default::default()
            },
            CallFilter {
                outcome: Some(Outcome::Ok),
                ..Default::default()
            },
        ];
        for f in &filters {
            assert_eq!(kept.matches(f), call.matches(f), "{f:?}");
        }
    }

    #[test]
    fn a_kept_call_is_about_half_a_call() {
        assert!(
            std::mem::size_of::<Kept>() * 10 <= std::mem::size_of::<Call>() * 7,
            "{} vs {}",
            std::mem::size_of::<Kept>(),
            std::mem::size_of::<Call>()
        );
    }
}
