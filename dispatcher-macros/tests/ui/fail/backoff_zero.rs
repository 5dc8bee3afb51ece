use dispatcher_core::task;

#[task(backoff = 0)]
fn no_wait() {}

fn main() {}
