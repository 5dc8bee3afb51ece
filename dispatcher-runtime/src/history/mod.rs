//! The bounded history of finished Calls.
//!
//! The history is bounded twice: by count (`history_size`) and by bytes (`history_max_bytes`).
//! Before a Call goes in, each of its large fields — `args`, `kwargs`, `result`, `error` — is cut
//! to at most `history_field_max_bytes` of its JSON text, followed by [`TRUNCATED_MARKER`] and the
//! field's full size; a cut `args`, `kwargs` or `result` becomes a JSON string holding that text.
//! Then the oldest Calls are dropped until both bounds hold.
//!
//! Calls are held compactly (see `kept`: about half the memory of a [`Call`]) and come back as
//! they went in.
//!
//! ```
//! use dispatcher_core::Call;
//! use dispatcher_runtime::History;
//!
//! let mut history = History::with_limits(100, 64 * 1024, 1024);
//! let mut call = Call::received("u1".into(), "t".into(), "n", "c");
//! call.args = serde_json::json!(["x".repeat(10_000)]);
//! history.push(call);
//! let kept = &history.select(&Default::default())[0];
//! assert!(kept.args.as_str().unwrap().contains(dispatcher_runtime::history::TRUNCATED_MARKER));
//! assert!(history.bytes() <= history.max_bytes());
//! ```

mod kept;

use std::collections::VecDeque;
use std::io::Write;

use dispatcher_core::{Call, CallFilter};
use serde_json::Value;

use kept::{Kept, Names};

/// What follows the kept start of a field cut for the history; the field's full size in bytes
/// follows it (`…[truncated by the history: 16777216 bytes]`).
pub const TRUNCATED_MARKER: &str = "…[truncated by the history:";

/// Default bound on the history's bytes (64 MiB).
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Default bound on one field of a Call in the history (1 MiB).
pub const DEFAULT_FIELD_MAX_BYTES: usize = 1024 * 1024;

/// What a Call costs besides its variable-length fields (the record, its boxes, the ring slot).
const CALL_OVERHEAD: usize = std::mem::size_of::<Kept>() + 2 * std::mem::size_of::<usize>();

/// The bounded history of finished Calls: the oldest are dropped when it holds `capacity` Calls
/// or more than `max_bytes` bytes.
#[derive(Debug, Clone)]
pub struct History {
    /// Each Call with what it counts toward `bytes`.
    calls: VecDeque<(Kept, usize)>,
    /// Task names, shared by the Calls that name them.
    names: Names,
    capacity: usize,
    max_bytes: usize,
    field_max_bytes: usize,
    bytes: usize,
    total: u64,
}

impl History {
    /// An empty history holding at most `capacity` Calls (at least 1), with the default byte
    /// bounds ([`DEFAULT_MAX_BYTES`], [`DEFAULT_FIELD_MAX_BYTES`]).
    pub fn new(capacity: usize) -> Self {
        History::with_limits(capacity, DEFAULT_MAX_BYTES, DEFAULT_FIELD_MAX_BYTES)
    }

    /// An empty history holding at most `capacity` Calls (at least 1) and at most `max_bytes`
    /// bytes, each field of a Call cut to `field_max_bytes` (at least 64).
    pub fn with_limits(capacity: usize, max_bytes: usize, field_max_bytes: usize) -> Self {
        let capacity = capacity.max(1);
        History {
            calls: VecDeque::with_capacity(capacity.min(1024)),
            names: Names::default(),
            capacity,
            max_bytes,
            field_max_bytes: field_max_bytes.max(64),
            bytes: 0,
            total: 0,
        }
    }

    /// Adds a finished Call (its large fields cut), dropping the oldest Calls while the history
    /// is over either bound. A Call larger than `max_bytes` even after cutting is not kept (it
    /// still counts in [`History::total`]).
    pub fn push(&mut self, mut call: Call) {
        self.total += 1;
        truncate_call(&mut call, self.field_max_bytes);
        let size = call_size(&call);
        if size > self.max_bytes {
            tracing::warn!(
                uuid = %call.uuid,
                bytes = size,
                max_bytes = self.max_bytes,
                "a Call is larger than the whole history bound and is not kept"
            );
            return;
        }
        while self.calls.len() >= self.capacity
            || (!self.calls.is_empty() && self.bytes + size > self.max_bytes)
        {
            self.pop_oldest();
        }
        if self.calls.len() == self.calls.capacity() {
            // Grow by doubling as usual, but never past `capacity`: a ring buffer larger than
            // what it holds touches all of its memory as it turns.
            let len = self.calls.len();
            let target = len.saturating_mul(2).max(16).min(self.capacity);
            self.calls.reserve_exact(target - len);
        }
        self.bytes += size;
        self.calls
            .push_back((Kept::new(call, &mut self.names), size));
    }

