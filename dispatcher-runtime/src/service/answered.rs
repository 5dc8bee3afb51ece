//! The control fast path's bookkeeping: which control channels a service reads ahead of tasks,
//! when it reads them (while its intake is paused, and for a while after), and which commands it
//! already answered (a client sends each command on a channel and on its control channel; the
//! service answers the copy it reads first and drops the other).

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

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

/// When the control subscriptions are held.
///
/// Only while they are needed: a command waits behind tasks only when the intake is paused, and a
/// control subscription costs (with PostgreSQL, a LISTEN connection of its own, which the server
/// wakes for every NOTIFY in the database). So they are opened when the intake pauses, and
/// dropped once it has not paused for [`ControlPath::LINGER`]. Commands sent before the
/// subscriptions are open travel on the channels only (answered in order with the tasks).
#[derive(Debug, Default)]
pub(super) struct ControlPath {
    open: bool,
    last_paused: Option<Instant>,
}

/// What the loop does with its control subscriptions after a turn.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ControlAction {
    Nothing,
    Open,
    Close,
}

impl ControlPath {
    /// How long the subscriptions stay after the intake last paused.
    pub(super) const LINGER: Duration = Duration::from_secs(30);

    /// Whether the subscriptions are (being) held; late ones are dropped when not.
    pub(super) fn is_open(&self) -> bool {
        self.open
    }

    /// After a turn of the loop: `paused` when the queue is at the intake pause.
    pub(super) fn after_turn(&mut self, paused: bool, now: Instant) -> ControlAction {
        if paused {
            self.last_paused = Some(now);
            if !self.open {
                self.open = true;
                return ControlAction::Open;
            }
        } else if self.open
            && self
                .last_paused
                .is_none_or(|t| now.saturating_duration_since(t) >= Self::LINGER)
        {
            self.open = false;
            return ControlAction::Close;
        }
        ControlAction::Nothing
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
    fn subscriptions_open_on_a_pause_and_close_after_the_linger() {
        let mut c = ControlPath::default();
        let t0 = Instant::now();
        assert_eq!(c.after_turn(false, t0), ControlAction::Nothing);
        assert_eq!(c.after_turn(true, t0), ControlAction::Open);
        assert!(c.is_open());
        assert_eq!(c.after_turn(true, t0), ControlAction::Nothing);
        let later = t0 + ControlPath::LINGER / 2;
        assert_eq!(c.after_turn(false, later), ControlAction::Nothing);
        // Paused again: the linger runs from this pause.
        assert_eq!(c.after_turn(true, later), ControlAction::Nothing);
        assert_eq!(
            c.after_turn(false, t0 + ControlPath::LINGER),
            ControlAction::Nothing
        );
        let gone = later + ControlPath::LINGER;
        assert_eq!(c.after_turn(false, gone), ControlAction::Close);
        assert!(!c.is_open());
        assert_eq!(c.after_turn(false, gone), ControlAction::Nothing);
        assert_eq!(c.after_turn(true, gone), ControlAction::Open);
    }

    #[test]
    fn control_channels_skip_names_too_long_and_duplicates() {
        let long = "c".repeat(60);
        let got = control_channels(&["a".into(), long, "a".into()]);
        assert_eq!(got, vec!["a_control".to_owned()]);
    }
}
