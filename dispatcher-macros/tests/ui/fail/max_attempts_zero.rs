use dispatcher_core::task;

#[task(max_attempts = 0)]
fn never_runs() {}

fn main() {}
