use dispatcher_core::{task, TaskContext};

#[task(context)]
fn whoami(ctx: &mut TaskContext) -> String {
    ctx.uuid().to_owned()
}

fn main() {}
