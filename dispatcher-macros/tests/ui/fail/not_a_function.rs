use dispatcher_core::task;

#[task(name = "not.a.function")]
struct Job {
    id: u64,
}

fn main() {
    let _ = Job { id: 1 }.id;
}
