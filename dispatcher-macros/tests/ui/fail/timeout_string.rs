use dispatcher_core::task;

#[task(timeout = "5")]
fn slow() {}

fn main() {}
