//! The tasks the benchmarks run (the same registry in the service and in its workers).

use dispatcher_core::{task, TaskRegistry};

/// Does nothing: measures the dispatcher's own cost per Call.
#[task(name = "bench.noop")]
pub fn noop() {}

/// Sleeps: the flood of `control --flood`, tasks that keep the workers busy and the rest waiting.
#[task(name = "bench.sleep")]
pub fn sleep(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// The registry of every bench task.
pub fn registry() -> TaskRegistry {
    TaskRegistry::new().register::<noop>().register::<sleep>()
}
