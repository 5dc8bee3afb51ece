//! `dispatcherctl`: sends a control command to dispatcher services over PostgreSQL
//! LISTEN/NOTIFY and prints their replies, or operates the durable queue
//! ([`dispatcher_broker_pg::queue`]) directly in the database.
//!
//! ```text
//! dispatcherctl [--database-url URL] [--channel NAME] [--json] [--timeout SECS]
//!               [--expected-replies N] COMMAND [--data JSON]
//! dispatcherctl [--database-url URL] [--json] migrate [--schema NAME]
//! dispatcherctl [--database-url URL] [--json] jobs [--schema NAME] [--queue NAME] [--limit N]
//! dispatcherctl [--database-url URL] [--json] retry|discard [--schema NAME] ID...
//! dispatcherctl [--database-url URL] [--json] retry|discard [--schema NAME] --all-failed
//!               [--queue NAME]
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
//!   well, and the services reply with an error object. The names `migrate`, `jobs`, `retry` and
//!   `discard` are the queue commands below ([`QUEUE_COMMANDS`]); they are not sent.
//! - `--data`: the command's `control_data`, a JSON object (e.g. `{"task": "demo.sleep"}`).
//!   `cancel` requires it: an empty filter matches every Call, so cancelling everything must be
//!   asked for with `--data '{}'`.
//!
//! The queue commands act on the queue's tables over a connection of their own; no service
//! needs to run, and `--channel`, `--timeout` and the signing secret play no part (`--data` and
//! `--expected-replies` are usage errors with them, as the queue flags are with control
//! commands):
//!
//! - `migrate [--schema NAME]`: applies the queue's missing migrations to the schema (default
//!   `dispatcher`), under the same advisory lock the services take, and prints the versions
//!   applied and the version now (a second run applies nothing).
//! - `jobs [--schema NAME] [--queue NAME] [--limit N]`: counts by queue and state (`available`:
//!   waiting, now or later; `due`: of those, due now; `running`; `failed`; `canceled`), the age
//!   of the oldest due job, the services holding a live lease and the claims of expired leases
//!   waiting to be taken over; then the failed and canceled jobs, newest first, at most N
//!   (default 20, 0 for counts only): id, queue, task, state, attempts, when (UTC) and the last
//!   attempt's error. With `--json`: one object, [`QueueStats`](dispatcher_broker_pg::queue::QueueStats)
//!   and `failed`, the [`FailedJob`](dispatcher_broker_pg::queue::FailedJob)s with their
//!   messages and every attempt's error.
//! - `retry ID...`, `discard ID...`: makes failed or canceled jobs available again (their
//!   attempts start over; the services are woken) or deletes them, and prints how many and
//!   which. Ids of jobs that are not failed or canceled (no such job, or waiting or running) are
//!   left alone and named on stderr (exit code 1). `--all-failed [--queue NAME]` instead of
//!   ids acts on every failed job (of that queue); canceled jobs go by id only. One of the two is
//!   required: an empty command line never means every job. With `--json`:
//!   `{"schema", "retried"|"discarded": [ids], "count", "not_failed_or_canceled": [ids]}`.
//!
//! Before `jobs`, `retry` and `discard` the schema's version is checked: a schema that is
//! missing or older than this build needs is exit code 4 with a message saying to run
//! `dispatcherctl migrate` (with `--schema` when it is not the default).
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
//! diagnostics always go to stderr. The queue commands print one JSON object instead.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success: the expected replies arrived (or, without `--expected-replies`, at least one); replies carrying an `error` field still count as replies; a queue command did its work |
//! | 1 | fewer replies than `--expected-replies` arrived within the timeout (stderr says how many of how many; what arrived is still printed), or, without `--expected-replies`, no service replied at all within the timeout; `retry`/`discard`: some of the given ids were not failed or canceled jobs (stderr names them; the others were acted on) |
//! | 2 | usage error: bad flags, `--data` that is not valid JSON or not a JSON object, an invalid channel name, an unparseable connection string, `cancel` without `--data`, a job id that is not a positive whole number, an invalid schema name, `retry`/`discard` without ids or `--all-failed` (or with both), a flag the command does not take |
//! | 3 | cannot connect to PostgreSQL (the message names the server with the password redacted, and the reason), or the connection failed while sending, or while a queue command worked |
//! | 4 | queue commands: the queue schema is missing or older than this build needs (run `dispatcherctl migrate`), newer than this build knows, or the database refused a statement (a failed migration, missing privileges) |
//!
//! The logic lives in this library: the command line in [`Cli`], [`check`] and [`action`], the
//! exchange with the services in [`run`] and [`finish`], the queue commands next to it, the
//! output in [`format_human`] and [`format_json`]; the binary only parses the command line and
//! writes the [`Report`].
#![warn(missing_docs)]

mod cli;
mod local;
mod queue;
mod render;
mod request;
mod watch;

pub use cli::{
    action, check, exit, parse_channel, parse_data, parse_job_id, parse_schema, parse_timeout,
    Action, Cli, Pick, QueueCommand, DEFAULT_CHANNEL, DEFAULT_LIMIT, DEFAULT_SCHEMA,
    QUEUE_COMMANDS,
};
pub use render::{
    calls_table, format_human, format_json, format_reply, num, render_table, short_uuids, truncate,
    CELL_MAX_CHARS, UUID_SHOWN,
};
pub use request::{error_chain, finish, run, Report};
pub use watch::watch;
