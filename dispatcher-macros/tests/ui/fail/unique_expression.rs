use dispatcher_core::task;

#[task(unique = yes)]
fn once_more() {}

fn main() {}
