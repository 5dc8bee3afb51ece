use dispatcher_core::task;

#[task(on_duplicate = "sometimes")]
fn maybe() {}

fn main() {}
