use dispatcher_core::task;

struct Report {
    lines: Vec<String>,
}

#[task]
fn report(n: u32) -> Report {
    Report {
        lines: (0..n).map(|i| i.to_string()).collect(),
    }
}

fn main() {}
