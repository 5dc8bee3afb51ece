use dispatcher_core::task;

#[task(timeout = 0)]
fn instant() {}

fn main() {}
