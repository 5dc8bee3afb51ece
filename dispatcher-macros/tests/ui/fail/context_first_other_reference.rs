use dispatcher_core::task;

#[task(context)]
fn shout(text: &str) -> String {
    text.to_uppercase()
}

fn main() {}
