use dispatcher_core::{task, TaskContext};

#[task(context)]
fn twice(ctx: &TaskContext, again: &TaskContext) -> String {
    format!("{} {}", ctx.uuid(), again.uuid())
}

fn main() {}
