//! `dispatcherctl`: sends a control command to dispatcher services over PostgreSQL
//! LISTEN/NOTIFY and prints their replies.
//!
//! ```text
//! dispatcherctl [--database-url URL] [--channel NAME] [--json] [--timeout SECS]
//!               [--expected-replies N] COMMAND [--data JSON]
//! ```
//!
//! - `--database-url`: a URL (`postgres://user:pass@host:5432/db`) or `key=value` settings
//!   (`host=127.0.0.1 user=postgres dbname=app`); `DATABASE_URL` is used when the flag is absent.
//!   Passwords are never shown in messages (see
//!   [`dispatcher_broker_pg::redact_connection_string`]).
//! - `--channel`: the channel the services listen on; default `dispatcher`, the core's default
//!   listen channel (`ServiceConfig` of `dispatcher-runtime`).
//! - `--timeout`: seconds to wait for replies (fractions allowed); default 5.
//! - `--expected-replies N`: stop waiting as soon as N replies arrived. Without it the whole
//!   timeout is waited and every reply that arrives is printed (as dispatcherd's client does).
//! - `COMMAND`: any control command name — `alive`, `main`, `workers`, `running`, `cancel`,
//!   `status`, `set_log_level`, `run`, `history`, `metrics` — or any other name: it is sent as
//!   well, and the services reply with an error object.
//! - `--data`: the command's `control_data`, a JSON object (e.g. `{"task": "demo.sleep"}`).
//!   `cancel` requires it: an empty filter matches every Call, so cancelling everything must be
//!   asked for with `--data '{}'`.
//!
//! Every service listening on the channel receives the command: `cancel` acts on each of them, and
//! `run` runs the task once on *each* service that replies (`--expected-replies` only limits how
//! long the client waits, not who acts).
//!
//! Output: without `--json`, one section per reply (per node), read from the typed replies of
//! [`dispatcher_core::control`]: `workers` (a worker running a Call shows as `busy`, a `ready`
//! one as `idle`), `running`, `cancel` and `history` as tables, `main` as its JSON followed by a
//! table of its pool summary, `alive` as `node X: alive`, replies with an `error` field as
//! `node X: error: ...`, anything else — and any reply that does not have the expected shape,
//! e.g. from another implementation — as pretty JSON. With `--json`, stdout holds exactly one
//! JSON array of the reply objects as they arrived, in arrival order, and nothing else;
//! diagnostics always go to stderr.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success: the expected replies arrived (or, without `--expected-replies`, at least one); replies carrying an `error` field still count as replies |
//! | 1 | fewer replies than `--expected-replies` arrived within the timeout (stderr says how many of how many; what arrived is still printed), or, without `--expected-replies`, no service replied at all within the timeout |
//! | 2 | usage error: bad flags, `--data` that is not valid JSON or not a JSON object, an invalid channel name, an unparseable connection string, `cancel` without `--data` |
//! | 3 | cannot connect to PostgreSQL (the message names the server with the password redacted, and the reason), or the connection failed while sending |
//!
//! The logic lives in this library: the command line in [`Cli`] and [`check`], the exchange with
//! the services in [`run`] and [`finish`], the output in [`format_human`] and [`format_json`];
//! the binary only parses the command line and writes the [`Report`].
#![warn(missing_docs)]

mod cli;
mod render;
mod request;

pub use cli::{check, exit, parse_channel, parse_data, parse_timeout, Cli, DEFAULT_CHANNEL};
pub use render::{format_human, format_json, format_reply, render_table, truncate, CELL_MAX_CHARS};
pub use request::{error_chain, finish, run, Report};
