//! A `context` task submits another task; the child runs on the same service and records its
//! parent.

use std::time::Duration;

use dispatcher_core::{task, CallFilter, Outcome, Task, TaskContext, TaskRegistry};
use dispatcher_runtime::{InProcessPool, Service};

#[task(name = "pass.other")]
fn other(n: i64) -> i64 {
    n + 1
}

#[task(name = "pass.parent", context)]
fn parent(ctx: &TaskContext, times: u32) -> Result<Vec<String>, dispatcher_core::Error> {
    assert_eq!(ctx.task(), "pass.parent");
    (0..times).map(|_| ctx.submit(other::call(1))).collect()
}

/// The context may also be written with its full path, and the task may be async.
#[task(name = "pass.parent_async", context)]
async fn parent_async(ctx: &dispatcher_core::TaskContext) -> String {
    ctx.uuid().to_owned()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> dispatcher_runtime::Result<()> {
    assert!(parent::descriptor().config().context);
    assert_eq!(parent::descriptor().params(), ["times"]);
    assert_eq!(parent_async::descriptor().params().len(), 0);
    assert!(parent_async::descriptor().config().context);

    let service = Service::builder()
        .registry(
            TaskRegistry::new()
                .register::<parent>()
                .register::<parent_async>()
                .register::<other>(),
        )
        .pool(InProcessPool::new(2))
        .start()
        .await?;
    let parent_uuid = service.submit(parent::call(2)).await?;
    let async_uuid = service.submit(parent_async::call()).await?;
    service
        .wait_for_finished(4, Duration::from_secs(10))
        .await?;

    let calls = service.history(&CallFilter::default());
    let parent_call = calls
        .iter()
        .find(|c| c.uuid == parent_uuid)
        .expect("parent call");
    assert_eq!(parent_call.outcome, Some(Outcome::Ok), "{parent_call:?}");
    let children: Vec<_> = calls
        .iter()
        .filter(|c| c.task == <other as Task>::NAME)
        .collect();
    assert_eq!(children.len(), 2);
    for child in children {
        assert_eq!(child.parent_uuid.as_deref(), Some(parent_uuid.as_str()));
        assert_eq!(child.result, Some(serde_json::json!(2)));
    }
    let async_call = calls
        .iter()
        .find(|c| c.uuid == async_uuid)
        .expect("async call");
    assert_eq!(async_call.result, Some(serde_json::json!(async_uuid)));
    service.shutdown().await
}
