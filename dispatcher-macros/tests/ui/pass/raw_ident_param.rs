//! Raw identifiers as parameter names are bound by their plain name.

use dispatcher_core::task::Invocation;
use dispatcher_core::{task, Task, TaskContext};
use serde_json::{json, Value};

#[task(name = "pass.lookup")]
fn lookup(r#type: String, r#in: Option<String>) -> String {
    match r#in {
        Some(place) => format!("{type} in {place}", type = r#type),
        None => r#type,
    }
}

fn run<T: Task>(kwargs: Value) -> Result<Value, String> {
    let d = T::descriptor();
    let Value::Object(kwargs) = kwargs else {
        panic!("kwargs must be an object")
    };
    let args = d.bind(vec![], kwargs).map_err(|e| e.to_string())?;
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
    assert_eq!(lookup::descriptor().params(), ["type", "in"]);
    assert_eq!(
        run::<lookup>(json!({"type": "cat", "in": "box"})),
        Ok(json!("cat in box"))
    );
    assert_eq!(run::<lookup>(json!({"type": "cat"})), Ok(json!("cat")));
    let (_, message) = lookup::call("dog".into(), None).into_message("c").unwrap();
    assert_eq!(message.args, vec![json!("dog"), Value::Null]);
}
