//! Publish hooks for tests: [`RecordingHook`] records what is published, [`SkipAllHook`] turns
//! publishing off and records what it kept from being sent.
//!
//! Both are cheap handles: clone one, give the clone to the [`dispatcher_core::Publisher`], and
//! read the record from the one you kept.
//!
//! ```
//! use dispatcher_core::{task, Published, Publisher};
//! use dispatcher_testkit::{MemoryBroker, SkipAllHook};
//!
//! #[task(name = "docs.notify")]
//! fn notify(user: u64) {}
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> dispatcher_core::Result<()> {
//! let skip = SkipAllHook::new();
//! let publisher = Publisher::new(std::sync::Arc::new(MemoryBroker::new()), "app")?
//!     .with_hook(skip.clone());
//! let outcome = publisher.publish(notify::call(7)).await?;
//! assert!(matches!(outcome, Published::Skipped { .. }));
//! assert_eq!(skip.tasks(), ["docs.notify"]);
//! # Ok(()) }
//! ```
//!
//! The records grow without bound (every message is kept until [`RecordingHook::clear`]); they are
//! meant for tests, which publish a bounded number of messages.

use std::sync::{Arc, Mutex, MutexGuard};

use dispatcher_core::{HookDecision, Outgoing, PublishHook};

/// The reason [`SkipAllHook`] gives for every message it skips.
pub const SKIP_REASON: &str = "publishing is disabled (SkipAllHook)";

#[derive(Debug, Default)]
struct Record {
    messages: Mutex<Vec<Outgoing>>,
}

impl Record {
    fn lock(&self) -> MutexGuard<'_, Vec<Outgoing>> {
        // A poisoned lock only means a test panicked while holding it; the record stays usable.
        self.messages.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, out: &Outgoing) {
        self.lock().push(out.clone());
    }

    fn all(&self) -> Vec<Outgoing> {
        self.lock().clone()
    }

    fn tasks(&self) -> Vec<String> {
        self.lock().iter().map(|o| o.message.task.clone()).collect()
    }
}

/// Records every outgoing message it sees and lets it through.
///
/// It records in [`PublishHook::before_publish`], so it sees the message as the hooks added
/// before it left it, and also messages a later hook skips or the broker then fails to send.
/// Clones share one record.
#[derive(Debug, Clone, Default)]
pub struct RecordingHook {
    record: Arc<Record>,
}

impl RecordingHook {
    /// A hook with an empty record.
    pub fn new() -> Self {
        RecordingHook::default()
    }

    /// Every message seen so far, oldest first.
    pub fn recorded(&self) -> Vec<Outgoing> {
        self.record.all()
    }

    /// The task names of the messages seen so far, oldest first.
    pub fn tasks(&self) -> Vec<String> {
        self.record.tasks()
    }

    /// How many messages were seen.
    pub fn len(&self) -> usize {
        self.record.lock().len()
    }

    /// True when no message was seen.
    pub fn is_empty(&self) -> bool {
        self.record.lock().is_empty()
    }

    /// Forgets what was recorded.
    pub fn clear(&self) {
        self.record.lock().clear();
    }
}

impl PublishHook for RecordingHook {
    fn before_publish(&self, outgoing: &mut Outgoing) -> HookDecision {
        self.record.push(outgoing);
        HookDecision::Continue
    }
}

/// Skips every message (the publisher returns [`dispatcher_core::Published::Skipped`] with
/// [`SKIP_REASON`]) and records what it skipped: turns publishing off in unit tests of code that
/// publishes. Clones share one record.
#[derive(Debug, Clone, Default)]
pub struct SkipAllHook {
    record: Arc<Record>,
}

impl SkipAllHook {
    /// A hook with an empty record.
    pub fn new() -> Self {
        SkipAllHook::default()
    }

    /// Every message skipped so far, oldest first.
    pub fn skipped(&self) -> Vec<Outgoing> {
        self.record.all()
    }

    /// The task names of the messages skipped so far, oldest first.
    pub fn tasks(&self) -> Vec<String> {
        self.record.tasks()
    }

    /// How many messages were skipped.
    pub fn len(&self) -> usize {
        self.record.lock().len()
    }

    /// True when nothing was skipped.
    pub fn is_empty(&self) -> bool {
        self.record.lock().is_empty()
    }

    /// Forgets what was recorded.
    pub fn clear(&self) {
        self.record.lock().clear();
    }
}

impl PublishHook for SkipAllHook {
    fn before_publish(&self, outgoing: &mut Outgoing) -> HookDecision {
        self.record.push(outgoing);
        HookDecision::Skip(SKIP_REASON.to_owned())
    }
}
