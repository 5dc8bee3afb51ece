//! A synchronous task with a plain return value.

use dispatcher_core::task::Invocation;
use dispatcher_core::{task, OnDuplicate, Task, TaskConfig, TaskContext};
use serde_json::{json, Map, Value};

/// Adds two numbers.
#[task(name = "pass.add")]
pub fn add(a: i64, b: i64) -> i64 {
    a + b
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
    // The function itself is untouched.
    assert_eq!(add(2, 3), 5);

    assert_eq!(<add as Task>::NAME, "pass.add");
    let d = add::descriptor();
    assert_eq!(d.name(), "pass.add");
    assert_eq!(d.params(), ["a", "b"]);
    assert_eq!(*d.config(), TaskConfig::new());
    assert_eq!(d.config().timeout, None);
    assert_eq!(d.config().on_duplicate, OnDuplicate::Parallel);
    assert_eq!(d.config().queue, None);
    assert!(!d.config().context);

    // `call` builds a submission with the arguments in order.
    let (channel, message) = add::call(4, 5).into_message("default").unwrap();
    assert_eq!(channel, "default");
    assert_eq!(message.task, "pass.add");
    assert_eq!(message.args, vec![json!(4), json!(5)]);

    assert_eq!(run::<add>(vec![json!(2), json!(40)]), Ok(json!(42)));
    // The descriptor checks the argument types before running.
    let err = run::<add>(vec![json!(2), json!("forty")]).unwrap_err();
    assert!(err.contains("argument `b`"), "{err}");
}
