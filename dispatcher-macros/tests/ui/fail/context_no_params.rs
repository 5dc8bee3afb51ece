use dispatcher_core::task;

#[task(context)]
fn lonely() {}

fn main() {}
