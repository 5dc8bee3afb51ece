//! The command line: [`Cli`], the checks clap cannot make ([`check`], [`action`]), and the exit
//! codes ([`exit`]).

use std::time::Duration;

use clap::builder::NonEmptyStringValueParser;
use clap::Parser;
use dispatcher_core::message::kind_of;
use dispatcher_core::signing::SigningKey;
use serde_json::{Map, Value};

use crate::render::truncate;

/// The channel used when `--channel` is absent: the core's default listen channel (and the
/// demo's).
pub const DEFAULT_CHANNEL: &str = "dispatcher";

/// How long replies may go quiet before `dispatcherctl` stops waiting for more, when
/// `--quiet-window` is absent.
pub const DEFAULT_QUIET: Duration = Duration::from_millis(150);

/// The commands that print something about `dispatcherctl` itself; they need no database.
pub const LOCAL_COMMANDS: [&str; 2] = ["completions", "man"];

/// The control commands `dispatcherctl` knows (others are sent as well), for `--help`, the
/// completions and the man page.
pub const CONTROL_COMMANDS: [&str; 14] = [
    "alive",
    "main",
    "workers",
    "running",
    "cancel",
    "status",
    "history",
    "metrics",
    "set_log_level",
    "run",
    "aio_tasks",
    "chunks",
    "producers",
    "tasks",
];

/// The queue schema used when `--schema` is absent (the queue's and the server's default).
pub const DEFAULT_SCHEMA: &str = "dispatcher";

/// How many failed or canceled jobs `jobs` lists when `--limit` is absent.
pub const DEFAULT_LIMIT: u32 = 20;

/// The commands that act on the durable queue in the database instead of being sent to the
/// services.
pub const QUEUE_COMMANDS: [&str; 4] = ["migrate", "jobs", "retry", "discard"];

/// Exit codes of `dispatcherctl`.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Fewer replies than expected arrived within the timeout (none at all, without
    /// `--expected-replies`).
    pub const MISSING_REPLIES: u8 = 1;
    /// `retry` and `discard` with ids: some of them were not failed or canceled jobs (the
    /// others were acted on).
    pub const IDS_LEFT: u8 = 1;
    /// Usage error (also what clap uses for bad flags).
    pub const USAGE: u8 = 2;
    /// Could not connect to PostgreSQL, or the connection failed while sending (or, for the
    /// queue commands, while the database worked).
    pub const CONNECT: u8 = 3;
    /// Queue commands: the queue schema is missing or older than this build needs (run
    /// `dispatcherctl migrate`), newer than this build knows, or the database refused a
    /// statement (a failed migration, missing privileges).
    pub const DATABASE: u8 = 4;
    /// A reply carried an `error` (an unknown command, a bad filter, `run` of an unknown task,
    /// an ambiguous uuid prefix for `cancel`); the replies are still printed.
    pub const ERROR_REPLY: u8 = 5;
}

const AFTER_HELP: &str = "\
Control commands (sent over NOTIFY to every service listening on --channel; prints the replies):
  alive, main, workers, running, cancel, status, set_log_level, run, history, metrics,
  aio_tasks, chunks, producers, tasks
  (any other name is sent too; the services reply with an error)
  A uuid in --data may be its first characters, as the tables show them: cancel refuses a
  prefix that matches more than one Call and names the candidates.
  dispatcherctl stops waiting once the replies go quiet for --quiet-window (every service on
  the channel is listed), once --expected-replies arrived, or at --timeout, whichever is first.

