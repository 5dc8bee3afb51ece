use dispatcher_core::task;

#[task]
fn echo<T: serde::Serialize>(value: T) -> T {
    value
}

fn main() {}
