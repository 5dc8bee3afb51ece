//! Admission: a Call that was taken in waits out its delay ([`Delays`]), then passes the task's
//! duplicate policy ([`Duplicates`]) before it is queued for a worker.
//!
//! Both are plain data structures, tested on their own below; the loop glue at the end moves
//! Calls between stages.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Instant;

use dispatcher_core::call::now_epoch;
use dispatcher_core::pool::CallKey;
use dispatcher_core::{OnDuplicate, Outcome};

use super::{Loop, Stage};

/// Calls waiting for their delay to pass, soonest first.
#[derive(Debug, Default)]
pub(super) struct Delays {
    heap: BinaryHeap<Reverse<(Instant, CallKey)>>,
}

impl Delays {
    /// Holds `key` until `due`.
    pub(super) fn push(&mut self, due: Instant, key: CallKey) {
        self.heap.push(Reverse((due, key)));
    }

    /// When the soonest Call is due, if any waits.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Takes the next Call due at `now` or earlier. A Call canceled while delayed stays here
    /// until it is due; the caller skips keys it no longer holds.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<CallKey> {
        match self.heap.peek() {
            Some(Reverse((t, key))) if *t <= now => {
                let key = *key;
                self.heap.pop();
                Some(key)
            }
            _ => None,
        }
    }
}

/// What the duplicate policy decides for a Call that is ready to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Queue it for a worker.
    Run,
    /// Hold it until the running duplicate ends.
    Block,
    /// Drop it (outcome `discarded`).
    Discard,
}

#[derive(Debug, Default)]
struct DupState {
    /// Calls with this key admitted (queued or running).
    admitted: usize,
    /// Calls held back, in arrival order.
    blocked: VecDeque<CallKey>,
}

/// The duplicate table: for every duplicate key (task, args, kwargs) with a Call admitted or
/// blocked, how many run and which wait. Keys with neither are removed at once, so the table
/// holds only what is in flight.
#[derive(Debug, Default)]
pub(super) struct Duplicates {
    table: HashMap<String, DupState>,
}

impl Duplicates {
    /// The key two Calls are duplicates by: task name, `args` and `kwargs` (as dispatcherd).
    pub(super) fn key(task: &str, args: &serde_json::Value, kwargs: &serde_json::Value) -> String {
        format!("{task}\u{0}{args}\u{0}{kwargs}")
    }

    /// Applies `policy` to the Call `key` with duplicate key `dk`, and records the decision.
    pub(super) fn admit(&mut self, dk: &str, policy: OnDuplicate, key: CallKey) -> Admission {
        let st = self.table.entry(dk.to_owned()).or_default();
        let action = match policy {
            OnDuplicate::Discard if st.admitted > 0 || !st.blocked.is_empty() => Admission::Discard,
            OnDuplicate::Serial if st.admitted > 0 => Admission::Block,
            OnDuplicate::QueueOne if !st.blocked.is_empty() => Admission::Discard,
            OnDuplicate::QueueOne if st.admitted > 0 => Admission::Block,
            _ => Admission::Run,
        };
        match action {
            Admission::Run => st.admitted += 1,
            Admission::Block => st.blocked.push_back(key),
            Admission::Discard => self.drop_if_idle(dk),
        }
        action
    }

    /// An admitted Call with key `dk` ended (or left the queue): returns the blocked Call that
    /// may run now, already counted as admitted. Blocked Calls go one at a time, in arrival
    /// order.
    pub(super) fn release(&mut self, dk: &str) -> Option<CallKey> {
        let mut next = None;
        if let Some(st) = self.table.get_mut(dk) {
            st.admitted = st.admitted.saturating_sub(1);
            if st.admitted == 0 {
                if let Some(k) = st.blocked.pop_front() {
                    st.admitted += 1;
                    next = Some(k);
                }
            }
        }
        self.drop_if_idle(dk);
        next
    }

    /// A blocked Call left before it ran (canceled, shutdown).
    pub(super) fn unblock(&mut self, dk: &str, key: CallKey) {
        if let Some(st) = self.table.get_mut(dk) {
            st.blocked.retain(|k| *k != key);
        }
        self.drop_if_idle(dk);
    }

    /// Calls blocked behind a duplicate, over all keys.
    pub(super) fn blocked_count(&self) -> usize {
        self.table.values().map(|d| d.blocked.len()).sum()
    }

    fn drop_if_idle(&mut self, dk: &str) {
        if self
            .table
            .get(dk)
            .is_some_and(|s| s.admitted == 0 && s.blocked.is_empty())
        {
            self.table.remove(dk);
        }
    }
}

impl Loop {
    /// Moves the Calls whose delay has passed on to the duplicate policy.
    pub(super) fn release_delayed(&mut self) {
        let now = Instant::now();
        while let Some(key) = self.delayed.pop_due(now) {
            if self
                .pending
                .get(&key)
                .is_some_and(|p| p.stage == Stage::Delayed)
            {
                self.admit(key);
            }
        }
    }

