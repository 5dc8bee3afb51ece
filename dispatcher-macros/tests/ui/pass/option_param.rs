//! `Option<T>` parameters may be left out (they become `None`); others may not.

use dispatcher_core::task::Invocation;
use dispatcher_core::{task, Task, TaskContext};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Greeting {
    word: String,
    loud: bool,
}

#[task(name = "pass.greet")]
fn greet(name: String, greeting: Option<Greeting>) -> String {
    match greeting {
        Some(g) if g.loud => format!("{}, {}!", g.word.to_uppercase(), name.to_uppercase()),
        Some(g) => format!("{}, {name}", g.word),
        None => format!("hello, {name}"),
    }
}

fn run<T: Task>(args: Vec<Value>, kwargs: Value) -> Result<Value, String> {
    let d = T::descriptor();
    let Value::Object(kwargs) = kwargs else {
        panic!("kwargs must be an object")
    };
    let args = d.bind(args, kwargs).map_err(|e| e.to_string())?;
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
    assert_eq!(greet::descriptor().params(), ["name", "greeting"]);
    let _ = Map::new();
    assert_eq!(
        run::<greet>(vec![json!("ada")], json!({})),
        Ok(json!("hello, ada"))
    );
    assert_eq!(
        run::<greet>(
            vec![],
            json!({"name": "ada", "greeting": {"word": "hi", "loud": true}})
        ),
        Ok(json!("HI, ADA!"))
    );
    let err = run::<greet>(vec![], json!({"greeting": null})).unwrap_err();
    assert!(err.contains("missing argument `name`"), "{err}");

    let (_, message) = greet::call(
        "bob".into(),
        Some(Greeting {
            word: "yo".into(),
            loud: false,
        }),
    )
    .into_message("c")
    .unwrap();
    assert_eq!(
        message.args,
        vec![json!("bob"), json!({"word": "yo", "loud": false})]
    );
    let (_, message) = greet::call("bob".into(), None).into_message("c").unwrap();
    assert_eq!(message.args, vec![json!("bob"), Value::Null]);
}
