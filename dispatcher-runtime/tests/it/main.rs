//! End-to-end tests of the service loop, run in-process with the testkit's memory broker and the
//! in-process pool; and of the runtime's own in-memory broker (`memory`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attempts;
mod control;
mod history_bytes;
mod hostile;
mod memory;
mod outcomes;
mod pipelined;
mod policy;
mod pool_conformance;
mod publish;
mod resilience;
mod settle;
mod signing;
mod tasks;

use std::time::Duration;

use dispatcher_core::{Registry, TaskRegistry};
use dispatcher_testkit::TestService;

pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn registry() -> TaskRegistry {
    use tasks::*;
    TaskRegistry::new()
        .register::<double>()
        .register::<fail>()
        .register::<boom>()
        .register::<nap>()
        .register::<slow>()
        .register::<exclusive>()
        .register::<one_at_a_time>()
        .register::<keep_one>()
        .register::<fanout>()
        .register::<greet>()
        .register::<routed>()
        .register::<attempt_number>()
}

pub(crate) async fn service(workers: usize) -> TestService {
    let r = registry();
    assert!(r.check().is_ok());
    TestService::builder()
        .registry(r)
        .pool(dispatcher_runtime::InProcessPool::new(workers))
        .start()
        .await
        .expect("service starts")
}
