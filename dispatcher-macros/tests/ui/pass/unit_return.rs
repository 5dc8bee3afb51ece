//! Tasks without a return value (and without parameters) return `null`.

use dispatcher_core::task::Invocation;
use dispatcher_core::{task, Task, TaskContext};
use serde_json::{Map, Value};

#[task(name = "pass.ping")]
fn ping() {}

#[task(name = "pass.pong")]
async fn pong() -> () {}

#[task(name = "pass.maybe")]
fn maybe(fail: bool) -> Result<(), String> {
    if fail {
        Err("asked to fail".into())
    } else {
        Ok(())
    }
}

fn run<T: Task>(args: Vec<Value>) -> Result<Value, String> {
    let d = T::descriptor();
    let args = d.bind(args, Map::new()).map_err(|e| e.to_string())?;
    let context = TaskContext::new("u-1".into(), d.name(), None);
    let invocation = Invocation {
        uuid: "u-1".into(),
        args,
        context,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(d.run(invocation)).map_err(|e| e.0)
}

fn main() {
    assert!(ping::descriptor().params().is_empty());
    assert!(ping::call().into_message("c").unwrap().1.args.is_empty());
    assert_eq!(run::<ping>(vec![]), Ok(Value::Null));
    assert_eq!(run::<pong>(vec![]), Ok(Value::Null));
    assert_eq!(run::<maybe>(vec![Value::Bool(false)]), Ok(Value::Null));
    assert_eq!(
        run::<maybe>(vec![Value::Bool(true)]),
        Err("asked to fail".into())
    );
}
