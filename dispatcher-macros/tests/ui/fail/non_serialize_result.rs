use dispatcher_core::task;

struct Report {
    lines: Vec<String>,
}

#[task]
async fn report(n: u32) -> Result<Report, String> {
    Ok(Report {
        lines: (0..n).map(|i| i.to_string()).collect(),
    })
}

fn main() {}
