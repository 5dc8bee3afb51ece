//! The runtime's one error type.

use std::time::Duration;

/// Everything that can go wrong running a service.
///
/// Errors of the contract (a broker, a pool, a bad message) arrive wrapped as
/// [`Error::Core`]; every message names the offending value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the contract crate: a broker, a pool, encoding, a signature.
    #[error(transparent)]
    Core(#[from] dispatcher_core::Error),
    /// The service's configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The service has stopped and cannot take the request.
    #[error("the service is not running")]
    ServiceStopped,
    /// The service loop ended abnormally (a bug: please report it with the log).
    #[error("the service loop failed: {0}")]
    LoopFailed(String),
    /// Waiting for something took longer than allowed.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

impl From<dispatcher_core::BrokerError> for Error {
    /// A broker's error, as the contract wraps it ([`dispatcher_core::Error::Broker`]).
    fn from(e: dispatcher_core::BrokerError) -> Self {
        Error::Core(e.into())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
