//! The crate's one error type.

/// Everything that can go wrong in `dispatcher-pool`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The private socket directory or its socket could not be made.
    #[error("cannot make the worker socket at {path:?}: {source} (set `ProcessPoolConfig::socket_parent` or TMPDIR to a writable directory)")]
    SocketDir {
        /// The directory or socket.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A scheduling policy name that is not one ([`crate::WorkerScheduling`]'s `FromStr`).
    #[error("unknown worker scheduling policy {0:?}: expected \"batch\" or \"normal\"")]
    UnknownScheduling(String),
    /// An I/O error on the worker socket or while starting a worker.
    #[error("worker I/O failed: {0}")]
    Io(#[source] std::io::Error),
    /// A frame could not be encoded.
    #[error("could not encode a worker frame: {0}")]
    Encode(#[source] serde_json::Error),
    /// A frame could not be decoded.
    #[error("could not decode a worker frame: {0}")]
    Decode(#[source] serde_json::Error),
    /// A frame is larger than the protocol allows.
    #[error("worker frame of {0} bytes exceeds the limit of 64 MiB")]
    FrameTooLarge(usize),
    /// The worker program could not be started.
    #[error("could not start worker program {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A worker did not connect back in time.
    #[error("worker {worker_id} (pid {pid}) did not connect within {secs:.1}s: does the program call `dispatcher_pool::run_if_worker` first thing in `main`?")]
    NoHello {
        /// The worker.
        worker_id: u32,
        /// Its pid.
        pid: u32,
        /// Seconds waited.
        secs: f64,
    },
    /// The worker environment is incomplete or wrong.
    #[error("worker environment: {0}")]
    Environment(String),
    /// A pool was started inside a worker process: the program did not call the worker entry.
    #[error("this process was started as a dispatcher worker ({var} is set) but is starting a pool itself: call `dispatcher_pool::run_if_worker(...)` first thing in `main`, before anything starts a service")]
    WorkerStartingPool {
        /// The marker variable.
        var: &'static str,
    },
    /// The file a worker shares with the pool to settle who owns a queued job could not be made
    /// or mapped.
    #[error("cannot use the worker claim file {path:?}: {source}")]
    Claim {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("invalid pool configuration: {0}")]
    Config(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for dispatcher_core::Error {
    fn from(e: Error) -> Self {
        dispatcher_core::Error::pool(e)
    }
}
