//! One error type over every crate the facade re-exports.

/// Anything that can fail in the crates behind this facade. Each variant carries its crate's
/// error, whose message names the offending value; `?` converts from every one of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The contract: encoding, arguments, a broker or pool call, a signature.
    #[error(transparent)]
    Core(#[from] dispatcher_core::Error),
    /// The service.
    #[error(transparent)]
    Runtime(#[from] dispatcher_runtime::Error),
    /// The PostgreSQL broker.
    #[cfg(feature = "postgres")]
    #[error(transparent)]
    Postgres(#[from] dispatcher_broker_pg::Error),
    /// The process pool.
    #[cfg(feature = "process-pool")]
    #[error(transparent)]
    ProcessPool(#[from] dispatcher_pool::Error),
    /// The server.
    #[cfg(feature = "server")]
    #[error(transparent)]
    Server(#[from] dispatcher_server::Error),
}

impl From<dispatcher_core::BrokerError> for Error {
    /// A broker's error, as the contract wraps it ([`dispatcher_core::Error::Broker`]).
    fn from(e: dispatcher_core::BrokerError) -> Self {
        Error::Core(e.into())
    }
}

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
