//! Runnable examples of the dispatcher: the demo application (`src/bin/dispatcher-demo.rs`) and
//! the cookbook. This library holds what they share.
#![warn(missing_docs)]

pub mod cookbook;

use dispatcher::Call;

/// Renders Calls as a plain-text table, the one `dispatcherctl history` prints (so the two cut
/// and name alike): uuid (as short as still picks the Call; `dispatcherctl` takes a uuid's
/// beginning), task, outcome, attempt (for a job of a durable queue; `-` otherwise), when it
/// finished (UTC), wait, run and total milliseconds, error or result.
///
/// ```
/// use dispatcher::{Call, Outcome};
///
/// let mut call = Call::received("d3adb33f-0000".into(), "demo.flaky".into(), "demo", "queue");
/// call.attempt = Some(2);
/// call.finish(Outcome::Error, Some("attempt 2 fails".into()), 0.0);
/// let table = dispatcher_examples::call_table(&[call]);
/// let row: Vec<&str> = table.lines().nth(2).unwrap().split_whitespace().collect();
/// assert_eq!(row[..4], ["d3adb33f", "demo.flaky", "error", "2"]);
/// assert!(table.contains("attempt 2 fails"));
/// ```
pub fn call_table(calls: &[Call]) -> String {
    dispatcherctl::calls_table(calls)
}
