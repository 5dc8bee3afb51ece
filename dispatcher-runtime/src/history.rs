//! The bounded history of finished Calls.

use std::collections::VecDeque;

use dispatcher_core::{Call, CallFilter};

/// The bounded history of finished Calls: the oldest is dropped when full.
#[derive(Debug, Clone)]
pub struct History {
    calls: VecDeque<Call>,
    capacity: usize,
    total: u64,
}

impl History {
    /// An empty history holding at most `capacity` Calls (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        History {
            calls: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            total: 0,
        }
    }

    /// Adds a finished Call, dropping the oldest when full.
    pub fn push(&mut self, call: Call) {
        if self.calls.len() == self.capacity {
            self.calls.pop_front();
        } else if self.calls.len() == self.calls.capacity() {
            // Grow by doubling as usual, but never past `capacity`: a ring buffer larger than
            // what it holds touches all of its memory as it turns.
            let len = self.calls.len();
            let target = len.saturating_mul(2).max(16).min(self.capacity);
            self.calls.reserve_exact(target - len);
        }
        self.calls.push_back(call);
        self.total += 1;
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

    /// Matching Calls, oldest first (the newest `limit` when a limit is set).
    pub fn select(&self, filter: &CallFilter) -> Vec<Call> {
        let mut out: Vec<Call> = self
            .calls
            .iter()
            .rev()
            .filter(|c| c.matches(filter))
            .take(filter.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// All Calls, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Call> {
        self.calls.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dispatcher_core::call::now_epoch;
    use dispatcher_core::Outcome;

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
}
