use dispatcher_core::task;

#[task(on_duplicate = serial)]
fn unquoted() {}

fn main() {}