    fn pop_oldest(&mut self) {
        if let Some((_, size)) = self.calls.pop_front() {
            self.bytes -= size;
        }
    }

    /// Calls held now.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Calls ever added, including those since dropped.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The bytes the Calls held now count for: their JSON fields and strings plus a fixed
    /// overhead per Call. Never more than [`History::max_bytes`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The bound on [`History::bytes`].
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The bound on one field of a Call.
    pub fn field_max_bytes(&self) -> usize {
        self.field_max_bytes
    }

    /// Matching Calls, oldest first (the newest `limit` when a limit is set).
    pub fn select(&self, filter: &CallFilter) -> Vec<Call> {
        let mut out: Vec<Call> = self
            .calls
            .iter()
            .rev()
            .map(|(c, _)| c)
            .filter(|c| c.matches(filter))
            .take(filter.limit.unwrap_or(usize::MAX))
            .map(Kept::call)
            .collect();
        out.reverse();
        out
    }

    /// All Calls, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = Call> + '_ {
        self.calls.iter().map(|(c, _)| c.call())
    }
}

/// Cuts every large field of `call` to `limit` bytes of its text and the marker.
fn truncate_call(call: &mut Call, limit: usize) {
    for value in [&mut call.args, &mut call.kwargs] {
        truncate_value(value, limit);
    }
    if let Some(result) = &mut call.result {
        truncate_value(result, limit);
    }
    if let Some(error) = &mut call.error {
        if error.len() > limit {
            *error = cut(error, limit);
        }
    }
}

/// Replaces a value whose JSON text is longer than `limit` with a string: the start of that text,
/// then the marker.
fn truncate_value(value: &mut Value, limit: usize) {
    let mut w = CappedWriter::new(limit);
    // Writing into memory fails only on a value serde cannot represent; keep such a value as is.
    if serde_json::to_writer(&mut w, value).is_err() || w.total <= limit {
        return;
    }
    let kept = String::from_utf8_lossy(&w.kept);
    *value = Value::String(marked(&kept, limit, w.total));
}

/// `text` cut to at most `limit` bytes, then the marker naming its full size.
fn cut(text: &str, limit: usize) -> String {
    marked(text, limit, text.len())
}

fn marked(text: &str, limit: usize, full: usize) -> String {
    let mut end = limit.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // `String::from_utf8_lossy` of a prefix cut inside a character ends in U+FFFD; drop it.
    let kept = text[..end].trim_end_matches('\u{FFFD}');
    format!("{kept}{TRUNCATED_MARKER} {full} bytes]")
}

/// What a Call counts toward the history's bytes.
fn call_size(call: &Call) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    CALL_OVERHEAD
        + call.uuid.len()
        + call.task.len()
        + json_len(&call.args)
        + json_len(&call.kwargs)
        + call.result.as_ref().map_or(0, json_len)
        + opt(&call.error)
        + opt(&call.parent_uuid)
        + opt(&call.guid)
}

/// The length of a value's JSON text.
fn json_len(value: &Value) -> usize {
    let mut w = CappedWriter::new(0);
    let _ = serde_json::to_writer(&mut w, value);
    w.total
}

/// Keeps the first `cap` bytes written and counts them all.
struct CappedWriter {
    kept: Vec<u8>,
    cap: usize,
    total: usize,
}

impl CappedWriter {
    fn new(cap: usize) -> Self {
        CappedWriter {
            kept: Vec::new(),
            cap,
            total: 0,
        }
    }
}

