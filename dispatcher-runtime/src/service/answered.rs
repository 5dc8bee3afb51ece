//! The control fast path's bookkeeping: which control channels a service reads ahead of tasks,
//! and which commands it already answered (a client sends each command on a channel and on its
//! control channel; the service answers the copy it reads first and drops the other).

use std::collections::{HashSet, VecDeque};

use dispatcher_core::control::control_channel;

/// The control channels of `channels` (those whose control channel name is not too long).
pub(super) fn control_channels(channels: &[String]) -> Vec<String> {
    let mut out: Vec<String> = channels.iter().filter_map(|c| control_channel(c)).collect();
    out.sort();
    out.dedup();
    out
}

/// The newest control commands read on each path (the channels, the control channels), at most
/// [`Answered::CAP`] per path, so that the copy of a command read on the other path is dropped.
///
/// A command is identified by its `reply_to`, name and data (a hash of them): clients of this
/// crate make a fresh `reply_to` per command. A command read twice on the same path (a client
/// that reuses its reply channel and repeats itself) is answered each time; only a copy seen on
/// the *other* path is dropped, once. Bounded: when a path's set is full, its oldest entry is
/// forgotten; the second copy is normally read within the time the tasks ahead of it take, and
/// a service that reads more than `CAP` other commands in between answers it too (a reply
/// nobody reads any more; a `run` runs once more).
#[derive(Debug, Default)]
pub(super) struct Answered {
    paths: [Recent; 2],
}

#[derive(Debug, Default)]
struct Recent {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Recent {
    fn insert(&mut self, key: u64) {
        if self.order.len() >= Answered::CAP {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        if self.set.insert(key) {
            self.order.push_back(key);
        }
    }
}

impl Answered {
    /// How many commands are remembered per path.
    pub(super) const CAP: usize = 4096;

    /// Records a command read on the control path (`control`) or the channels; false when its
    /// copy was read on the other path already (this one is to be dropped).
    pub(super) fn first(
        &mut self,
        control: bool,
        reply_to: &str,
        command: &str,
        data: &str,
    ) -> bool {
        let key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (reply_to, command, data).hash(&mut h);
            h.finish()
        };
        let (mine, other) = if control { (0, 1) } else { (1, 0) };
        let other = &mut self.paths[other];
        if other.set.remove(&key) {
            // Leave the order entry; it only ever points at keys that may be gone.
            return false;
        }
        self.paths[mine].insert(key);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_on_the_other_path_is_dropped_once() {
        let mut a = Answered::default();
        assert!(a.first(true, "reply_to_1", "alive", "{}"));
        assert!(!a.first(false, "reply_to_1", "alive", "{}"));
        // Dropped once only: a third copy on the channels is answered.
        assert!(a.first(false, "reply_to_1", "alive", "{}"));
        // The other way round.
        assert!(a.first(false, "reply_to_2", "alive", "{}"));
        assert!(!a.first(true, "reply_to_2", "alive", "{}"));
        // Repeated on one path: always answered.
        assert!(a.first(false, "reply_to_3", "alive", "{}"));
        assert!(a.first(false, "reply_to_3", "alive", "{}"));
        // Another command on the same reply channel is another command.
        assert!(a.first(true, "reply_to_4", "alive", "{}"));
        assert!(a.first(false, "reply_to_4", "running", "{}"));
    }

    #[test]
    fn each_path_stays_bounded() {
        let mut a = Answered::default();
        assert!(a.first(true, "reply_to_old", "alive", "{}"));
        for i in 0..Answered::CAP {
            a.first(true, &format!("reply_to_{i}"), "alive", "{}");
        }
        assert!(a.paths[0].set.len() <= Answered::CAP);
        assert!(a.paths[0].order.len() <= Answered::CAP);
        // Forgotten: its copy on the channels is answered.
        assert!(a.first(false, "reply_to_old", "alive", "{}"));
    }

    #[test]
    fn control_channels_skip_names_too_long_and_duplicates() {
        let long = "c".repeat(60);
        let got = control_channels(&["a".into(), long, "a".into()]);
        assert_eq!(got, vec!["a_control".to_owned()]);
    }
}
