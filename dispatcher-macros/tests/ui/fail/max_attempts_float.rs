use dispatcher_core::task;

#[task(max_attempts = 2.5)]
fn fractional() {}

fn main() {}
