use dispatcher_core::task;

#[task(concurrency = -2)]
fn negative() {}

fn main() {}
