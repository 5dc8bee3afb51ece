use dispatcher_core::task;

#[task(name = 5)]
fn five() {}

fn main() {}
