//! Quickstart: starts a service on the in-memory broker with a pool of worker threads, publishes
//! a showcase of tasks, waits for them and prints the Call history.
//!
//! `cargo run -p dispatcher-examples --bin quickstart`
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use dispatcher_core::{task, InProcessPool, Publisher, Service, TaskContext, TaskRegistry};
use dispatcher_testkit::MemoryBroker;

#[task(name = "demo.echo")]
fn echo(value: serde_json::Value) -> serde_json::Value {
    value
}

#[task(name = "demo.add")]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[task(name = "demo.sleep")]
async fn sleep(seconds: f64) {
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
}

#[task(name = "demo.slow", timeout = 0.5)]
fn slow() {
    std::thread::sleep(Duration::from_secs(5));
}

#[task(name = "demo.fail")]
fn fail(message: String) -> Result<(), String> {
    Err(message)
}

#[task(name = "demo.panic")]
fn boom() {
    panic!("this task panics on purpose");
}

#[task(name = "demo.exclusive", on_duplicate = "discard")]
fn exclusive(seconds: f64) {
    std::thread::sleep(Duration::from_secs_f64(seconds));
}

#[task(name = "demo.fanout", context)]
fn fanout(ctx: &TaskContext, n: u32) -> Result<(), dispatcher_core::Error> {
    for i in 0..n {
        ctx.submit(echo::call(serde_json::json!({ "child": i })))?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .init();
    // Silence the default panic message of demo.panic; its Call records it.
    std::panic::set_hook(Box::new(|_| {}));

    let broker = MemoryBroker::new();
    let registry = TaskRegistry::collected()?;
    let service = Service::builder()
        .registry(registry)
        .broker(Arc::new(broker.clone()))
        .channels(["quickstart"])
        .pool(InProcessPool::new(4))
        .node_id("quickstart")
        .start()
        .await?;
    println!("service started on the in-memory broker, channel `quickstart`, 4 worker threads");

    let publisher = Publisher::new(Arc::new(broker), "quickstart")?;
    publisher
        .publish(echo::call(serde_json::json!("hello")))
        .await?;
    publisher.publish(add::call(2, 40)).await?;
    publisher.publish(sleep::call(0.2)).await?;
    publisher.publish(slow::call()).await?;
    publisher
        .publish(fail::call("something went wrong".into()))
        .await?;
    publisher.publish(boom::call()).await?;
    publisher.publish(exclusive::call(0.3)).await?;
    publisher.publish(exclusive::call(0.3)).await?;
    publisher
        .publish(add::call(1, 1).delay(Duration::from_millis(300)))
        .await?;
    publisher.publish(fanout::call(2)).await?;
    publisher
        .publish_message(
            "quickstart",
            dispatcher_core::TaskMessage::new("demo.unknown"),
        )
        .await?;

    // 11 published + 2 children of demo.fanout
    service
        .wait_for_finished(13, Duration::from_secs(10))
        .await?;
    let calls = service.history(&Default::default());
    println!("\n{}", dispatcher_examples::call_table(&calls));
    service.shutdown().await?;
    Ok(())
}
