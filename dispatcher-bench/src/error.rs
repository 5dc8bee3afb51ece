//! The bench's error type.

/// What can stop a benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The scenario name is not known.
    #[error("unknown scenario {name:?}; available: {available}")]
    UnknownScenario {
        /// The name given.
        name: String,
        /// Implemented scenarios.
        available: String,
    },
    /// `serve` mode ended normally: there is no report to print.
    #[error("served")]
    Served,
    /// The dispatcher failed.
    #[error("{0}")]
    Dispatcher(#[from] dispatcher_core::Error),
    /// The service failed.
    #[error(transparent)]
    Service(#[from] dispatcher_runtime::Error),
    /// The async runtime could not start.
    #[error("could not start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The run did not go as it must for its figures to mean anything.
    #[error("{0}")]
    Run(String),
    /// The broker failed.
    #[error("{0}")]
    Broker(#[from] dispatcher_broker_pg::Error),
    /// A database statement failed.
    #[error("{what}: {}", db_detail(source))]
    Db {
        /// What was being done.
        what: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The service process could not be run or failed.
    #[error("{0}")]
    Server(#[from] dispatcher_server::Error),
    /// The report could not be encoded.
    #[error("could not encode the report: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The server's message when there is one (the driver's `Display` says only "db error").
fn db_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{e}: {}: {}", d.severity(), d.message()),
        None => e.to_string(),
    }
}

impl BenchError {
    /// The process exit status for this error: 2 for a usage error, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            BenchError::UnknownScenario { .. } => 2,
            BenchError::Served => 0,
            _ => 1,
        }
    }
}

/// Shorthand for results of the bench.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
