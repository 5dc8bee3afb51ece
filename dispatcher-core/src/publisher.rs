//! Publishing tasks: typed [`Submission`]s through publish hooks to a broker.

use std::fmt;
use std::sync::Arc;

use crate::broker::{self, Broker};
use crate::call::{new_uuid, now_epoch};
use crate::error::Result;
use crate::hook::{HookDecision, Outgoing, PublishHook};
use crate::message::TaskMessage;
use crate::submission::Submission;
use crate::task::Task;

impl<T: Task> Submission<T> {
    /// Publishes through `publisher` (same as [`Publisher::publish`]).
    pub async fn publish(self, publisher: &Publisher) -> Result<Published> {
        publisher.publish(self).await
    }
}

/// What became of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Published {
    /// The broker accepted the message.
    Sent {
        /// The Call's uuid.
        uuid: String,
        /// Where it went.
        channel: String,
    },
    /// A publish hook canceled it; nothing was sent.
    Skipped {
        /// The uuid it would have had.
        uuid: String,
        /// The hook's reason.
        reason: String,
    },
}

impl Published {
    /// The Call's uuid.
    pub fn uuid(&self) -> &str {
        match self {
            Published::Sent { uuid, .. } | Published::Skipped { uuid, .. } => uuid,
        }
    }

    /// True when the message was sent.
    pub fn was_sent(&self) -> bool {
        matches!(self, Published::Sent { .. })
    }
}

/// Publishes task messages through hooks to a broker. Cheap to clone.
///
/// ```no_run
/// # async fn demo(broker: std::sync::Arc<dyn dispatcher_core::Broker>) -> dispatcher_core::Result<()> {
/// use dispatcher_core::{task, Publisher};
///
/// #[task(name = "docs.add")]
/// fn add(a: i64, b: i64) -> i64 { a + b }
///
/// let publisher = Publisher::new(broker, "dispatcher_demo")?;
/// let sent = add::call(1, 2).publish(&publisher).await?;
/// println!("published {}", sent.uuid());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Publisher {
    broker: Arc<dyn Broker>,
    hooks: Arc<Vec<Arc<dyn PublishHook>>>,
    default_channel: String,
    signing: Option<crate::signing::SigningKey>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("default_channel", &self.default_channel)
            .field("hooks", &self.hooks.len())
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher sending to `default_channel` unless a task or submission says otherwise.
    pub fn new(broker: Arc<dyn Broker>, default_channel: impl Into<String>) -> Result<Self> {
        let default_channel = default_channel.into();
        broker::validate_channel(&default_channel)?;
        Ok(Publisher {
            broker,
            hooks: Arc::new(Vec::new()),
            default_channel,
            signing: None,
        })
    }

    /// Adds a publish hook; hooks run in the order added.
    pub fn with_hook(mut self, hook: impl PublishHook) -> Self {
        Arc::make_mut(&mut self.hooks).push(Arc::new(hook));
        self
    }

    /// Signs every message with `key` (see [`crate::signing`]).
    pub fn with_signing(mut self, key: crate::signing::SigningKey) -> Self {
        self.signing = Some(key);
        self
    }

    fn seal(&self, payload: String) -> Result<String> {
        match &self.signing {
            Some(k) => k.sign(&payload),
            None => Ok(payload),
        }
    }

    /// Adds a shared publish hook (one the caller keeps a handle to).
    pub fn with_shared_hook(mut self, hook: Arc<dyn PublishHook>) -> Self {
        Arc::make_mut(&mut self.hooks).push(hook);
        self
    }

    /// The default channel.
    pub fn default_channel(&self) -> &str {
        &self.default_channel
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// Publishes a typed submission.
    pub async fn publish<T: Task>(&self, submission: Submission<T>) -> Result<Published> {
        let (channel, message) = submission.into_message(&self.default_channel)?;
        self.publish_message(channel, message).await
    }

    /// Publishes an untyped message (for tools that relay messages they did not build); hooks
    /// run as for typed ones.
    pub async fn publish_message(
        &self,
        channel: impl Into<String>,
        message: TaskMessage,
    ) -> Result<Published> {
        let mut out = Outgoing {
            channel: channel.into(),
            message,
        };
        out.message.uuid.get_or_insert_with(new_uuid);
        if let Some(skip) = self.run_hooks(&mut out) {
            return Ok(skip);
        }
        out.message.time_pub = Some(now_epoch());
        let payload = out.message.to_json()?;
        let payload = self.seal(payload)?;
        broker::send(&*self.broker, &out.channel, &payload).await?;
        for hook in self.hooks.iter() {
            hook.after_publish(&out);
        }
        Ok(Published::Sent {
            uuid: out.message.uuid.clone().unwrap_or_default(),
            channel: out.channel,
        })
    }

    /// Publishes many submissions of one task in one broker batch (one transaction on
    /// PostgreSQL). Returns one result per submission, in order.
    pub async fn publish_batch<T: Task>(
        &self,
        submissions: impl IntoIterator<Item = Submission<T>>,
    ) -> Result<Vec<Published>> {
        let mut results = Vec::new();
        let mut sent = Vec::new();
        let mut batch = Vec::new();
        let now = now_epoch();
        for s in submissions {
            let (channel, message) = s.into_message(&self.default_channel)?;
            let mut out = Outgoing { channel, message };
            if let Some(skip) = self.run_hooks(&mut out) {
                results.push(skip);
                continue;
            }
            out.message.time_pub = Some(now);
            batch.push((out.channel.clone(), self.seal(out.message.to_json()?)?));
            results.push(Published::Sent {
                uuid: out.message.uuid.clone().unwrap_or_default(),
                channel: out.channel.clone(),
            });
            sent.push(out);
        }
        broker::send_batch(&*self.broker, batch).await?;
        for out in &sent {
            for hook in self.hooks.iter() {
                hook.after_publish(out);
            }
        }
        Ok(results)
    }

    fn run_hooks(&self, out: &mut Outgoing) -> Option<Published> {
        for hook in self.hooks.iter() {
            if let HookDecision::Skip(reason) = hook.before_publish(out) {
                tracing::debug!(task = %out.message.task, %reason, "publish skipped by hook");
                return Some(Published::Skipped {
                    uuid: out.message.uuid.clone().unwrap_or_default(),
                    reason,
                });
            }
        }
        None
    }
}
