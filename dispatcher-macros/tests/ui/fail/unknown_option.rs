use dispatcher_core::task;

#[task(retries = 3)]
fn flaky() {}

fn main() {
    // The function is kept as written: only the attribute is reported.
    flaky();
}
