//! Recording: a finished Call goes into the history (in batches, one lock per turn of the loop),
//! the counters and the metrics, with one log line: DEBUG for `ok` and `discarded`, one WARN line
//! for any other outcome (`call failed`, with the error and the rejection reason), and for a Call
//! abandoned at shutdown a WARN line `call abandoned at shutdown` with its task, `args` and
//! `kwargs` as JSON, each cut at [`REPLAY_ARGS_MAX`] bytes, so that it can be sent again.

use std::sync::atomic::Ordering;

use dispatcher_core::call::{new_uuid, now_epoch};
use dispatcher_core::{Call, Outcome, RejectReason, Rejection, Settlement};
use serde_json::Value;

use super::handle::Origin;
use super::Loop;

#[derive(Debug, Default, Clone)]
pub(super) struct Counters {
    pub(super) received: u64,
    pub(super) control: u64,
    pub(super) dispatched: u64,
    pub(super) ignored_fields: u64,
    pub(super) signature_failures: u64,
    pub(super) by_outcome: [u64; 8],
    /// Rejections by [`RejectReason`] (in the order of `RejectReason::ALL`).
    pub(super) rejected_by: [u64; RejectReason::ALL.len()],
    /// Payloads taken from each broker, by the broker's index.
    pub(super) per_broker: Vec<u64>,
    /// Tasks submitted at start (`on_start`).
    pub(super) on_start: u64,
    /// Tasks submitted by schedules.
    pub(super) scheduled: u64,
    /// Tasks submitted by the `run` control command.
    pub(super) control_runs: u64,
}

impl Counters {
    pub(super) fn count_origin(&mut self, origin: Origin) {
        match origin {
            Origin::Local => {}
            Origin::OnStart => self.on_start += 1,
            Origin::Scheduled => self.scheduled += 1,
        }
    }
}

impl Loop {
    /// Records `call` as rejected for `rejection`.
    pub(super) fn reject(&mut self, mut call: Call, rejection: Rejection) {
        let span = call_span(&call.uuid, &call.task);
        call.queued_at = None;
        call.reject_reason = Some(rejection.reason);
        if let Some(i) = RejectReason::ALL
            .iter()
            .position(|r| *r == rejection.reason)
        {
            self.counters.rejected_by[i] += 1;
        }
        self.record(
            &span,
            call,
            Outcome::Rejected,
            Some(rejection.message),
            None,
            now_epoch(),
        );
    }

    /// Records a payload that could not be read as far as a task name.
    pub(super) fn reject_payload(&mut self, channel: &str, reason: Rejection) {
        let channel = self.names.channel(channel);
        let mut call = Call::received(
            new_uuid(),
            String::new(),
            self.names.node_id.clone(),
            channel,
        );
        call.delivery = self.delivery.take();
        call.attempt = call.delivery.as_ref().map(|d| d.attempt());
        self.reject(call, reason);
    }

    /// Puts a finished Call into the history.
    pub(super) fn record(
        &mut self,
        span: &tracing::Span,
        mut call: Call,
        outcome: Outcome,
        error: Option<String>,
        result: Option<Value>,
        at: f64,
    ) {
        call.finish(outcome, error, at);
        call.result = result;
        if let Some(delivery) = call.delivery.take() {
            let settlement = self.settlement(&call, outcome, delivery.max_attempts());
            tracing::debug!(uuid = %call.uuid, delivery = delivery.id(), settlement = settlement.as_str(), "settled");
            delivery.settle(settlement);
        }
        self.counters.by_outcome[outcome as usize] += 1;
        let _in_span = span.enter();
        match outcome {
            Outcome::Canceled if self.stopping => {
                tracing::warn!(uuid = %call.uuid, task = %call.task, channel = %call.channel, %outcome, error = %call.error.as_deref().unwrap_or_default(), args = %replay_json(&call.args), kwargs = %replay_json(&call.kwargs), "call abandoned at shutdown")
            }
            Outcome::Ok | Outcome::Discarded => {
                tracing::debug!(uuid = %call.uuid, task = %call.task, %outcome, run_ms = call.run_ms, "call finished")
            }
            _ => {
                tracing::warn!(uuid = %call.uuid, task = %call.task, channel = %call.channel, %outcome, reason = call.reject_reason.map(RejectReason::as_str), error = %call.error.as_deref().unwrap_or_default(), "call failed")
            }
        }
        self.metrics.call_finished(&call);
        self.finished_buf.push(call);
    }

