use dispatcher_core::{task, TaskContext};

#[task(context = "yes")]
fn whoami(ctx: &TaskContext) -> String {
    ctx.uuid().to_owned()
}

fn main() {}
