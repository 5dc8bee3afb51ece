use dispatcher_core::task;

#[task(name)]
fn nameless() {}

fn main() {}
