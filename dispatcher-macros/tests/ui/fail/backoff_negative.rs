use dispatcher_core::task;

#[task(backoff = -1.5)]
fn backwards() {}

fn main() {}
