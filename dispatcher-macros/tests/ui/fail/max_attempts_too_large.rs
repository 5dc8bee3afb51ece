use dispatcher_core::task;

#[task(max_attempts = 4294967296)]
fn endless() {}

fn main() {}
