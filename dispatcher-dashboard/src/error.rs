//! The dashboard's errors.

/// What went wrong starting the dashboard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is wrong.
    #[error("dashboard configuration: {0}")]
    Config(String),
    /// The address could not be bound.
    #[error("dashboard: cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The dashboard's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
