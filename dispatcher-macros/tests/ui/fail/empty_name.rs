use dispatcher_core::task;

#[task(name = "")]
fn empty() {}

fn main() {}
