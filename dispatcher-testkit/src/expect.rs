//! Assertions on a Call history, expectation first (in the style of `tracing-mock`).
//!
//! Describe a Call with [`call()`] and the builder methods of [`CallExpectation`], then check a
//! history with [`assert_history`]:
//!
//! ```
//! use std::time::Duration;
//! use dispatcher_core::{Call, Outcome};
//! use dispatcher_testkit::expect::{assert_history, call};
//! use serde_json::json;
//!
//! # let mut calls = Vec::new();
//! # for (uuid, task, args, outcome, error) in [
//! #     ("a", "t.double", json!([21]), Outcome::Ok, None),
//! #     ("b", "t.fail", json!(["no luck"]), Outcome::Error, Some("no luck".to_owned())),
//! # ] {
//! #     let mut c = Call::received(uuid.into(), task.into(), "node", "chan");
//! #     c.args = args;
//! #     c.started_at = c.received_at;
//! #     c.finish(outcome, error, dispatcher_core::call::now_epoch());
//! #     calls.push(c);
//! # }
//! assert_history(&calls)
//!     .count(2)
//!     .has(call().task("t.double").args(json!([21])).outcome(Outcome::Ok))
//!     .has_exactly(1, call().outcome(Outcome::Error).error_contains("no luck"))
//!     .has_none(call().outcome(Outcome::Panic))
//!     .in_order([call().task("t.double"), call().task("t.fail")]);
//! ```
//!
//! Every assertion panics when it fails, with a message that names the expectation and prints the
//! history (or the relevant part of it) as a table: uuid, task, arguments, outcome, `wait_ms`,
//! `run_ms`, error (errors whole, up to [`MAX_ERROR_CHARS`]). The history's order is the order
//! in which Calls finished.

use std::fmt::{self, Write as _};
use std::time::Duration;

use dispatcher_core::{Call, Outcome};
use serde_json::Value;

/// Most rows a failure message prints; the rest are summarized in one line.
pub const MAX_TABLE_ROWS: usize = 200;

/// A description of a Call; every field left unset matches anything.
///
/// Build one with [`call()`].
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use = "an expectation does nothing until it is given to an assertion"]
pub struct CallExpectation {
    task: Option<String>,
    uuid: Option<String>,
    args: Option<Value>,
    kwargs: Option<Value>,
    outcome: Option<Outcome>,
    error_contains: Option<String>,
    result: Option<Value>,
    parent_uuid: Option<String>,
    channel: Option<String>,
    ran_longer_than: Option<Duration>,
    ran_shorter_than: Option<Duration>,
    waited_longer_than: Option<Duration>,
}

