use dispatcher_core::task;

#[task]
fn greet(name: &str) -> String {
    format!("hello, {name}")
}

fn main() {
    // The function is kept as written: only the parameter is reported.
    let _ = greet("ada");
}
