use dispatcher_core::task;

#[task(timeout = -1)]
fn negative() {}

fn main() {}