/// An expectation that matches any Call; narrow it with the builder methods.
pub fn call() -> CallExpectation {
    CallExpectation::default()
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl CallExpectation {
    /// The task name is `task`.
    pub fn task(mut self, task: &str) -> Self {
        self.task = Some(task.to_owned());
        self
    }

    /// The Call's uuid is `uuid`.
    pub fn uuid(mut self, uuid: &str) -> Self {
        self.uuid = Some(uuid.to_owned());
        self
    }

    /// The positional arguments, as received, equal `args` (a JSON array).
    pub fn args(mut self, args: Value) -> Self {
        self.args = Some(args);
        self
    }

    /// The named arguments, as received, equal `kwargs` (a JSON object).
    pub fn kwargs(mut self, kwargs: Value) -> Self {
        self.kwargs = Some(kwargs);
        self
    }

    /// The Call ended with `outcome`.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = Some(outcome);
        self
    }

    /// The Call's error text contains `text`.
    pub fn error_contains(mut self, text: &str) -> Self {
        self.error_contains = Some(text.to_owned());
        self
    }

    /// The task returned `result`.
    pub fn result(mut self, result: Value) -> Self {
        self.result = Some(result);
        self
    }

    /// The Call was submitted by the Call `parent_uuid` (from its task context).
    pub fn parent_uuid(mut self, parent_uuid: &str) -> Self {
        self.parent_uuid = Some(parent_uuid.to_owned());
        self
    }

    /// The Call arrived on `channel` (`local` for local submissions).
    pub fn channel(mut self, channel: &str) -> Self {
        self.channel = Some(channel.to_owned());
        self
    }

    /// The Call ran (`run_ms`) for longer than `d`.
    pub fn ran_longer_than(mut self, d: Duration) -> Self {
        self.ran_longer_than = Some(d);
        self
    }

    /// The Call ran (`run_ms`) for less than `d`; a Call that never ran does not match.
    pub fn ran_shorter_than(mut self, d: Duration) -> Self {
        self.ran_shorter_than = Some(d);
        self
    }

    /// The Call waited (`wait_ms`, receipt to start) for longer than `d`.
    pub fn waited_longer_than(mut self, d: Duration) -> Self {
        self.waited_longer_than = Some(d);
        self
    }

    /// True when `call` fits every field set.
    pub fn matches(&self, call: &Call) -> bool {
        self.mismatches(call).is_empty()
    }

    /// How `call` differs from this expectation, one phrase per field; empty when it matches.
    pub fn mismatches(&self, call: &Call) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(t) = &self.task {
            if *t != call.task {
                out.push(format!("task is {:?}, expected {t:?}", call.task));
            }
        }
        if let Some(u) = &self.uuid {
            if *u != call.uuid {
                out.push(format!("uuid is {:?}, expected {u:?}", call.uuid));
            }
        }
        if let Some(a) = &self.args {
            if *a != call.args {
                out.push(format!("args are {}, expected {a}", call.args));
            }
        }
        if let Some(k) = &self.kwargs {
            if *k != call.kwargs {
                out.push(format!("kwargs are {}, expected {k}", call.kwargs));
            }
        }
        if let Some(o) = self.outcome {
            if call.outcome != Some(o) {
                out.push(format!("outcome is {}, expected {o}", outcome_text(call)));
            }
        }
        if let Some(text) = &self.error_contains {
            match &call.error {
                Some(e) if e.contains(text.as_str()) => {}
                Some(e) => out.push(format!("error {e:?} does not contain {text:?}")),
                None => out.push(format!("has no error, expected one containing {text:?}")),
            }
        }
        if let Some(r) = &self.result {
            match &call.result {
                Some(got) if got == r => {}
                Some(got) => out.push(format!("result is {got}, expected {r}")),
                None => out.push(format!("has no result, expected {r}")),
            }
        }
        if let Some(p) = &self.parent_uuid {
            if call.parent_uuid.as_deref() != Some(p.as_str()) {
                out.push(format!(
                    "parent_uuid is {:?}, expected {p:?}",
                    call.parent_uuid
                ));
            }
        }
        if let Some(c) = &self.channel {
            if *c != call.channel {
                out.push(format!("channel is {:?}, expected {c:?}", call.channel));
            }
        }
        if let Some(d) = self.ran_longer_than {
            match call.run_ms {
                Some(ms) if ms > millis(d) => {}
                Some(ms) => out.push(format!("run_ms is {ms:.1}, expected more than {d:?}")),
                None => out.push(format!("never ran, expected run_ms above {d:?}")),
            }
        }
        if let Some(d) = self.ran_shorter_than {
            match call.run_ms {
                Some(ms) if ms < millis(d) => {}
                Some(ms) => out.push(format!("run_ms is {ms:.1}, expected less than {d:?}")),
                None => out.push(format!("never ran, expected run_ms below {d:?}")),
            }
        }
        if let Some(d) = self.waited_longer_than {
            match call.wait_ms {
                Some(ms) if ms > millis(d) => {}
                Some(ms) => out.push(format!("wait_ms is {ms:.1}, expected more than {d:?}")),
                None => out.push(format!("never started, expected wait_ms above {d:?}")),
            }
        }
        out
    }
}

impl fmt::Display for CallExpectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(t) = &self.task {
            parts.push(format!("task = {t:?}"));
        }
        if let Some(u) = &self.uuid {
            parts.push(format!("uuid = {u:?}"));
        }
        if let Some(a) = &self.args {
            parts.push(format!("args = {a}"));
        }
        if let Some(k) = &self.kwargs {
            parts.push(format!("kwargs = {k}"));
        }
        if let Some(o) = self.outcome {
            parts.push(format!("outcome = {o}"));
        }
        if let Some(e) = &self.error_contains {
            parts.push(format!("error contains {e:?}"));
        }
        if let Some(r) = &self.result {
            parts.push(format!("result = {r}"));
        }
        if let Some(p) = &self.parent_uuid {
            parts.push(format!("parent_uuid = {p:?}"));
        }
        if let Some(c) = &self.channel {
            parts.push(format!("channel = {c:?}"));
        }
        if let Some(d) = self.ran_longer_than {
            parts.push(format!("run_ms > {}", millis(d)));
        }
        if let Some(d) = self.ran_shorter_than {
            parts.push(format!("run_ms < {}", millis(d)));
        }
        if let Some(d) = self.waited_longer_than {
            parts.push(format!("wait_ms > {}", millis(d)));
        }
        if parts.is_empty() {
            f.write_str("call(any)")
        } else {
            write!(f, "call({})", parts.join(", "))
        }
    }
}

