//! What a worker does with a job: run it to its end on its own thread, catching panics. Every
//! pool's workers (threads or processes) share it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use serde_json::Value;

use crate::call::Outcome;
use crate::context::{ChildSink, TaskContext};
use crate::pool::Job;
use crate::task::{Invocation, TaskOutput};

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Runs one job to its end on the current thread (with `rt` for async tasks), catching panics:
/// what every pool's worker does with a job.
pub fn run_job(
    rt: &tokio::runtime::Runtime,
    job: Job,
    sink: Option<Arc<dyn ChildSink>>,
) -> (Outcome, Option<Value>, Option<String>) {
    let task = job.task;
    let context = TaskContext::new(job.uuid.clone(), task.name(), sink).with_attempt(job.attempt);
    let invocation = Invocation {
        uuid: job.uuid,
        args: job.args,
        context,
    };
    let result: std::thread::Result<TaskOutput> =
        catch_unwind(AssertUnwindSafe(|| rt.block_on(task.run(invocation))));
    match result {
        Ok(Ok(value)) => (Outcome::Ok, Some(value), None),
        Ok(Err(failure)) => (Outcome::Error, None, Some(failure.0)),
        Err(payload) => (Outcome::Panic, None, Some(panic_message(&*payload))),
    }
}
