use dispatcher_core::task;

#[task(name = "a" timeout = 5)]
fn squashed() {}

fn main() {}
