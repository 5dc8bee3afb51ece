//! The testkit's error type.

use std::time::Duration;

/// What can go wrong in the testkit's fallible helpers.
///
/// Assertions ([`crate::expect`]) panic instead: they are test assertions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// Fewer Calls than wanted finished in time.
    #[error(
        "timed out after {waited:?} waiting for {wanted} finished Calls ({finished} finished); \
         history so far:\n{history}"
    )]
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// Finished Calls wanted.
        wanted: usize,
        /// Finished Calls seen.
        finished: u64,
        /// The history at the time, as a table.
        history: String,
    },
    /// The service stopped before enough Calls finished.
    #[error(
        "the service stopped while waiting for {wanted} finished Calls ({finished} finished); \
         history so far:\n{history}"
    )]
    ServiceStopped {
        /// Finished Calls wanted.
        wanted: usize,
        /// Finished Calls seen.
        finished: u64,
        /// The history at the time, as a table.
        history: String,
    },
    /// A broker failed a conformance check.
    #[error("broker conformance check `{check}` failed: {problem}")]
    Conformance {
        /// The check's name (see [`crate::conformance::Check::name`]).
        check: &'static str,
        /// What the broker did wrong.
        problem: String,
    },
    /// A pool failed a conformance check.
    #[error("pool conformance check `{check}` failed: {problem}")]
    PoolConformance {
        /// The check's name (see [`crate::conformance::pool::PoolCheck::name`]).
        check: &'static str,
        /// What the pool did wrong.
        problem: String,
    },
    /// No PostgreSQL server could be had, or the fixture's database could not be made.
    #[error("{0}")]
    Postgres(String),
    /// An error from `dispatcher-core`.
    #[error(transparent)]
    Core(#[from] dispatcher_core::Error),
    /// An error from `dispatcher-runtime` (the service).
    #[error(transparent)]
    Runtime(#[from] dispatcher_runtime::Error),
}
