//! Runnable examples of the dispatcher: the demo application (`src/bin/dispatcher-demo.rs`) and
//! the cookbook. This library holds what they share.
#![warn(missing_docs)]

pub mod cookbook;

use dispatcher::Call;

/// Renders Calls as a plain-text table: uuid, task, outcome, wait, run, error or result.
pub fn call_table(calls: &[Call]) -> String {
    let mut out = format!(
        "{:<8}  {:<16}  {:<11}  {:>9}  {:>9}  {}\n",
        "uuid", "task", "outcome", "wait ms", "run ms", "result / error"
    );
    for c in calls {
        let outcome = c.outcome.map(|o| o.as_str()).unwrap_or("-");
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        let detail = match (&c.error, &c.result) {
            (Some(e), _) => e.clone(),
            (None, Some(r)) => r.to_string(),
            (None, None) => String::new(),
        };
        let detail: String = detail.chars().take(60).collect();
        out.push_str(&format!(
            "{:<8}  {:<16}  {:<11}  {:>9}  {:>9}  {}\n",
            c.uuid.chars().take(8).collect::<String>(),
            c.task,
            outcome,
            ms(c.wait_ms),
            ms(c.run_ms),
            detail
        ));
    }
    out
}