fn outcome_text(call: &Call) -> String {
    call.outcome
        .map_or_else(|| "(unfinished)".to_owned(), |o| o.as_str().to_owned())
}

/// `s` cut to at most `max` characters, with an ellipsis when cut; newlines shown as `\n`.
fn cell(s: &str, max: usize) -> String {
    let s = s.replace('\n', "\\n");
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Longest error text a table shows, in characters; longer ones end with a note of how much was
/// cut.
pub const MAX_ERROR_CHARS: usize = 2000;

/// An error for the table: whole up to [`MAX_ERROR_CHARS`], else cut with a note saying how many
/// characters were left out; newlines shown as `\n`.
fn error_cell(s: &str) -> String {
    let s = s.replace('\n', "\\n");
    let total = s.chars().count();
    if total <= MAX_ERROR_CHARS {
        return s;
    }
    let mut out: String = s.chars().take(MAX_ERROR_CHARS).collect();
    let _ = write!(out, "… ({} more characters)", total - MAX_ERROR_CHARS);
    out
}

fn ms_text(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

/// The Calls as a table, one row per Call in the given order, numbered from 0: uuid, task,
/// arguments (kwargs appended when not empty), outcome, `wait_ms`, `run_ms`, error. Long uuids,
/// tasks and arguments are cut; errors are shown whole up to [`MAX_ERROR_CHARS`] (in the last
/// column, so that a long one does not widen the others). At most [`MAX_TABLE_ROWS`] rows are
/// printed.
pub fn history_table(calls: &[Call]) -> String {
    let indexed: Vec<(usize, &Call)> = calls.iter().enumerate().collect();
    table(&indexed)
}

fn table(rows: &[(usize, &Call)]) -> String {
    if rows.is_empty() {
        return "  (no Calls)\n".to_owned();
    }
    const HEAD: [&str; 8] = [
        "#", "uuid", "task", "args", "outcome", "wait_ms", "run_ms", "error",
    ];
    let mut cells: Vec<[String; 8]> = Vec::with_capacity(rows.len().min(MAX_TABLE_ROWS));
    for (i, c) in rows.iter().take(MAX_TABLE_ROWS) {
        let mut args = c.args.to_string();
        if c.kwargs.as_object().is_some_and(|m| !m.is_empty()) {
            args.push(' ');
            args.push_str(&c.kwargs.to_string());
        }
        cells.push([
            i.to_string(),
            cell(&c.uuid, 36),
            cell(&c.task, 32),
            cell(&args, 40),
            outcome_text(c),
            ms_text(c.wait_ms),
            ms_text(c.run_ms),
            error_cell(c.error.as_deref().unwrap_or("-")),
        ]);
    }
    let mut widths = HEAD.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String]| {
        out.push_str("  ");
        for (i, (c, w)) in row.iter().zip(widths.iter()).enumerate() {
            if i > 0 {
                out.push_str(" | ");
            }
            let pad = w.saturating_sub(c.chars().count());
            out.push_str(c);
            if i + 1 < row.len() {
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    };
    line(&mut out, &HEAD.map(str::to_owned));
    // The last column (errors) is not padded; its rule stays short however long an error is.
    let last = widths.len() - 1;
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| "-".repeat(if i == last { (*w).min(60) } else { *w }))
        .collect();
    line(&mut out, &rule);
    for row in &cells {
        line(&mut out, row);
    }
    if rows.len() > MAX_TABLE_ROWS {
        let _ = writeln!(out, "  ... and {} more", rows.len() - MAX_TABLE_ROWS);
    }
    out
}

/// Assertions on a list of Calls; see the [module docs](self).
///
/// Every method panics when its assertion fails and returns the assertion for chaining.
#[derive(Debug, Clone, Copy)]
pub struct HistoryAssert<'a> {
    calls: &'a [Call],
}

/// Starts assertions on `calls` (oldest first, as [`crate::TestService::history`] returns them).
pub fn assert_history(calls: &[Call]) -> HistoryAssert<'_> {
    HistoryAssert { calls }
}

