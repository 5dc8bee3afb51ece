//! Every option at once, with the core crate reached through a re-export (`crate = "..."`).

use std::time::Duration;

use dispatcher_core::{OnDuplicate, Task, TaskContext};

mod reexport {
    pub use dispatcher_core as core_again;
}

#[reexport::core_again::task(
    name = "pass.everything",
    timeout = 1.5,
    on_duplicate = "queue_one",
    queue = "math",
    context,
    max_attempts = 6,
    backoff = 2.5,
    unique = true,
    concurrency = 3,
    crate = "crate::reexport::core_again"
)]
async fn everything(ctx: &TaskContext, a: i64, b: Vec<String>) -> Result<String, String> {
    Ok(format!("{} {a} {}", ctx.task(), b.join(",")))
}

#[dispatcher_core::task(name = "pass.whole_seconds", timeout = 30, on_duplicate = "serial")]
fn whole_seconds() {}

#[dispatcher_core::task(name = "pass.parallel", on_duplicate = "parallel", context = false)]
fn parallel() {}

#[dispatcher_core::task(name = "pass.discard", on_duplicate = "discard", context = true)]
fn discard(_ctx: &dispatcher_core::TaskContext) {}

fn main() {
    let d = everything::descriptor();
    assert_eq!(<everything as Task>::NAME, "pass.everything");
    assert_eq!(d.name(), "pass.everything");
    // The context parameter is not one of the task's parameters.
    assert_eq!(d.params(), ["a", "b"]);
    let config = d.config();
    assert_eq!(config.timeout, Some(Duration::from_millis(1500)));
    assert_eq!(config.on_duplicate, OnDuplicate::QueueOne);
    assert_eq!(config.queue, Some("math"));
    assert!(config.context);
    assert_eq!(config.max_attempts, Some(6));
    assert_eq!(config.backoff, Some(Duration::from_millis(2500)));
    assert!(config.unique);
    assert_eq!(config.concurrency, Some(3));

    // The declared queue is the submission's default channel.
    let (channel, message) = everything::call(1, vec!["x".into()])
        .into_message("default")
        .unwrap();
    assert_eq!(channel, "math");
    assert_eq!(message.args.len(), 2);

    let config = whole_seconds::descriptor().config();
    assert_eq!(config.timeout, Some(Duration::from_secs(30)));
    assert_eq!(config.on_duplicate, OnDuplicate::Serial);
    assert!(!config.context);

    assert_eq!(
        parallel::descriptor().config().on_duplicate,
        OnDuplicate::Parallel
    );
    assert!(!parallel::descriptor().config().context);
    assert_eq!(
        discard::descriptor().config().on_duplicate,
        OnDuplicate::Discard
    );
    assert!(discard::descriptor().config().context);
}
