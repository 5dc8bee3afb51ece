use dispatcher_core::task;

#[task(backoff = true)]
fn flag() {}

fn main() {}