impl<'a> HistoryAssert<'a> {
    /// The Calls asserted on.
    pub fn calls(&self) -> &'a [Call] {
        self.calls
    }

    fn matching(&self, e: &CallExpectation) -> Vec<(usize, &'a Call)> {
        self.calls
            .iter()
            .enumerate()
            .filter(|(_, c)| e.matches(c))
            .collect()
    }

    /// Why the Calls that come closest (those of the expected task, or all) do not match.
    fn near_misses(&self, e: &CallExpectation) -> String {
        let mut out = String::new();
        let candidates: Vec<(usize, &Call)> = self
            .calls
            .iter()
            .enumerate()
            .filter(|(_, c)| e.task.as_ref().is_none_or(|t| *t == c.task))
            .take(10)
            .collect();
        if candidates.is_empty() {
            if let Some(t) = &e.task {
                let _ = writeln!(out, "no Call of task {t:?} at all");
            }
            return out;
        }
        let _ = writeln!(out, "closest Calls and how they differ:");
        for (i, c) in candidates {
            let _ = writeln!(out, "  #{i}: {}", e.mismatches(c).join("; "));
        }
        out
    }

    fn history(&self) -> String {
        format!(
            "history ({} Calls, oldest first):\n{}",
            self.calls.len(),
            history_table(self.calls)
        )
    }

    /// At least one Call matches `expectation`.
    #[track_caller]
    pub fn has(self, expectation: CallExpectation) -> Self {
        if self.matching(&expectation).is_empty() {
            panic!(
                "assert_history: expected at least one Call matching {expectation}, found none\n{}{}",
                self.near_misses(&expectation),
                self.history()
            );
        }
        self
    }

    /// Exactly `n` Calls match `expectation`.
    #[track_caller]
    pub fn has_exactly(self, n: usize, expectation: CallExpectation) -> Self {
        let found = self.matching(&expectation);
        if found.len() != n {
            let detail = if found.is_empty() {
                self.near_misses(&expectation)
            } else {
                format!("the matching Calls:\n{}", table(&found))
            };
            panic!(
                "assert_history: expected exactly {n} Call(s) matching {expectation}, found {}\n{detail}{}",
                found.len(),
                self.history()
            );
        }
        self
    }

    /// No Call matches `expectation`.
    #[track_caller]
    pub fn has_none(self, expectation: CallExpectation) -> Self {
        let found = self.matching(&expectation);
        if !found.is_empty() {
            panic!(
                "assert_history: expected no Call matching {expectation}, found {}:\n{}{}",
                found.len(),
                table(&found),
                self.history()
            );
        }
        self
    }

    /// Calls matching the expectations appear in this relative order (others may come between).
    /// Each expectation is matched by the earliest Call after the previous expectation's match.
    #[track_caller]
    pub fn in_order(self, expectations: impl IntoIterator<Item = CallExpectation>) -> Self {
        let expectations: Vec<CallExpectation> = expectations.into_iter().collect();
        let mut next = 0;
        let mut matched: Vec<String> = Vec::new();
        for (k, e) in expectations.iter().enumerate() {
            let found = self
                .calls
                .iter()
                .enumerate()
                .skip(next)
                .find(|(_, c)| e.matches(c));
            match found {
                Some((i, _)) => {
                    matched.push(format!("  expectation {k} ({e}) matched Call #{i}"));
                    next = i + 1;
                }
                None => {
                    let earlier: Vec<String> = self.calls[..next.min(self.calls.len())]
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| e.matches(c))
                        .map(|(i, _)| format!("#{i}"))
                        .collect();
                    let whereabouts = if earlier.is_empty() {
                        "no Call matches it anywhere in the history".to_owned()
                    } else {
                        format!(
                            "it matches only earlier Calls ({}), so the order is wrong",
                            earlier.join(", ")
                        )
                    };
                    let after = match next {
                        0 => "in the history".to_owned(),
                        n => format!("after Call #{}", n - 1),
                    };
                    panic!(
                        "assert_history: in_order: expectation {k} ({e}) has no matching Call {after}; {whereabouts}\n{}\n{}",
                        if matched.is_empty() { "  (no earlier expectation)".to_owned() } else { matched.join("\n") },
                        self.history()
                    );
                }
            }
        }
        self
    }

    /// The history holds exactly `n` Calls.
    #[track_caller]
    pub fn count(self, n: usize) -> Self {
        if self.calls.len() != n {
            panic!(
                "assert_history: expected {n} Call(s) in total, found {}\n{}",
                self.calls.len(),
                self.history()
            );
        }
        self
    }
}
