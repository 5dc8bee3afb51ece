use dispatcher_core::{task, TaskContext};

#[task]
fn whoami(ctx: &TaskContext) -> String {
    ctx.uuid().to_owned()
}

fn main() {}
