//! Tasks used by the end-to-end tests.

use std::time::Duration;

use dispatcher_core::{task, TaskContext};

#[task(name = "t.double")]
pub fn double(x: i64) -> i64 {
    x * 2
}

#[task(name = "t.fail")]
pub fn fail(message: String) -> Result<(), String> {
    Err(message)
}

#[task(name = "t.boom")]
pub fn boom() {
    panic!("boom goes the task");
}

#[task(name = "t.nap")]
pub async fn nap(seconds: f64) -> f64 {
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    seconds
}

#[task(name = "t.slow", timeout = 0.2)]
pub fn slow() {
    std::thread::sleep(Duration::from_secs(3));
}

#[task(name = "t.exclusive", on_duplicate = "discard")]
pub fn exclusive(seconds: f64) {
    std::thread::sleep(Duration::from_secs_f64(seconds));
}

#[task(name = "t.serial", on_duplicate = "serial")]
pub fn one_at_a_time(seconds: f64) {
    std::thread::sleep(Duration::from_secs_f64(seconds));
}

#[task(name = "t.queue_one", on_duplicate = "queue_one")]
pub fn keep_one(seconds: f64) {
    std::thread::sleep(Duration::from_secs_f64(seconds));
}

#[task(name = "t.fanout", context)]
pub fn fanout(ctx: &TaskContext, n: u32) -> Result<Vec<String>, dispatcher_core::Error> {
    (0..n)
        .map(|i| ctx.submit(double::call(i64::from(i))))
        .collect()
}

#[task(name = "t.greet")]
pub fn greet(name: String, greeting: Option<String>) -> String {
    format!("{}, {name}", greeting.unwrap_or_else(|| "hello".into()))
}

#[task(name = "t.routed", queue = "other_channel")]
pub fn routed() {}

#[task(name = "t.attempt", context)]
pub fn attempt_number(ctx: &TaskContext) -> u32 {
    ctx.attempt()
}
