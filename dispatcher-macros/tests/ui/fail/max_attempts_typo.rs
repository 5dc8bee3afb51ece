use dispatcher_core::task;

#[task(max_attempt = 3)]
fn typo() {}

fn main() {}
