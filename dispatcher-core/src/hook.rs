//! Publish hooks: called with every outgoing task message before it is published.

use crate::message::TaskMessage;

/// A task message on its way out, which a hook may change.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The channel it will be published on.
    pub channel: String,
    /// The message.
    pub message: TaskMessage,
}

/// What a hook decided.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HookDecision {
    /// Go on (with the message as the hook left it).
    Continue,
    /// Do not publish; the caller gets [`crate::Published::Skipped`] with this reason.
    Skip(String),
}

/// App-wide hook run by the [`crate::Publisher`] before every publish.
///
/// Every method has a default that does nothing, so an implementation overrides only what it
/// needs. Hooks run in the order they were added; the first `Skip` stops the rest.
///
/// ```
/// use dispatcher_core::{HookDecision, Outgoing, PublishHook};
///
/// /// Tags every message with a correlation id.
/// struct Tag;
/// impl PublishHook for Tag {
///     fn before_publish(&self, out: &mut Outgoing) -> HookDecision {
///         out.message.guid.get_or_insert_with(|| "batch-7".to_owned());
///         HookDecision::Continue
///     }
/// }
/// ```
pub trait PublishHook: Send + Sync + 'static {
    /// Inspects, changes or cancels the message.
    fn before_publish(&self, outgoing: &mut Outgoing) -> HookDecision {
        let _ = outgoing;
        HookDecision::Continue
    }

    /// Called after the broker accepted the message.
    fn after_publish(&self, outgoing: &Outgoing) {
        let _ = outgoing;
    }
}
