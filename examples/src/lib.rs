//! Runnable examples of the dispatcher: the demo application (`src/bin/dispatcher-demo.rs`) and
//! the cookbook. This library holds what they share.
#![warn(missing_docs)]

pub mod cookbook;

use std::ffi::OsStr;
use std::io::IsTerminal;

use dispatcher::Call;

/// True when ANSI colour may be written to `stream`: it is a terminal and `NO_COLOR` is unset or
/// empty (<https://no-color.org>). Output to a file or a pipe stays plain text.
///
/// ```
/// // A test's output is not a terminal here, so no colour.
/// let _plain = !dispatcher_examples::use_colour(&std::io::stdout());
/// assert!(!dispatcher_examples::colour_allowed(false, None));
/// assert!(dispatcher_examples::colour_allowed(true, None));
/// assert!(!dispatcher_examples::colour_allowed(true, Some("1".as_ref())));
/// ```
pub fn use_colour(stream: &impl IsTerminal) -> bool {
    colour_allowed(
        stream.is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// The rule of [`use_colour`]: colour on a terminal unless `NO_COLOR` is set to something.
pub fn colour_allowed(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Logs to stdout with the filter from `RUST_LOG` (default `info`), coloured only when stdout
/// is a terminal ([`use_colour`]). The cookbook binaries call it once at start.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(use_colour(&std::io::stdout()))
        .try_init();
}

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
