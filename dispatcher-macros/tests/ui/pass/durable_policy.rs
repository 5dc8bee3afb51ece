//! The durable-queue options: their values reach the task's configuration, and a task that leaves
//! them out gets the defaults.

use std::time::Duration;

use dispatcher_core::task::{Invocation, DEFAULT_BACKOFF, DEFAULT_MAX_ATTEMPTS, MAX_BACKOFF};
use dispatcher_core::{task, Task, TaskContext};
use serde_json::json;

#[task(
    name = "pass.durable",
    max_attempts = 5,
    backoff = 0.25,
    unique = true,
    concurrency = 2
)]
fn durable(n: i64) -> i64 {
    n
}

#[task(name = "pass.whole_backoff", backoff = 3600, unique, max_attempts = 1)]
fn whole_backoff() {}

#[task(name = "pass.not_unique", unique = false, concurrency = 4294967295)]
fn not_unique() {}

#[task(name = "pass.defaults")]
fn defaults() {}

#[task(name = "pass.attempt", context, max_attempts = 4)]
fn attempt(ctx: &TaskContext) -> u32 {
    ctx.attempt()
}

fn main() {
    let config = durable::descriptor().config();
    assert_eq!(config.max_attempts, Some(5));
    assert_eq!(config.attempts_allowed(), 5);
    assert_eq!(config.backoff, Some(Duration::from_millis(250)));
    assert!(config.unique);
    assert_eq!(config.concurrency, Some(2));
    assert_eq!(config.retry_delay(3, 1.0), Duration::from_secs(1));

    let config = whole_backoff::descriptor().config();
    assert_eq!(config.backoff, Some(MAX_BACKOFF));
    assert!(config.unique);
    assert_eq!(config.attempts_allowed(), 1);

    let config = not_unique::descriptor().config();
    assert!(!config.unique);
    assert_eq!(config.concurrency, Some(u32::MAX));

    let config = defaults::descriptor().config();
    assert_eq!(config.max_attempts, None);
    assert_eq!(config.attempts_allowed(), DEFAULT_MAX_ATTEMPTS);
    assert_eq!(config.backoff, None);
    assert_eq!(config.retry_delay(1, 1.0), DEFAULT_BACKOFF);
    assert!(!config.unique);
    assert_eq!(config.concurrency, None);

    // The task reads the attempt its context carries; a new context is a first run.
    let d = attempt::descriptor();
    assert_eq!(d.config().max_attempts, Some(4));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (context, expected) in [
        (TaskContext::new("u-1".into(), d.name(), None), 1),
        (TaskContext::new("u-2".into(), d.name(), None).with_attempt(3), 3),
    ] {
        let invocation = Invocation {
            uuid: context.uuid().to_owned(),
            args: vec![],
            context,
        };
        assert_eq!(rt.block_on(d.run(invocation)), Ok(json!(expected)));
    }
}