    /// Applies the duplicate policy to a Call that is ready to run.
    pub(super) fn admit(&mut self, key: CallKey) {
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        let policy = p.task.config().on_duplicate;
        if policy == OnDuplicate::Parallel {
            self.enqueue(key);
            return;
        }
        let dk = Duplicates::key(&p.call.task, &p.call.args, &p.call.kwargs);
        match self.dups.admit(&dk, policy, key) {
            Admission::Run => {
                p.dup_key = Some(dk);
                self.enqueue(key);
            }
            Admission::Block => {
                p.dup_key = Some(dk);
                p.stage = Stage::Blocked;
                p.call.queued_at.get_or_insert_with(now_epoch);
            }
            Admission::Discard => {
                if let Some(p) = self.take_pending(key) {
                    let reason = format!(
                        "discarded: a duplicate is already running or waiting (on_duplicate = {})",
                        policy.as_str()
                    );
                    self.record(
                        &p.span,
                        p.call,
                        Outcome::Discarded,
                        Some(reason),
                        None,
                        now_epoch(),
                    );
                }
            }
        }
    }

    /// A Call with this duplicate key stopped running: let the next blocked one go.
    pub(super) fn release_dup(&mut self, dk: &str) {
        if let Some(k) = self.dups.release(dk) {
            self.enqueue(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn delays_come_due_in_time_order() {
        let mut d = Delays::default();
        let t0 = Instant::now();
        d.push(t0 + Duration::from_secs(3), 3);
        d.push(t0 + Duration::from_secs(1), 1);
        d.push(t0 + Duration::from_secs(2), 2);
        assert_eq!(d.next_due(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(d.pop_due(t0), None, "nothing is due yet");
        let due: Vec<_> = std::iter::from_fn(|| d.pop_due(t0 + Duration::from_secs(2))).collect();
        assert_eq!(due, [1, 2]);
        assert_eq!(d.next_due(), Some(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn parallel_always_runs() {
        let mut t = Duplicates::default();
        for k in 0..3 {
            assert_eq!(t.admit("x", OnDuplicate::Parallel, k), Admission::Run);
        }
    }

    #[test]
    fn discard_drops_while_one_runs_and_forgets_idle_keys() {
        let mut t = Duplicates::default();
        assert_eq!(t.admit("x", OnDuplicate::Discard, 1), Admission::Run);
        assert_eq!(t.admit("x", OnDuplicate::Discard, 2), Admission::Discard);
        assert_eq!(t.admit("y", OnDuplicate::Discard, 3), Admission::Run);
        assert_eq!(t.release("x"), None);
        assert_eq!(t.admit("x", OnDuplicate::Discard, 4), Admission::Run);
        assert_eq!(t.release("x"), None);
        assert_eq!(t.release("y"), None);
        assert!(t.table.is_empty(), "no state left: {:?}", t.table);
    }

    #[test]
    fn serial_releases_blocked_calls_one_at_a_time_in_order() {
        let mut t = Duplicates::default();
        assert_eq!(t.admit("x", OnDuplicate::Serial, 1), Admission::Run);
        assert_eq!(t.admit("x", OnDuplicate::Serial, 2), Admission::Block);
        assert_eq!(t.admit("x", OnDuplicate::Serial, 3), Admission::Block);
        assert_eq!(t.blocked_count(), 2);
        assert_eq!(t.release("x"), Some(2));
        assert_eq!(t.admit("x", OnDuplicate::Serial, 4), Admission::Block);
        assert_eq!(t.release("x"), Some(3));
        assert_eq!(t.release("x"), Some(4));
        assert_eq!(t.release("x"), None);
        assert!(t.table.is_empty());
    }

    #[test]
    fn queue_one_holds_one_and_discards_the_rest() {
        let mut t = Duplicates::default();
        assert_eq!(t.admit("x", OnDuplicate::QueueOne, 1), Admission::Run);
        assert_eq!(t.admit("x", OnDuplicate::QueueOne, 2), Admission::Block);
        assert_eq!(t.admit("x", OnDuplicate::QueueOne, 3), Admission::Discard);
        assert_eq!(t.release("x"), Some(2));
        assert_eq!(t.admit("x", OnDuplicate::QueueOne, 4), Admission::Block);
    }

    #[test]
    fn an_unblocked_call_leaves_the_table() {
        let mut t = Duplicates::default();
        assert_eq!(t.admit("x", OnDuplicate::Serial, 1), Admission::Run);
        assert_eq!(t.admit("x", OnDuplicate::Serial, 2), Admission::Block);
        t.unblock("x", 2);
        assert_eq!(t.blocked_count(), 0);
        assert_eq!(t.release("x"), None, "the unblocked Call does not run");
        assert!(t.table.is_empty());
    }

    #[test]
    fn duplicate_keys_separate_task_and_arguments() {
        let a = Duplicates::key("t", &serde_json::json!([1]), &serde_json::json!({}));
        let b = Duplicates::key("t", &serde_json::json!([2]), &serde_json::json!({}));
        let c = Duplicates::key("u", &serde_json::json!([1]), &serde_json::json!({}));
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}
