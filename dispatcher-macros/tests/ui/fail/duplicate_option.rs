use dispatcher_core::task;

#[task(name = "first", timeout = 5, name = "second")]
fn twice() {}

fn main() {}
