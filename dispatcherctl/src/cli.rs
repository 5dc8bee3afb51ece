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
pub const CONTROL_COMMANDS: [&str; 13] = [
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
  aio_tasks, chunks, producers
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
metrics, aio_tasks, chunks, producers, jobs) every SECS seconds, redrawing on a terminal and
appending otherwise, until Ctrl-C.

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
     does not take
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
    /// settings (host=127.0.0.1 user=postgres dbname=app)
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
    /// history, metrics, aio_tasks, chunks, producers (any other name is sent too; services
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
    /// The connection string: `--database-url` or `DATABASE_URL`; a usage error when neither is
    /// given.
    pub fn database_url(&self) -> Result<&str, String> {
        self.database_url.as_deref().ok_or_else(|| {
            format!(
                "{} needs a database: give --database-url URL or set DATABASE_URL (e.g. \
                 postgres://postgres@127.0.0.1/postgres)",
                self.command
            )
        })
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

fn show_input(text: &str) -> String {
    format!("'{}'", truncate(text, 200))
}

/// Checks what clap cannot: `cancel` needs `--data` (an empty filter matches every Call), and
/// each flag and job id belongs to a command that takes it (see [`action`]).
pub fn check(cli: &Cli) -> Result<(), String> {
    action(cli).map(|_| ())
}

/// What the command line asks for, once it is checked: `cancel` needs `--data`; the queue
/// commands ([`QUEUE_COMMANDS`]) take none of the control flags `--data` and
/// `--expected-replies`; control commands take none of the queue flags and no job ids; `retry`
/// and `discard` take ids or `--all-failed` (with `--queue` only then). The error says what is
/// wrong and what to write instead.
pub fn action(cli: &Cli) -> Result<Action, String> {
    let action = command_action(cli)?;
    if cli.watch.is_some() {
        let command = cli.command.as_str();
        let read_only = match &action {
            Action::Control => {
                dispatcher_core::control::Command::parse(command).is_some_and(|c| c.is_read_only())
            }
            Action::Queue(q) => *q == QueueCommand::Jobs,
            Action::Completions(_) | Action::Man => false,
        };
        if !read_only {
            let acts = matches!(action, Action::Queue(_))
                || dispatcher_core::control::Command::parse(command).is_some();
            return Err(format!(
                "--watch repeats read-only commands only (alive, main, workers, running, \
                 status, history, metrics, aio_tasks, chunks, producers, jobs); {command:?} {}",
                if acts {
                    "acts, so it runs once: leave --watch out"
                } else {
                    "is not one of them"
                }
            ));
        }
    }
    Ok(action)
}

/// [`action`] before the `--watch` check.
fn command_action(cli: &Cli) -> Result<Action, String> {
    let command = cli.command.as_str();
    if LOCAL_COMMANDS.contains(&command) {
        return local_action(cli);
    }
    if !QUEUE_COMMANDS.contains(&command) {
        return control_action(cli);
    }
    if cli.data.is_some() {
        return Err(format!(
            "{command} acts on the queue's tables and takes no --data (that is for control \
             commands)"
        ));
    }
    if cli.expected_replies.is_some() {
        return Err(format!(
            "{command} acts on the queue's tables; there are no replies to expect \
             (--expected-replies is for control commands)"
        ));
    }
    let takes_ids = matches!(command, "retry" | "discard");
    if !takes_ids {
        if let Some(first) = cli.ids.first() {
            return Err(format!(
                "{command} takes no job ids (got {}); ids are for retry and discard",
                show_input(first)
            ));
        }
        if cli.all_failed {
            return Err(format!(
                "--all-failed is for retry and discard, not for {command}"
            ));
        }
    }
    match command {
        "migrate" => {
            not_for(
                cli.queue.is_some(),
                "--queue",
                "migrate (it migrates every queue)",
            )?;
            not_for(cli.limit.is_some(), "--limit", "migrate")?;
            Ok(Action::Queue(QueueCommand::Migrate))
        }
        "jobs" => Ok(Action::Queue(QueueCommand::Jobs)),
        _ => {
            not_for(
                cli.limit.is_some(),
                "--limit",
                &format!("{command} (only jobs lists jobs)"),
            )?;
            let pick = pick(cli)?;
            Ok(Action::Queue(if command == "retry" {
                QueueCommand::Retry(pick)
            } else {
                QueueCommand::Discard(pick)
            }))
        }
    }
}

/// `completions SHELL` and `man`: no flags but the shell.
fn local_action(cli: &Cli) -> Result<Action, String> {
    let command = cli.command.as_str();
    if cli.data.is_some() || cli.schema.is_some() || cli.queue.is_some() || cli.all_failed {
        return Err(format!(
            "{command} prints something about dispatcherctl itself and takes no --data, \
             --schema, --queue or --all-failed"
        ));
    }
    let shells = "bash, zsh, fish, elvish, powershell";
    match (command, cli.ids.as_slice()) {
        ("man", []) => Ok(Action::Man),
        ("man", [first, ..]) => Err(format!(
            "man takes no arguments (got {})",
            show_input(first)
        )),
        ("completions", [shell]) => {
            <clap_complete::Shell as clap::ValueEnum>::from_str(shell, true)
                .map(Action::Completions)
                .map_err(|_| {
                    format!(
                        "completions: unknown shell {}; use one of {shells}",
                        show_input(shell)
                    )
                })
        }
        _ => Err(format!(
            "completions takes one shell, one of {shells} (e.g. `dispatcherctl completions bash`)"
        )),
    }
}

/// The checks of a control command.
fn control_action(cli: &Cli) -> Result<Action, String> {
    let command = cli.command.as_str();
    if let Some(first) = cli.ids.first() {
        return Err(format!(
            "unexpected argument {} after {command:?}: control commands take their arguments in \
             --data (e.g. --data '{{\"task\": \"...\"}}'); only retry and discard take job ids",
            show_input(first)
        ));
    }
    let queue_only = |flag: &str, commands: &str| {
        format!("{flag} is for {commands}; the control command {command:?} does not take it")
    };
    if cli.schema.is_some() {
        return Err(queue_only(
            "--schema",
            "the queue commands (migrate, jobs, retry, discard)",
        ));
    }
    if cli.queue.is_some() {
        return Err(queue_only(
            "--queue",
            "the queue commands jobs, retry and discard",
        ));
    }
    if cli.all_failed {
        return Err(queue_only(
            "--all-failed",
            "the queue commands retry and discard",
        ));
    }
    if let Some(n) = cli.limit {
        let mut e = queue_only("--limit", "the queue command jobs");
        if command == "history" {
            e.push_str(&format!(
                "; history takes its limit in --data '{{\"limit\": {n}}}'"
            ));
        }
        return Err(e);
    }
    if command == "cancel" && cli.data.is_none() {
        return Err(format!(
            "cancel without --data would cancel every running and waiting Call of every service \
             on channel {:?}; give a filter (e.g. --data '{{\"uuid\": \"...\"}}' or \
             '{{\"task\": \"...\"}}'), or --data '{{}}' to really cancel everything",
            cli.channel
        ));
    }
    Ok(Action::Control)
}

/// The jobs of `retry` or `discard`: ids, or `--all-failed` (explicitly: acting on every failed
/// job is never what an empty command line means).
fn pick(cli: &Cli) -> Result<Pick, String> {
    let command = cli.command.as_str();
    if cli.all_failed {
        if let Some(first) = cli.ids.first() {
            return Err(format!(
                "{command}: give job ids or --all-failed, not both (got id {})",
                show_input(first)
            ));
        }
        return Ok(Pick::AllFailed {
            queue: cli.queue.clone(),
        });
    }
    if cli.ids.is_empty() {
        return Err(format!(
            "{command} needs the ids of failed or canceled jobs (`dispatcherctl jobs` lists \
             them), or --all-failed [--queue NAME] to {command} every failed job"
        ));
    }
    if let Some(q) = &cli.queue {
        return Err(format!(
            "{command}: --queue {q:?} selects failed jobs only with --all-failed; with ids, \
             leave it out"
        ));
    }
    let mut ids = cli
        .ids
        .iter()
        .map(|t| parse_job_id(t))
        .collect::<Result<Vec<i64>, String>>()?;
    ids.sort_unstable();
    ids.dedup();
    Ok(Pick::Ids(ids))
}

/// An error when `given`: `flag` is not for `command`.
fn not_for(given: bool, flag: &str, command: &str) -> Result<(), String> {
    if given {
        Err(format!("{flag} is not for {command}"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::CommandFactory;
    use serde_json::json;

    /// The command line with `--database-url host=x` and `args`.
    pub(crate) fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut v = vec!["dispatcherctl", "--database-url", "host=x"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v)
    }

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let c = cli(&["alive"]).unwrap();
        assert_eq!(c.channel, "dispatcher");
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.expected_replies, None);
        assert!(!c.json);
        assert_eq!(c.data, None);
    }

    #[test]
    fn flags_may_follow_the_command() {
        let c = cli(&[
            "running",
            "--data",
            r#"{"task": "a"}"#,
            "--json",
            "--timeout",
            "0.5",
        ])
        .unwrap();
        assert_eq!(c.command, "running");
        assert_eq!(c.data.unwrap()["task"], json!("a"));
        assert!(c.json);
        assert_eq!(c.timeout, Duration::from_millis(500));
    }

    #[test]
    fn bad_data_is_a_usage_error_showing_the_text() {
        let e = cli(&["running", "--data", "{bad"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("not valid JSON") && msg.contains("{bad"),
            "{msg}"
        );
        let e = cli(&["running", "--data", "[1]"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("JSON object") && msg.contains("an array") && msg.contains("[1]"),
            "{msg}"
        );
    }

    #[test]
    fn bad_numbers_and_channels_are_usage_errors() {
        for args in [
            &["alive", "--timeout", "0"][..],
            &["alive", "--timeout", "-1"],
            &["alive", "--timeout", "abc"],
            &["alive", "--timeout", "inf"],
            &["alive", "--expected-replies", "0"],
            &["alive", "--channel", ""],
            &["", "--json"],
        ] {
            let e = cli(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
        let long = "x".repeat(64);
        assert_eq!(
            cli(&["alive", "--channel", &long]).unwrap_err().exit_code(),
            2
        );
    }

    #[test]
    fn help_documents_exit_codes_and_default_channel() {
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "Exit codes",
            "0  success",
            "1  fewer",
            "2  usage",
            "3  cannot connect",
            "[default: dispatcher]",
            "DATABASE_URL",
        ] {
            assert!(help.contains(needle), "{needle:?} missing in\n{help}");
        }
    }

    #[test]
    fn env_values_are_not_shown_in_help() {
        // hide_env_values: a DATABASE_URL with a password must never appear in --help.
        let arg = Cli::command()
            .get_arguments()
            .find(|a| a.get_id() == "database_url")
            .map(|a| a.is_hide_env_values_set());
        assert_eq!(arg, Some(true));
    }

    #[test]
    fn cancel_needs_a_filter() {
        let e = check(&cli(&["cancel"]).unwrap()).unwrap_err();
        assert!(e.contains("--data '{}'"), "{e}");
        assert!(check(&cli(&["cancel", "--data", "{}"]).unwrap()).is_ok());
        assert!(check(&cli(&["running"]).unwrap()).is_ok());
    }

    #[test]
    fn queue_commands_read_their_flags() {
        let c = cli(&["jobs"]).unwrap();
        assert_eq!(action(&c), Ok(Action::Queue(QueueCommand::Jobs)));
        assert_eq!((c.schema(), c.limit()), ("dispatcher", 20));
        let c = cli(&["jobs", "--schema", "jobs_2", "--queue", "q", "--limit", "0"]).unwrap();
        assert_eq!(action(&c), Ok(Action::Queue(QueueCommand::Jobs)));
        assert_eq!(
            (c.schema(), c.limit(), c.queue.as_deref()),
            ("jobs_2", 0, Some("q"))
        );
        let c = cli(&["migrate", "--schema", "other"]).unwrap();
        assert_eq!(action(&c), Ok(Action::Queue(QueueCommand::Migrate)));
        // Ids in any order and repeated: ascending, each once.
        let c = cli(&["retry", "5", "3", "5", "--json"]).unwrap();
        assert_eq!(
            action(&c),
            Ok(Action::Queue(QueueCommand::Retry(Pick::Ids(vec![3, 5]))))
        );
        let c = cli(&["discard", "--all-failed", "--queue", "q"]).unwrap();
        assert_eq!(
            action(&c),
            Ok(Action::Queue(QueueCommand::Discard(Pick::AllFailed {
                queue: Some("q".into())
            })))
        );
        let c = cli(&["retry", "--all-failed"]).unwrap();
        assert_eq!(
            action(&c),
            Ok(Action::Queue(QueueCommand::Retry(Pick::AllFailed {
                queue: None
            })))
        );
        // Control commands are unchanged.
        assert_eq!(action(&cli(&["history"]).unwrap()), Ok(Action::Control));
    }

    #[test]
    fn queue_usage_errors_say_what_to_write() {
        for (args, needle) in [
            (&["retry"][..], "--all-failed [--queue NAME]"),
            (&["discard"], "needs the ids of failed or canceled jobs"),
            (&["retry", "abc"], "positive whole numbers"),
            (&["retry", "abc"], "'abc'"),
            (&["discard", "0"], "'0'"),
            (&["retry", "1.5"], "'1.5'"),
            (&["retry", "99999999999999999999"], "positive whole numbers"),
            (&["retry", "3", "--all-failed"], "not both"),
            (&["discard", "3", "--queue", "q"], "only with --all-failed"),
            (&["retry", "3", "--limit", "5"], "--limit is not for retry"),
            (&["jobs", "3"], "jobs takes no job ids"),
            (
                &["jobs", "--all-failed"],
                "--all-failed is for retry and discard",
            ),
            (&["migrate", "--queue", "q"], "--queue is not for migrate"),
            (&["migrate", "--limit", "1"], "--limit is not for migrate"),
            (&["jobs", "--data", "{}"], "takes no --data"),
            (&["jobs", "--expected-replies", "1"], "no replies to expect"),
            (&["alive", "7"], "only retry and discard take job ids"),
            (
                &["alive", "--schema", "x"],
                "--schema is for the queue commands",
            ),
            (
                &["workers", "--queue", "q"],
                "--queue is for the queue commands",
            ),
            (
                &["running", "--all-failed"],
                "--all-failed is for the queue commands",
            ),
            (&["history", "--limit", "5"], "--data '{\"limit\": 5}'"),
        ] {
            let e = action(&cli(args).unwrap()).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {needle:?} missing in {e}");
            assert_eq!(check(&cli(args).unwrap()), Err(e));
        }
        // What clap itself rejects: exit code 2 too.
        for args in [
            &["jobs", "--schema", "Bad-Name"][..],
            &["jobs", "--schema", ""],
            &["jobs", "--limit", "-1"],
            &["jobs", "--limit", "100001"],
            &["retry", "-3"],
            &["jobs", "--queue", ""],
        ] {
            let e = cli(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
        let e = cli(&["jobs", "--schema", "Bad-Name"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"Bad-Name\"") && e.contains("lowercase"), "{e}");
    }

    #[test]
    fn help_documents_the_queue_commands() {
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "migrate [--schema S]",
            "jobs [--queue Q] [--limit N]",
            "retry ID...",
            "discard ID...",
            "--all-failed",
            "4  queue commands",
            "dispatcherctl migrate",
            "Default schema: dispatcher",
        ] {
            assert!(help.contains(needle), "{needle:?} missing in\n{help}");
        }
    }

    #[test]
    fn data_parsing() {
        assert_eq!(parse_data(r#"{"a": 1}"#).unwrap()["a"], json!(1));
        assert!(parse_data("{}").unwrap().is_empty());
        let e = parse_data("\"x\"").unwrap_err();
        assert!(e.contains("a string"), "{e}");
        let e = parse_data("").unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
    }
}
