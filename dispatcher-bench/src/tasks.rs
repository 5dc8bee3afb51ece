//! The tasks the benchmarks run (the same registry in the service and in its workers).

use dispatcher_core::{task, TaskRegistry};

/// Does nothing: measures the dispatcher's own cost per Call.
#[task(name = "bench.noop")]
pub fn noop() {}

/// The registry of every bench task.
pub fn registry() -> TaskRegistry {
    TaskRegistry::new().register::<noop>()
}