Queue commands (act on the durable queue's tables in the database; no service needed):
  migrate [--schema S]                      apply the queue's migrations; prints the versions
                                            applied and the version now
  jobs [--queue Q] [--limit N]              counts by queue and state, the oldest due job's
                                            age, live services, expired claims; then the failed
                                            and canceled jobs, newest first
  retry ID... | retry --all-failed [--queue Q]
                                            make failed or canceled jobs available again
  discard ID... | discard --all-failed [--queue Q]
                                            delete failed or canceled jobs
  --all-failed takes every failed job (of --queue, when given); canceled jobs go by id only.

About dispatcherctl itself (no database needed):
  completions SHELL                         a completion script for bash, zsh, fish, elvish or
                                            powershell, e.g. `dispatcherctl completions bash >
                                            /etc/bash_completion.d/dispatcherctl`
  man                                       the man page (roff), e.g. `dispatcherctl man >
                                            /usr/local/share/man/man1/dispatcherctl.1`

--watch SECS repeats a read-only command (alive, main, workers, running, status, history,
metrics, aio_tasks, chunks, producers, tasks, jobs) every SECS seconds, redrawing on a terminal
and appending otherwise, until Ctrl-C.

Default channel: dispatcher (the services' default listen channel). Default schema: dispatcher.

Exit codes:
  0  success (replies that carry an \"error\" field still count as replies)
  1  fewer replies than --expected-replies arrived within the timeout (what arrived is still
     printed); without --expected-replies: no service replied at all within the timeout;
     retry/discard: some of the given ids were not failed or canceled jobs (the others were
     retried or discarded)
  2  usage error: bad flags, --data not valid JSON or not a JSON object, invalid channel name,
     unparseable connection string, cancel without --data (use --data '{}' to cancel everything),
     a bad job id or schema name, retry/discard without ids or --all-failed, a flag the command
     does not take, --watch with an acting command, no --database-url nor DATABASE_URL
  3  cannot connect to PostgreSQL, or connecting, listening or sending did not finish within
     --timeout (or the connection failed while sending, or while a queue command worked)
  4  queue commands: the queue schema is missing or too old (run `dispatcherctl migrate`), newer
     than this dispatcherctl knows, or the database refused a statement
  5  a reply carried an error (unknown command, bad filter, run of an unknown task, ambiguous
     uuid prefix); the replies are still printed

With --json, stdout holds exactly one JSON value (control commands: an array of the reply
objects; queue commands: one object); diagnostics go to stderr.";

/// The command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "dispatcherctl",
    version,
    about = "Sends a control command to dispatcher services and prints their replies, or operates \
             the durable queue in the database",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// PostgreSQL connection string: a URL (postgres://user:pass@host:5432/db) or key=value
    /// settings (host=127.0.0.1 user=postgres dbname=app); what it leaves unset comes from
    /// PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGAPPNAME, PGCONNECT_TIMEOUT and the
    /// password file (PGPASSFILE, ~/.pgpass), as with psql; absent, with PGHOST, PGDATABASE,
    /// PGUSER or PGPORT set: all from those
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// Channel the services listen on (control commands)
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CHANNEL, value_parser = parse_channel)]
    pub channel: String,

    /// Print exactly one JSON value on stdout, nothing else: the array of the reply objects
    /// (control commands) or one object (queue commands)
    #[arg(long)]
    pub json: bool,

    /// Seconds the whole command may take: connecting, listening, sending and waiting for
    /// replies (control commands; fractions allowed)
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Stop waiting once N replies arrived; fewer within the timeout is exit code 1 (control
    /// commands)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub expected_replies: Option<u32>,

    /// Stop waiting once no reply arrived for this many seconds after the last one (control
    /// commands; ignored with --expected-replies) [default: 0.15]
    #[arg(long, value_name = "SECS", value_parser = parse_quiet)]
    pub quiet_window: Option<Duration>,

    /// Repeat the command every SECS seconds until Ctrl-C (read-only commands only)
    #[arg(long, value_name = "SECS", value_parser = parse_watch)]
    pub watch: Option<Duration>,

    /// Control command: alive, main, workers, running, cancel, status, set_log_level, run,
    /// history, metrics, aio_tasks, chunks, producers, tasks (any other name is sent too; services
    /// reply with an error); queue command: migrate, jobs, retry, discard; or completions, man
    #[arg(value_name = "COMMAND", value_parser = CommandParser)]
    pub command: String,

    /// retry, discard: ids of failed or canceled jobs, as `jobs` lists them; completions: the
    /// shell (bash, zsh, fish, elvish, powershell)
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,

    /// control_data as a JSON object, e.g. '{"task": "demo.sleep"}'; required for cancel ('{}'
    /// cancels everything) (control commands)
    #[arg(long, value_name = "JSON", value_parser = parse_data)]
    pub data: Option<Map<String, Value>>,

    /// Sign the command with the secret in this file (services that require signatures accept
    /// only signed commands) and accept only signed replies. DISPATCHER_SIGNING_SECRET holds the
    /// secret itself and wins over the file (control commands)
    #[arg(long, value_name = "FILE")]
    pub signing_secret_file: Option<std::path::PathBuf>,

    /// Queue commands: the schema holding the queue [default: dispatcher]
    #[arg(long, value_name = "NAME", value_parser = parse_schema)]
    pub schema: Option<String>,

    /// jobs: only this queue; retry, discard: with --all-failed, only this queue's failed jobs
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    pub queue: Option<String>,

    /// jobs: list at most N failed or canceled jobs, newest first (0: counts only) [default: 20]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(..=100_000))]
    pub limit: Option<u32>,

    /// retry, discard: every failed job (of --queue, when given) instead of ids; canceled jobs
    /// are retried or discarded by id only
    #[arg(long)]
    pub all_failed: bool,
}

impl Cli {
    /// The connection string: `--database-url` or `DATABASE_URL`; when neither is given but
    /// `PGHOST`, `PGDATABASE`, `PGUSER` or `PGPORT` is set, the empty string (everything from
    /// the `PG*` variables, as for psql); else a usage error.
    pub fn database_url(&self) -> Result<&str, String> {
        if let Some(url) = self.database_url.as_deref() {
            return Ok(url);
        }
        let from_env = ["PGHOST", "PGDATABASE", "PGUSER", "PGPORT"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
        if from_env {
            return Ok("");
        }
        Err(format!(
            "{} needs a database: give --database-url URL or set DATABASE_URL (e.g. \
             postgres://postgres@127.0.0.1/postgres), or set PGHOST, PGDATABASE and the other \
             PG* variables as for psql",
            self.command
        ))
    }

    /// How long replies may go quiet: `--quiet-window`, or [`DEFAULT_QUIET`]; none with
    /// `--expected-replies` (which says exactly when to stop).
    pub fn quiet(&self) -> Option<Duration> {
        match self.expected_replies {
            Some(_) => None,
            None => Some(self.quiet_window.unwrap_or(DEFAULT_QUIET)),
        }
    }

    /// The queue schema: `--schema`, or [`DEFAULT_SCHEMA`].
    pub fn schema(&self) -> &str {
        self.schema.as_deref().unwrap_or(DEFAULT_SCHEMA)
    }

    /// How many failed or canceled jobs `jobs` lists: `--limit`, or [`DEFAULT_LIMIT`].
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_LIMIT)
    }
}

