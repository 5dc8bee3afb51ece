//! The crate's one error type.

use std::time::Duration;

use crate::broker::BrokerError;

/// Everything that can go wrong in the contract: decoding, binding, publishing, brokers, pools.
///
/// Every message names the offending value and, where there is one, the way to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The payload is not valid JSON or not a message of the wire format.
    #[error("malformed message: {reason}; payload starts with {preview:?}")]
    Malformed {
        /// What was wrong.
        reason: String,
        /// The first bytes of the payload.
        preview: String,
    },
    /// A payload or one of its parts is larger than a configured limit.
    #[error("{what} of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Which size was checked.
        what: &'static str,
        /// The size seen.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A chunk envelope was invalid or could not be assembled.
    #[error("chunk error: {0}")]
    Chunk(String),
    /// No task of this name is registered.
    #[error("unknown task {name:?}: no task of this name is registered in this service")]
    UnknownTask {
        /// The name asked for.
        name: String,
    },
    /// Two tasks were registered under one name.
    #[error("task name {name:?} is registered twice; task names must be unique")]
    DuplicateTask {
        /// The name registered twice.
        name: String,
    },
    /// The arguments of a message do not fit the task's parameters.
    #[error("task {task:?}: {problem}")]
    Arguments {
        /// The task.
        task: String,
        /// What is wrong, naming the argument.
        problem: String,
    },
    /// A broker failed, or a channel name is not usable
    /// ([`BrokerError::InvalidChannel`]); it displays as the [`BrokerError`] it wraps.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The pool failed.
    #[error("pool error: {0}")]
    Pool(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A value could not be serialized to JSON.
    #[error("could not serialize {what}: {source}")]
    Serialize {
        /// What was serialized.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A bounded buffer is full; the request was not accepted.
    #[error("{what} is full ({capacity} entries); try again later")]
    Full {
        /// Which buffer.
        what: &'static str,
        /// Its capacity.
        capacity: usize,
    },
    /// A signature is missing, wrong or too old.
    #[error("signature check failed: {0}")]
    Signature(String),
    /// Waiting for something took longer than allowed.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

impl Error {
    /// Wraps any error (or a message) as a broker error: [`BrokerError::Other`] in
    /// [`Error::Broker`]. Build the [`BrokerError`] itself to say more (it converts with `?` or
    /// `From`).
    pub fn broker(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Broker(BrokerError::other(e))
    }

    /// Wraps any error as a pool error.
    pub fn pool(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Pool(e.into())
    }

    pub(crate) fn malformed(reason: impl Into<String>, payload: &str) -> Self {
        Error::Malformed {
            reason: reason.into(),
            preview: preview(payload, 120),
        }
    }
}

/// The first `max` bytes of `s`, cut at a character boundary.
pub(crate) fn preview(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// An error's message followed by those of its sources that it does not already include, joined
/// with `: ` (drivers often keep the useful part, "connection refused", in a source).
///
/// ```
/// let io = std::io::Error::other("refused");
/// let e = dispatcher_core::Error::broker(io);
/// assert_eq!(dispatcher_core::error_chain(&e), "broker error: refused");
/// ```
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        next = s.source();
    }
    out
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
