use dispatcher_core::task;

#[task(name = "typo", timout = 5)]
fn typo() {}

fn main() {}
