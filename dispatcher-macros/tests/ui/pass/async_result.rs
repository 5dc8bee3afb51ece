//! An async task returning a `Result`: `Ok` is the result, `Err` the failure text.

use dispatcher_core::task::Invocation;
use dispatcher_core::{task, Task, TaskContext};
use serde_json::{json, Map, Value};

/// Fails on odd input.
#[task(name = "pass.even")]
async fn even(n: u32) -> Result<u32, String> {
    tokio::task::yield_now().await;
    if n % 2 == 0 {
        Ok(n)
    } else {
        Err(format!("{n} is odd"))
    }
}

/// A synchronous task returning a `Result` whose error is any `Display`.
#[task(name = "pass.parse")]
fn parse(text: String) -> Result<i64, std::num::ParseIntError> {
    text.parse()
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
    assert_eq!(<even as Task>::NAME, "pass.even");
    assert_eq!(even::descriptor().params(), ["n"]);
    assert_eq!(run::<even>(vec![json!(4)]), Ok(json!(4)));
    assert_eq!(run::<even>(vec![json!(3)]), Err("3 is odd".to_owned()));

    assert_eq!(run::<parse>(vec![json!("12")]), Ok(json!(12)));
    assert_eq!(
        run::<parse>(vec![json!("twelve")]),
        Err("invalid digit found in string".to_owned())
    );
}
