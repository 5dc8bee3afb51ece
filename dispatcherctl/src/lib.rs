//! `dispatcherctl`: sends a control command to dispatcher services over PostgreSQL
//! LISTEN/NOTIFY and prints their replies, or operates the durable queue
//! ([`dispatcher_broker_pg::queue`]) directly in the database.
//!
//! ```text
//! dispatcherctl [--database-url URL] [--channel NAME] [--json] [--timeout SECS]
//!               [--expected-replies N] [--quiet-window SECS] [--watch SECS] COMMAND [--data JSON]
//! dispatcherctl [--database-url URL] [--json] migrate [--schema NAME]
//! dispatcherctl [--database-url URL] [--json] jobs [--schema NAME] [--queue NAME] [--limit N]
//! dispatcherctl [--database-url URL] [--json] retry|discard [--schema NAME] ID...
//! dispatcherctl [--database-url URL] [--json] retry|discard [--schema NAME] --all-failed
//!               [--queue NAME]
//! dispatcherctl completions bash|zsh|fish|elvish|powershell
//! dispatcherctl man
//! ```
//!
//! - `--database-url`: a URL (`postgres://user:pass@host:5432/db`) or `key=value` settings
//!   (`host=127.0.0.1 user=postgres dbname=app`); `DATABASE_URL` is used when the flag is absent.
//!   Passwords are never shown in messages (see
//!   [`dispatcher_broker_pg::redact_connection_string`]).
//! - `--channel`: the channel the services listen on; default `dispatcher`, the core's default
//!   listen channel (`ServiceConfig` of `dispatcher-runtime`), `dispatcher-server`'s and
//!   `dispatcher-demo serve`'s.
//! - `--timeout`: seconds the whole command may take (fractions allowed; default 5):
//!   connecting, LISTEN, sending and the replies. A server that accepts the connection and never
//!   answers is exit code 3 after `--timeout`, with a message naming what timed out.
//! - `--quiet-window SECS`: stop waiting once no reply arrived for this long after the last one
//!   (default 0.15, [`DEFAULT_QUIET`]). So every service on the channel is listed, and one service
//!   is answered in a fraction of a second instead of the whole timeout. Services reply within
//!   milliseconds of each other; raise it when some are far away or busy.
//! - `--expected-replies N`: stop waiting as soon as N replies arrived (the quiet window plays no
//!   part then).
//! - `--watch SECS`: run the command again every SECS seconds (at least 0.1) until Ctrl-C; on a
//!   terminal the screen is cleared and redrawn, otherwise each run is appended. Read-only
//!   commands only: `cancel`, `run`, `set_log_level`, `migrate`, `retry` and `discard` are usage
//!   errors with it.
//! - `COMMAND`: any control command name — `alive`, `main`, `workers`, `running`, `cancel`,
//!   `status`, `set_log_level`, `run`, `history`, `metrics` — or any other name: it is sent as
//!   well, and the services reply with an error object. The names `migrate`, `jobs`, `retry` and
//!   `discard` are the queue commands below ([`QUEUE_COMMANDS`]); they are not sent.
//! - `--data`: the command's `control_data`, a JSON object (e.g. `{"task": "demo.sleep"}`).
//!   `cancel` requires it: an empty filter matches every Call, so cancelling everything must be
//!   asked for with `--data '{}'`. A `uuid` in it may be the uuid's beginning, as the tables show
//!   it (`--data '{"uuid": "9760671a"}'`): `running` and `history` list every Call it begins;
//!   `cancel` refuses one that begins the uuids of several Calls (exit code 5, the candidates
//!   named).
//! - `completions SHELL`, `man`: a completion script, or the man page, generated from the
//!   command line (no database needed).
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
//! [`dispatcher_core::control`] and laid out with `comfy-table` ([`render_table`]; cells cut at
//! [`CELL_MAX_CHARS`], numbers rounded, uuids shown by their first [`UUID_SHOWN`] characters or
//! as many more as tell two apart, [`short_uuids`]): `workers` (a worker running a Call shows
//! as `busy`, a `ready` one as `idle`), `running` and `cancel` (with how long each Call has run
//! and when a delayed one is due), `history` ([`calls_table`], with when each Call finished),
//! `main` (pid, uptime, tasks, then the brokers and the pool), `status` (all of them),
//! `metrics`, `set_log_level`, `run`, `producers`, `aio_tasks`, `chunks` and `tasks` (each
//! registered task's timeout, duplicate policy, queue and durable-queue policy) as tables, `alive`
//! as `node X: alive`, replies with an `error` field as `node X: error: ...`; a reply of another
//! command, or one that does not have the expected shape (e.g. from another implementation), as
//! pretty JSON. With `--json`, stdout holds exactly one
//! JSON array of the reply objects as they arrived, in arrival order, and nothing else;
//! diagnostics always go to stderr. The queue commands print one JSON object instead.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success: the expected replies arrived (or, without `--expected-replies`, at least one) and none carries an `error`; a queue command did its work; `completions`, `man`; `--watch` ended by Ctrl-C |
//! | 1 | fewer replies than `--expected-replies` arrived within the timeout (stderr says how many of how many; what arrived is still printed), or, without `--expected-replies`, no service replied at all within the timeout; `retry`/`discard`: some of the given ids were not failed or canceled jobs (stderr names them; the others were acted on) |
//! | 2 | usage error: bad flags, `--data` that is not valid JSON or not a JSON object, an invalid channel name, an unparseable connection string, `cancel` without `--data`, a job id that is not a positive whole number, an invalid schema name, `retry`/`discard` without ids or `--all-failed` (or with both), a flag the command does not take, `--watch` with an acting command, no connection string (neither `--database-url` nor `DATABASE_URL`), `completions` without a known shell |
//! | 3 | cannot connect to PostgreSQL (the message names the server with the password redacted, and the reason), or connecting, LISTEN or sending did not finish within `--timeout`, or the connection failed while sending, or while a queue command worked |
//! | 4 | queue commands: the queue schema is missing or older than this build needs (run `dispatcherctl migrate`), newer than this build knows, or the database refused a statement (a failed migration, missing privileges) |
//! | 5 | a reply carried an `error` field (an unknown command, a bad filter, `run` of an unknown task, an ambiguous uuid prefix for `cancel`): the replies are still printed, and stderr names each node and its error; it wins over 1 |
//!
//! The logic lives in this library: the command line in [`Cli`], [`check`] and [`action`], the
//! exchange with the services in [`run`] and [`finish`], the repetition in [`watch`], the queue commands next to it, the
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
    action, check, exit, parse_channel, parse_data, parse_job_id, parse_quiet, parse_schema,
    parse_timeout, parse_watch, Action, Cli, Pick, QueueCommand, CONTROL_COMMANDS, DEFAULT_CHANNEL,
    DEFAULT_LIMIT, DEFAULT_QUIET, DEFAULT_SCHEMA, LOCAL_COMMANDS, QUEUE_COMMANDS,
};
pub use render::{
    calls_table, format_human, format_json, format_reply, num, render_table, short_uuids, truncate,
    CELL_MAX_CHARS, UUID_SHOWN,
};
pub use request::{error_chain, finish, run, Report};
pub use watch::watch;