/// What a command line asks for ([`action`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the control command to the services and print their replies.
    Control,
    /// Act on the durable queue in the database.
    Queue(QueueCommand),
    /// Print a completion script for this shell.
    Completions(clap_complete::Shell),
    /// Print the man page.
    Man,
}

/// The value parser of COMMAND: any non-empty name (unknown ones are sent too), with the
/// known names offered to completions, the man page and `--help`.
#[derive(Debug, Clone, Copy)]
struct CommandParser;

impl clap::builder::TypedValueParser for CommandParser {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        NonEmptyStringValueParser::new().parse_ref(cmd, arg, value)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        let all = CONTROL_COMMANDS
            .iter()
            .chain(QUEUE_COMMANDS.iter())
            .chain(LOCAL_COMMANDS.iter());
        Some(Box::new(all.map(|c| clap::builder::PossibleValue::new(*c))))
    }
}

/// A queue command ([`QUEUE_COMMANDS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueCommand {
    /// `migrate`: apply the queue's missing migrations.
    Migrate,
    /// `jobs`: the queue's counts and its failed and canceled jobs.
    Jobs,
    /// `retry`: make failed or canceled jobs available again.
    Retry(Pick),
    /// `discard`: delete failed or canceled jobs.
    Discard(Pick),
}

