use dispatcher_core::task;

#[task(max_attempts = "3")]
fn quoted() {}

fn main() {}
