use dispatcher_core::task;

struct Point {
    x: i64,
    y: i64,
}

#[task]
fn plot(label: String, point: Point) -> i64 {
    let _ = label;
    point.x + point.y
}

fn main() {}
