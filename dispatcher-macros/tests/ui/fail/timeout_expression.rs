use dispatcher_core::task;

#[task(timeout = 5 * 60)]
fn five_minutes() {}

fn main() {}
