use dispatcher_core::task;

#[task(concurrency = 0)]
fn blocked() {}

fn main() {}