/// The jobs `retry` and `discard` act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// These ids (ascending, each once); ids of jobs that are not failed or canceled are left
    /// alone and named.
    Ids(Vec<i64>),
    /// Every failed job, of this queue when given.
    AllFailed {
        /// `--queue`.
        queue: Option<String>,
    },
}

/// The signing key from `DISPATCHER_SIGNING_SECRET` or `--signing-secret-file`, if any.
pub(crate) fn signing_key(cli: &Cli) -> Result<Option<SigningKey>, String> {
    let secret = match std::env::var("DISPATCHER_SIGNING_SECRET") {
        Ok(s) if !s.is_empty() => s.into_bytes(),
        _ => match &cli.signing_secret_file {
            Some(path) => std::fs::read(path)
                .map_err(|e| format!("--signing-secret-file {}: {e}", path.display()))?
                .trim_ascii()
                .to_vec(),
            None => return Ok(None),
        },
    };
    SigningKey::new(&secret)
        .map(Some)
        .map_err(|e| format!("signing secret: {e}"))
}

/// Parses `--data`: a JSON object. The error names the problem and shows the text.
pub fn parse_data(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!(
            "--data must be a JSON object (like '{{\"task\": \"demo.sleep\"}}'), got {} {}",
            kind_of(&other),
            show_input(text)
        )),
        Err(e) => Err(format!(
            "--data is not valid JSON ({e}): {}",
            show_input(text)
        )),
    }
}

/// Parses `--timeout`: positive seconds, fractions allowed.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("--timeout must be a number of seconds, got {text:?}"))?;
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!(
            "--timeout must be a positive number of seconds, got {text:?}"
        ));
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("--timeout {text:?} is too large a number of seconds"))
}

/// Parses `--quiet-window`: seconds, fractions allowed, 0 included (stop at the first reply).
pub fn parse_quiet(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("--quiet-window must be a number of seconds, got {text:?}"))?;
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!(
            "--quiet-window must be zero or a positive number of seconds, got {text:?}"
        ));
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("--quiet-window {text:?} is too large a number of seconds"))
}

/// Parses `--watch`: positive seconds, fractions allowed, at least 0.1.
pub fn parse_watch(text: &str) -> Result<Duration, String> {
    let every = parse_timeout(text).map_err(|e| e.replace("--timeout", "--watch"))?;
    if every < Duration::from_millis(100) {
        return Err(format!(
            "--watch repeats at most ten times a second; got {text:?}, give 0.1 or more"
        ));
    }
    Ok(every)
}

/// Parses `--channel`: 1 to 63 bytes, no NUL (the core's rule).
pub fn parse_channel(text: &str) -> Result<String, String> {
    dispatcher_core::broker::validate_channel(text)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
}

/// Parses `--schema`: a plain lowercase identifier (the queue's rule).
pub fn parse_schema(text: &str) -> Result<String, String> {
    dispatcher_broker_pg::queue::check_schema_name(text)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
}

/// Parses a job id: a positive whole number.
pub fn parse_job_id(text: &str) -> Result<i64, String> {
    match text.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(format!(
            "job ids are positive whole numbers, as `dispatcherctl jobs` lists them; got {}",
            show_input(text)
        )),
    }
}

pub(crate) fn show_input(text: &str) -> String {
    format!("'{}'", truncate(text, 200))
}

mod checks;

pub use checks::{action, check};

#[cfg(test)]
pub(crate) mod tests;
