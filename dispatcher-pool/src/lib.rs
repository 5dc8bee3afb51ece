//! A pool of worker **processes** for the dispatcher: a task can be killed on timeout or cancel,
//! and a crash, abort or leak in task code never takes the service down.
//!
//! Workers are the application's own executable started again with a marker in the environment.
//! The application calls [`run_if_worker`] first thing in `main`; in a worker it runs the worker
//! loop and returns the exit code, elsewhere it returns `None` at once.
//!
//! ```no_run
//! use std::process::ExitCode;
//! use dispatcher_core::{task, TaskRegistry};
//! use dispatcher_runtime::Service;
//! use dispatcher_pool::{run_if_worker, ProcessPool};
//!
//! #[task(name = "app.resize", timeout = 30)]
//! fn resize(path: String, width: u32) -> Result<(), String> {
//!     Ok(())
//! }
//!
//! fn main() -> ExitCode {
//!     let registry = TaskRegistry::new().register::<resize>();
//!     if let Some(code) = run_if_worker(&registry) {
//!         return code; // this process was a worker
//!     }
//!     let rt = tokio::runtime::Runtime::new().unwrap();
//!     rt.block_on(async {
//!         let service = Service::builder()
//!             .registry(registry)
//!             .pool(ProcessPool::new(4))
//!             .start()
//!             .await
//!             .unwrap();
//!         service.join().await.unwrap();
//!     });
//!     ExitCode::SUCCESS
//! }
//! ```
//!
//! IPC is length-prefixed JSON over a Unix socket in a private temporary directory
//! (`dispatcher-pool-<pid>-<random>`, removed when the pool stops, fails to start or is dropped;
//! those left by a service killed with SIGKILL are removed by the next pool's start: see
//! [`remove_stale_socket_dirs`]; see [`protocol`]); the worker's stdout and stderr are logged by the parent, line by line, with the
//! worker id (target `dispatcher_pool::worker_output`).
//!
//! While Calls wait in the service's queue, a busy worker is sent its next job before its running
//! one ends, so it goes straight on to it instead of sleeping until it is woken. Such a job never
//! waits while another worker is free (it is taken back and runs there), survives whatever ends the
//! job before it (timeout, cancel, death: it runs on another worker), and its Call's start, worker
//! and timeout are those of when the worker actually got to it.
#![warn(missing_docs)]

mod claim;
mod error;
mod limits;
mod link;
mod pipeline;
mod pool;
pub mod protocol;
mod readers;
mod sched;
mod socket_dir;
mod spawn;
mod supervisor;
mod worker;

pub use error::{Error, Result};
pub use pool::{ProcessPool, ProcessPoolConfig};
pub use sched::WorkerScheduling;
pub use socket_dir::{remove_stale_socket_dirs, SOCKET_DIR_PREFIX};
pub use worker::{is_worker, run_if_worker};
