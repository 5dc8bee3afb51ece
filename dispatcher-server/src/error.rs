//! The crate's one error type.

/// Everything that can go wrong in `dispatcher-server`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The metrics endpoint could not be started.
    #[error("metrics endpoint on {address}: {reason}")]
    Metrics {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The service failed.
    #[error(transparent)]
    Service(#[from] dispatcher_runtime::Error),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] dispatcher_broker_pg::Error),
    /// The broker could not connect.
    #[error("PostgreSQL at {target}: {source}")]
    Connect {
        /// The connection string, passwords hidden
        /// ([`dispatcher_broker_pg::redact_connection_string`]).
        target: String,
        /// Why.
        #[source]
        source: dispatcher_broker_pg::Error,
    },
    /// The dashboard could not be started.
    #[error(transparent)]
    Dashboard(#[from] dispatcher_dashboard::Error),
    /// The tokio runtime could not be built ([`crate::service_runtime`]).
    #[error("the tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Signal handling could not be set up.
    #[error("signal handling: {0}")]
    Signals(#[source] std::io::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
