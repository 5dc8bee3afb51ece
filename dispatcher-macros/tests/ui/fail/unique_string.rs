use dispatcher_core::task;

#[task(unique = "yes")]
fn once() {}

fn main() {}
