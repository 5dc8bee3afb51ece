use dispatcher_core::task;

struct Counter;

impl Counter {
    #[task]
    fn bump(&self, by: i64) -> i64 {
        by
    }
}

fn main() {}
