use dispatcher_core::task;

#[task]
fn bump(self, by: i64) -> i64 {
    by
}

fn main() {}
