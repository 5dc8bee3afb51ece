use dispatcher_core::{task, TaskContext};

#[task(context)]
fn whoami(n: i64, ctx: &TaskContext) -> String {
    format!("{n} {}", ctx.uuid())
}

fn main() {}
