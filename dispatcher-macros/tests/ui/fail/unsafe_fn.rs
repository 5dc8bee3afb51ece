use dispatcher_core::task;

#[task]
unsafe fn danger(n: u64) -> u64 {
    n
}

fn main() {}
