use dispatcher_core::task;

#[task(context)]
fn count(n: i64) -> i64 {
    n
}

fn main() {}