    /// Moves the Calls finished in this turn into the history, under one lock, then tells
    /// waiters (history first, so a waiter that sees the count also finds the Calls).
    pub(super) fn flush_finished(&mut self) {
        if self.finished_buf.is_empty() {
            return;
        }
        let n = self.finished_buf.len() as u64;
        {
            let mut history = self.shared.history();
            for call in self.finished_buf.drain(..) {
                history.push(call);
            }
        }
        let total = self.shared.finished.fetch_add(n, Ordering::SeqCst) + n;
        if total >= self.shared.wanted.load(Ordering::SeqCst) {
            // Every waiter wakes and asks again for what it still waits for.
            self.shared.wanted.store(u64::MAX, Ordering::SeqCst);
            self.finished.send_replace(total);
        }
        self.export_metrics();
    }

    pub(super) fn export_metrics(&mut self) {
        let c = &self.counters;
        self.metrics.sync(crate::metrics::Counts {
            received: c.received,
            control: c.control,
            dispatched: c.dispatched,
            rejected: &c.rejected_by,
        });
    }
}

/// The span of one Call, at debug level: the events logged about a Call (rejected, failed,
/// finished) name its uuid and task themselves, so at `info` the span would add nothing but its
/// cost (about 2 µs per Call with the fmt subscriber, a fifth of the service's work per Call).
impl Loop {
    /// How a durable job's Call that ended as `outcome` is settled: removed, retried with the
    /// task's backoff while attempts remain, failed, canceled, or given back at shutdown.
    fn settlement(&mut self, call: &Call, outcome: Outcome, max: Option<u32>) -> Settlement {
        let error = || {
            call.error
                .clone()
                .unwrap_or_else(|| outcome.as_str().to_owned())
        };
        match outcome {
            Outcome::Ok | Outcome::Discarded => Settlement::Complete,
            // Not the job's fault: the service was full or is stopping.
            Outcome::Rejected if call.reject_reason == Some(RejectReason::Capacity) => {
                Settlement::Release
            }
            Outcome::Canceled if self.stopping => Settlement::Release,
            Outcome::Canceled => Settlement::Cancel { reason: error() },
            Outcome::Rejected => Settlement::Fail { error: error() },
            _ => {
                let attempt = call.attempt.unwrap_or(1);
                let config = self.registry.lookup(&call.task).map(|t| *t.config());
                let config = config.unwrap_or_default();
                if attempt < max.unwrap_or_else(|| config.attempts_allowed()) {
                    let jitter = 0.75 + 0.5 * self.jitter.next();
                    Settlement::Retry {
                        after: config.retry_delay(attempt, jitter),
                        error: error(),
                    }
                } else {
                    Settlement::Fail { error: error() }
                }
            }
        }
    }
}

/// A small xorshift generator for backoff jitter (no need for a cryptographic source).
#[derive(Debug, Clone)]
pub(super) struct Jitter(u64);

impl Jitter {
    pub(super) fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x2545_F491_4F6C_DD1D);
        Jitter(seed | 1)
    }

    /// A number in [0, 1).
    pub(super) fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Most bytes of a Call's `args` (and of its `kwargs`) in the `call abandoned at shutdown` log
/// line; longer JSON is cut at a character boundary and ends with `…(N bytes)`.
pub(super) const REPLAY_ARGS_MAX: usize = 4096;

/// `value` as JSON for a log line, at most [`REPLAY_ARGS_MAX`] bytes of it.
fn replay_json(value: &Value) -> String {
    let mut text = value.to_string();
    if text.len() > REPLAY_ARGS_MAX {
        let total = text.len();
        let mut cut = REPLAY_ARGS_MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(&format!("…({total} bytes)"));
    }
    text
}

pub(super) fn call_span(uuid: &str, task: &str) -> tracing::Span {
    tracing::debug_span!("call", uuid = %uuid, task = %task)
}

#[cfg(test)]
mod tests {
    use super::{replay_json, REPLAY_ARGS_MAX};
    use serde_json::json;

    #[test]
    fn replay_json_is_cut_at_the_bound() {
        assert_eq!(replay_json(&json!([1, "a"])), r#"[1,"a"]"#);
        let long = json!(["é".repeat(REPLAY_ARGS_MAX)]);
        let shown = replay_json(&long);
        assert!(shown.len() < REPLAY_ARGS_MAX + 32, "{}", shown.len());
        assert!(shown.ends_with(&format!("…({} bytes)", long.to_string().len())));
    }
}
