use dispatcher_core::task;

#[task(backoff = 7200)]
fn two_hours() {}

fn main() {}