impl Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.cap.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&buf[..room.min(buf.len())]);
        self.total += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dispatcher_core::call::now_epoch;
    use dispatcher_core::Outcome;
    use serde_json::json;

    #[test]
    fn history_is_bounded_and_filters() {
        let mut h = History::new(3);
        for i in 0..5 {
            let mut c = Call::received(format!("u{i}"), "t".into(), "n", "c");
            c.finish(
                if i % 2 == 0 {
                    Outcome::Ok
                } else {
                    Outcome::Error
                },
                None,
                now_epoch(),
            );
            h.push(c);
        }
        assert_eq!(h.len(), 3);
        assert_eq!(h.total(), 5);
        let uuids: Vec<_> = h
            .select(&CallFilter::default())
            .into_iter()
            .map(|c| c.uuid)
            .collect();
        assert_eq!(uuids, ["u2", "u3", "u4"]);
        let ok = h.select(&CallFilter {
            outcome: Some(Outcome::Ok),
            limit: Some(1),
            ..Default::default()
        });
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].uuid, "u4");
    }

    #[test]
    fn history_never_holds_more_room_than_its_capacity() {
        for cap in [1, 3, 1000, 1025, 10_000] {
            let mut h = History::new(cap);
            for i in 0..cap * 3 {
                h.push(Call::received(format!("u{i}"), "t".into(), "n", "c"));
            }
            assert_eq!(h.len(), cap);
            assert_eq!(h.calls.capacity(), cap, "capacity {cap}");
        }
    }

    fn call_with(i: usize, arg_len: usize) -> Call {
        let mut c = Call::received(format!("u{i}"), "t".into(), "n", "c");
        c.args = json!(["a".repeat(arg_len)]);
        c.finish(Outcome::Rejected, Some("bad".into()), now_epoch());
        c
    }

    fn sum_of_sizes(h: &History) -> usize {
        h.iter().map(|c| call_size(&c)).sum()
    }

    #[test]
    fn bytes_are_the_sum_of_the_calls_held_and_go_down_on_eviction() {
        let mut h = History::with_limits(3, usize::MAX, usize::MAX);
        h.push(call_with(0, 10_000));
        let one_large = h.bytes();
        assert!(one_large > 10_000, "{one_large}");
        assert_eq!(h.bytes(), sum_of_sizes(&h));
        h.push(call_with(1, 10));
        h.push(call_with(2, 10));
        let with_large = h.bytes();
        assert_eq!(with_large, sum_of_sizes(&h));
        // A fourth Call evicts the large first one: the total goes down by what it counted.
        h.push(call_with(3, 10));
        assert_eq!(h.len(), 3);
        assert_eq!(h.bytes(), sum_of_sizes(&h));
        assert!(
            h.bytes() < with_large - 9_000,
            "{} vs {with_large}",
            h.bytes()
        );
        // Replacing every Call with small ones leaves three small Calls' worth.
        for i in 4..7 {
            h.push(call_with(i, 10));
        }
        assert_eq!(h.bytes(), 3 * call_size(&call_with(9, 10)));
    }

    #[test]
    fn the_oldest_calls_go_when_over_the_byte_bound() {
        let per_call = call_size(&call_with(0, 1_000));
        let mut h = History::with_limits(1_000, per_call * 5 + per_call / 2, usize::MAX);
        for i in 0..20 {
            h.push(call_with(i, 1_000));
            assert!(
                h.bytes() <= h.max_bytes(),
                "{} > {}",
                h.bytes(),
                h.max_bytes()
            );
            assert_eq!(h.bytes(), sum_of_sizes(&h));
        }
        assert_eq!(h.len(), 5);
        let uuids: Vec<_> = h.iter().map(|c| c.uuid).collect();
        assert_eq!(uuids, ["u15", "u16", "u17", "u18", "u19"]);
        assert_eq!(h.total(), 20);
    }

    #[test]
    fn large_fields_are_cut_with_the_marker_and_their_full_size() {
        let mut h = History::with_limits(10, usize::MAX, 1_000);
        let mut c = call_with(0, 100_000);
        c.kwargs = json!({"k": "é".repeat(50_000)});
        c.result = Some(json!("r".repeat(5_000)));
        c.error = Some("e".repeat(3_000));
        h.push(c);
        let kept = &h.select(&CallFilter::default())[0];
        let args = kept.args.as_str().expect("args became a string");
        assert!(args.starts_with("[\"aaaa"), "{}", &args[..20]);
        assert!(args.ends_with(&format!("{TRUNCATED_MARKER} 100004 bytes]")));
        assert!(args.len() <= 1_000 + TRUNCATED_MARKER.len() + 20);
        let kwargs = kept.kwargs.as_str().expect("kwargs became a string");
        assert!(kwargs.contains(TRUNCATED_MARKER), "{kwargs}");
        assert!(!kwargs.contains('\u{FFFD}'));
        assert!(kept
            .result
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(|r| r.contains(TRUNCATED_MARKER)));
        let error = kept.error.as_deref().unwrap_or_default();
        assert!(
            error.starts_with("eee") && error.ends_with("3000 bytes]"),
            "{error}"
        );
        assert!(h.bytes() < 6_000, "{}", h.bytes());
        // Small fields are kept unchanged.
        h.push(call_with(1, 10));
        let small = &h.select(&CallFilter::default())[1];
        assert_eq!(small.args, json!(["a".repeat(10)]));
    }

    #[test]
    fn a_call_larger_than_the_whole_bound_is_not_kept() {
        let mut h = History::with_limits(10, 100, usize::MAX);
        h.push(call_with(0, 1_000));
        assert!(h.is_empty());
        assert_eq!(h.bytes(), 0);
        assert_eq!(h.total(), 1);
    }
}
