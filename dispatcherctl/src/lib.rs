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
//!   Passwords are never shown in messages.
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
//! Output: without `--json`, one section per reply (per node): `workers`, `running`, `cancel` and
//! `history` as tables, `alive` as `node X: alive`, replies with an `error` field as
//! `node X: error: ...`, anything else as pretty JSON. With `--json`, stdout holds exactly one JSON
//! array of the reply objects, in arrival order, and nothing else; diagnostics always go to
//! stderr.
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
//! The logic lives in this library ([`run`], [`format_human`], [`format_json`], [`parse_data`],
//! [`redact_url`]); the binary only parses the command line and writes the [`Report`].
#![warn(missing_docs)]

use std::time::Duration;

use clap::builder::NonEmptyStringValueParser;
use clap::Parser;
use dispatcher_broker_pg::{PgBroker, PgBrokerConfig};
use serde_json::{Map, Value};

/// The channel used when `--channel` is absent: the core's default listen channel.
pub const DEFAULT_CHANNEL: &str = "dispatcher";

/// Longest text shown in a table cell before it is cut with `…`.
pub const CELL_MAX_CHARS: usize = 60;

/// How long connecting may take at most, whatever the connection string says.
const CONNECT_GUARD: Duration = Duration::from_secs(30);

/// Exit codes of `dispatcherctl`.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Fewer replies than expected arrived within the timeout (none at all, without
    /// `--expected-replies`).
    pub const MISSING_REPLIES: u8 = 1;
    /// Usage error (also what clap uses for bad flags).
    pub const USAGE: u8 = 2;
    /// Could not connect to PostgreSQL, or the connection failed while sending.
    pub const CONNECT: u8 = 3;
}

const AFTER_HELP: &str = "\
Default channel: dispatcher (the services' default listen channel).

Exit codes:
  0  success (replies that carry an \"error\" field still count as replies)
  1  fewer replies than --expected-replies arrived within the timeout (what arrived is still
     printed); without --expected-replies: no service replied at all within the timeout
  2  usage error: bad flags, --data not valid JSON or not a JSON object, invalid channel name,
     unparseable connection string, cancel without --data (use --data '{}' to cancel everything)
  3  cannot connect to PostgreSQL (or the connection failed while sending)

With --json, stdout holds exactly one JSON array of the reply objects; diagnostics go to stderr.";

/// The command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "dispatcherctl",
    version,
    about = "Sends a control command to dispatcher services and prints their replies",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// PostgreSQL connection string: a URL (postgres://user:pass@host:5432/db) or key=value
    /// settings (host=127.0.0.1 user=postgres dbname=app)
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub database_url: String,

    /// Channel the services listen on
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CHANNEL, value_parser = parse_channel)]
    pub channel: String,

    /// Print exactly one JSON array of the reply objects on stdout, nothing else
    #[arg(long)]
    pub json: bool,

    /// Seconds to wait for replies (fractions allowed)
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Stop waiting once N replies arrived; fewer within the timeout is exit code 1. Without it,
    /// the whole timeout is waited and every reply that arrives is printed
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub expected_replies: Option<u32>,

    /// Control command: alive, main, workers, running, cancel, status, set_log_level, run,
    /// history, metrics (any other name is sent too; services reply with an error)
    #[arg(value_name = "COMMAND", value_parser = NonEmptyStringValueParser::new())]
    pub command: String,

    /// control_data as a JSON object, e.g. '{"task": "demo.sleep"}'; required for cancel ('{}'
    /// cancels everything)
    #[arg(long, value_name = "JSON", value_parser = parse_data)]
    pub data: Option<Map<String, Value>>,

    /// Sign the command with the secret in this file (services that require signatures accept
    /// only signed commands) and accept only signed replies. DISPATCHER_SIGNING_SECRET holds the
    /// secret itself and wins over the file
    #[arg(long, value_name = "FILE")]
    pub signing_secret_file: Option<std::path::PathBuf>,
}

/// The signing key from `DISPATCHER_SIGNING_SECRET` or `--signing-secret-file`, if any.
fn signing_key(cli: &Cli) -> Result<Option<dispatcher_core::signing::SigningKey>, String> {
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
    dispatcher_core::signing::SigningKey::new(&secret)
        .map(Some)
        .map_err(|e| format!("signing secret: {e}"))
}

/// What a run produced: text for stdout, lines for stderr and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Everything for stdout (empty when nothing is to be printed there).
    pub stdout: String,
    /// Diagnostics, one message per entry, for stderr.
    pub stderr: Vec<String>,
    /// The exit code (see [`exit`]).
    pub code: u8,
}

impl Report {
    fn failure(code: u8, message: String) -> Report {
        Report {
            stdout: String::new(),
            stderr: vec![message],
            code,
        }
    }
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

/// Parses `--channel`: 1 to 63 bytes, no NUL (the core's rule).
pub fn parse_channel(text: &str) -> Result<String, String> {
    dispatcher_core::broker::validate_channel(text)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn show_input(text: &str) -> String {
    format!("'{}'", truncate(text, 200))
}

/// A connection string fit for messages: the password of a URL (`user:***@`, `password=***` in
/// its query) or of `key=value` settings (`password=***`) is replaced. A `key=value` string that
/// cannot be read and mentions a password is not shown at all.
pub fn redact_url(url: &str) -> String {
    let url = url.trim();
    match url.find("://") {
        Some(scheme_end) => redact_uri(url, scheme_end),
        None => redact_key_values(url),
    }
}

fn redact_uri(url: &str, scheme_end: usize) -> String {
    let (head, rest) = url.split_at(scheme_end + 3);
    let (before_query, query) = match rest.find('?') {
        Some(q) => (&rest[..q], Some(&rest[q + 1..])),
        None => (rest, None),
    };
    let mut out = head.to_owned();
    match before_query.rfind('@') {
        Some(at) => {
            let creds = &before_query[..at];
            match creds.find(':') {
                Some(c) => {
                    out.push_str(&creds[..c]);
                    out.push_str(":***");
                }
                None => out.push_str(creds),
            }
            out.push_str(&before_query[at..]);
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

fn redact_key_values(s: &str) -> String {
    match split_key_values(s) {
        Some(pairs) => pairs
            .into_iter()
            .map(|(k, v)| {
                if k.eq_ignore_ascii_case("password") {
                    format!("{k}=***")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        None if s.to_ascii_lowercase().contains("password") => {
            "<connection string not shown: it could not be read and may hold a password>".to_owned()
        }
        None => s.to_owned(),
    }
}

/// Splits libpq `key=value` settings into (key, raw value text) pairs; `None` when malformed.
fn split_key_values(s: &str) -> Option<Vec<(&str, &str)>> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(i);
        if i >= b.len() {
            return Some(out);
        }
        let key_start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s.get(key_start..i)?;
        i = skip_ws(i);
        if key.is_empty() || b.get(i) != Some(&b'=') {
            return None;
        }
        i = skip_ws(i + 1);
        let value_start = i;
        if b.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match b.get(i) {
                    None => return None,
                    Some(b'\\') => i += 2,
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
        }
        let end = i.min(b.len());
        out.push((key, s.get(value_start..end)?));
    }
}

/// Checks what clap cannot: `cancel` needs `--data` (an empty filter matches every Call).
pub fn check(cli: &Cli) -> Result<(), String> {
    if cli.command == "cancel" && cli.data.is_none() {
        return Err(format!(
            "cancel without --data would cancel every running and waiting Call of every service \
             on channel {:?}; give a filter (e.g. --data '{{\"uuid\": \"...\"}}' or \
             '{{\"task\": \"...\"}}'), or --data '{{}}' to really cancel everything",
            cli.channel
        ));
    }
    Ok(())
}

/// Connects, sends the command, collects the replies and renders them.
pub async fn run(cli: &Cli) -> Report {
    if let Err(e) = check(cli) {
        return Report::failure(exit::USAGE, e);
    }
    let signing = match signing_key(cli) {
        Ok(k) => k,
        Err(e) => return Report::failure(exit::USAGE, e),
    };
    let shown = redact_url(&cli.database_url);
    let config = match PgBrokerConfig::from_url(&cli.database_url) {
        Ok(c) => c,
        Err(e) => {
            // The broker's own message repeats the string, and redacts only URLs: show the
            // parser's reason alone.
            let reason = match &e {
                dispatcher_broker_pg::Error::Config { source, .. } => error_chain(source),
                other => error_chain(other),
            };
            return Report::failure(
                exit::USAGE,
                format!(
                    "invalid connection string (--database-url or DATABASE_URL) {shown}: {reason}"
                ),
            );
        }
    };
    let broker = match tokio::time::timeout(CONNECT_GUARD, PgBroker::with_config(config)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return Report::failure(
                exit::CONNECT,
                format!("cannot connect to {shown}: {}", error_chain(&e)),
            )
        }
        Err(_) => {
            return Report::failure(
                exit::CONNECT,
                format!(
                    "cannot connect to {shown}: no connection within {}",
                    secs(CONNECT_GUARD)
                ),
            )
        }
    };
    let data = cli.data.clone().unwrap_or_default();
    let expected = cli.expected_replies.map(|n| n as usize);
    let replies = match dispatcher_core::control::request_signed(
        &broker,
        &cli.channel,
        &cli.command,
        data,
        expected,
        cli.timeout,
        signing.as_ref(),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            return Report::failure(
                exit::CONNECT,
                format!(
                    "could not send {:?} on channel {:?} via {shown}: {}",
                    cli.command,
                    cli.channel,
                    error_chain(&e)
                ),
            )
        }
    };
    drop(broker);
    finish(cli, replies)
}

/// Renders the replies that arrived and decides the exit code (the part of [`run`] after the
/// replies are in).
pub fn finish(cli: &Cli, replies: Vec<Value>) -> Report {
    let stdout = if cli.json {
        format_json(&replies)
    } else {
        format_human(&cli.command, &replies)
    };
    let mut report = Report {
        stdout,
        stderr: Vec::new(),
        code: exit::OK,
    };
    match cli.expected_replies {
        Some(n) if replies.len() < n as usize => {
            report.code = exit::MISSING_REPLIES;
            report.stderr.push(format!(
                "only {} of {} expected replies arrived on channel {:?} within {}",
                replies.len(),
                n,
                cli.channel,
                secs(cli.timeout)
            ));
        }
        None if replies.is_empty() => {
            report.code = exit::MISSING_REPLIES;
            report.stderr.push(format!(
                "no service replied on channel {:?} within {}",
                cli.channel,
                secs(cli.timeout)
            ));
        }
        _ => {}
    }
    report
}

/// An error's message followed by those of its sources that it does not already include.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        next = s.source();
    }
    out
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// The `--json` output: one pretty-printed JSON array of the replies, and a newline.
pub fn format_json(replies: &[Value]) -> String {
    format!("{:#}\n", Value::Array(replies.to_vec()))
}

/// The readable output: one section per reply, in arrival order, separated by blank lines.
pub fn format_human(command: &str, replies: &[Value]) -> String {
    replies
        .iter()
        .map(|r| format_reply(command, r))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One reply rendered for people (ends with a newline).
pub fn format_reply(command: &str, reply: &Value) -> String {
    let Value::Object(obj) = reply else {
        return format!("unexpected reply (not a JSON object): {reply}\n");
    };
    let node = obj
        .get("node_id")
        .and_then(Value::as_str)
        .unwrap_or("(no node_id)");
    if let Some(err) = obj.get("error") {
        return format!("node {node}: error: {}\n", plain(err));
    }
    let body: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| k.as_str() != "node_id")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let rendered = match command {
        "alive" => return format!("node {node}: alive\n"),
        "workers" => workers_table(&body),
        "running" => slots_table(&body).map(|t| match t {
            None => "nothing running or waiting\n".to_owned(),
            Some((n, t)) => format!("{n} running or waiting\n{t}"),
        }),
        "cancel" => slots_table(&body).map(|t| match t {
            None => "nothing matched; nothing canceled\n".to_owned(),
            Some((n, t)) => format!("canceled {n}\n{t}"),
        }),
        "history" => history_table(&body),
        _ => None,
    };
    match rendered {
        Some(text) => format!("node {node}: {text}"),
        None => format!("node {node}:\n{:#}\n", Value::Object(body)),
    }
}

fn workers_table(body: &Map<String, Value>) -> Option<String> {
    let mut workers: Vec<(&String, &Map<String, Value>)> = Vec::new();
    for (k, v) in body {
        workers.push((k, v.as_object()?));
    }
    workers.sort_by_key(|a| slot_order(a.0));
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|(k, w)| {
            vec![
                (*k).clone(),
                cell(w.get("pid")),
                cell(w.get("status")),
                cell(w.get("finished_count")),
                cell(w.get("current_task")),
                cell(w.get("current_task_uuid")),
                match w.get("age").and_then(Value::as_f64) {
                    Some(a) => format!("{a:.1}s"),
                    None => cell(w.get("age")),
                },
            ]
        })
        .collect();
    let n = rows.len();
    let table = render_table(
        &[
            "worker",
            "pid",
            "status",
            "finished",
            "current task",
            "uuid",
            "age",
        ],
        &rows,
    );
    Some(format!(
        "{n} worker{}\n{table}",
        if n == 1 { "" } else { "s" }
    ))
}

/// The `running`/`cancel` table: `None` when the reply is not of that shape, `Some(None)` when
/// it lists nothing.
#[allow(clippy::type_complexity)]
fn slots_table(body: &Map<String, Value>) -> Option<Option<(usize, String)>> {
    let mut slots: Vec<(&String, &Map<String, Value>)> = Vec::new();
    for (k, v) in body {
        slots.push((k, v.as_object()?));
    }
    if slots.is_empty() {
        return Some(None);
    }
    slots.sort_by_key(|a| slot_order(a.0));
    let rows: Vec<Vec<String>> = slots
        .iter()
        .map(|(k, m)| {
            vec![
                (*k).clone(),
                cell(m.get("task")),
                cell(m.get("uuid")),
                cell(m.get("args")),
                cell(m.get("kwargs")),
            ]
        })
        .collect();
    Some(Some((
        rows.len(),
        render_table(&["slot", "task", "uuid", "args", "kwargs"], &rows),
    )))
}

fn history_table(body: &Map<String, Value>) -> Option<String> {
    let calls = body.get("calls")?.as_array()?;
    let rows: Vec<Vec<String>> = calls
        .iter()
        .map(|c| {
            let get = |k: &str| c.get(k);
            let uuid = get("uuid").and_then(Value::as_str).unwrap_or("-");
            let detail = match (get("error"), get("result")) {
                (Some(e), _) if !e.is_null() => plain(e),
                (_, Some(r)) if !r.is_null() => r.to_string(),
                _ => "-".to_owned(),
            };
            vec![
                uuid.chars().take(8).collect(),
                cell(get("task")),
                cell(get("outcome")),
                ms(get("wait_ms")),
                ms(get("run_ms")),
                ms(get("total_ms")),
                detail,
            ]
        })
        .collect();
    let n = rows.len();
    let table = render_table(
        &[
            "uuid",
            "task",
            "outcome",
            "wait ms",
            "run ms",
            "total ms",
            "error / result",
        ],
        &rows,
    );
    Some(format!(
        "{n} call{}\n{table}",
        if n == 1 { "" } else { "s" }
    ))
}

/// Orders `worker-2` before `worker-10`, and workers before queued, blocked and delayed slots.
fn slot_order(key: &str) -> (u8, u64, String) {
    let (prefix, number) = match key.rsplit_once('-') {
        Some((p, n)) => (p, n.parse::<u64>().ok()),
        None => (key, None),
    };
    let rank = match prefix {
        "worker" => 0,
        "queued" => 1,
        "blocked" => 2,
        "delayed" => 3,
        _ => 4,
    };
    (rank, number.unwrap_or(u64::MAX), key.to_owned())
}

/// A string as itself, anything else as compact JSON.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A table cell: `-` for absent or null, strings as themselves, other values as compact JSON.
fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_owned(),
        Some(v) => plain(v),
    }
}

fn ms(v: Option<&Value>) -> String {
    match v.and_then(Value::as_f64) {
        Some(x) => format!("{x:.1}"),
        None => "-".to_owned(),
    }
}

/// At most `max` characters of `s`, the last one `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Renders rows under headers, columns left-aligned and two spaces apart, with a dashed rule
/// under the headers. Cells lose control characters and are cut at [`CELL_MAX_CHARS`].
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let clean = |s: &str| {
        let one_line: String = s
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        truncate(&one_line, CELL_MAX_CHARS)
    };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| clean(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(c);
            if i + 1 < cells.len() {
                let w = widths.get(i).copied().unwrap_or(0);
                out.extend(std::iter::repeat_n(
                    ' ',
                    w.saturating_sub(c.chars().count()),
                ));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.iter().map(|h| (*h).to_owned()).collect());
    out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use serde_json::json;

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
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
    fn redaction() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_url("postgresql://u:p@ss@h/db?sslmode=require&password=x"),
            "postgresql://u:***@h/db?sslmode=require&password=***"
        );
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("host=h user=u password=secret dbname=d"),
            "host=h user=u password=*** dbname=d"
        );
        assert_eq!(
            redact_url("host=h password = 'se cr\\'et' port=1"),
            "host=h password=*** port=1"
        );
        assert_eq!(
            redact_url("host=127.0.0.1 port=1 user=postgres connect_timeout=2"),
            "host=127.0.0.1 port=1 user=postgres connect_timeout=2"
        );
        let r = redact_url("host=h password='unterminated");
        assert!(!r.contains("unterminated"), "{r}");
    }

    #[test]
    fn cancel_needs_a_filter() {
        let e = check(&cli(&["cancel"]).unwrap()).unwrap_err();
        assert!(e.contains("--data '{}'"), "{e}");
        assert!(check(&cli(&["cancel", "--data", "{}"]).unwrap()).is_ok());
        assert!(check(&cli(&["running"]).unwrap()).is_ok());
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

    #[test]
    fn alive_and_errors() {
        assert_eq!(
            format_reply("alive", &json!({"node_id": "n1"})),
            "node n1: alive\n"
        );
        assert_eq!(
            format_reply(
                "nope",
                &json!({"error": "No control method nope", "node_id": "n1"})
            ),
            "node n1: error: No control method nope\n"
        );
        assert!(format_reply("alive", &json!([1])).starts_with("unexpected reply"));
    }

    #[test]
    fn workers_table_sorted_numerically() {
        let reply = json!({
            "node_id": "n1",
            "worker-10": {"worker_id": 10, "pid": 7, "status": "idle", "finished_count": 0,
                          "current_task": null, "current_task_uuid": null, "age": 1.3},
            "worker-2": {"worker_id": 2, "pid": 7, "status": "busy", "finished_count": 3,
                         "current_task": "t.sleep", "current_task_uuid": "abc", "age": 0.5},
        });
        let out = format_reply("workers", &reply);
        assert!(out.starts_with("node n1: 2 workers\n"), "{out}");
        assert!(
            out.contains("worker     pid  status  finished  current task  uuid  age"),
            "{out}"
        );
        let w2 = out.find("worker-2 ").unwrap();
        let w10 = out.find("worker-10").unwrap();
        assert!(w2 < w10, "{out}");
        assert!(
            out.contains("t.sleep") && out.contains("1.2s") || out.contains("1.3s"),
            "{out}"
        );
    }

    #[test]
    fn running_and_cancel_tables() {
        let reply = json!({
            "node_id": "n1",
            "queued-0": {"task": "t.add", "uuid": "u2", "args": [1, 2], "kwargs": {}},
            "worker-1": {"task": "t.sleep", "uuid": "u1", "args": [5], "kwargs": {}},
        });
        let out = format_reply("running", &reply);
        assert!(out.starts_with("node n1: 2 running or waiting\n"), "{out}");
        assert!(out.contains("slot"), "{out}");
        assert!(
            out.find("worker-1").unwrap() < out.find("queued-0").unwrap(),
            "{out}"
        );
        assert!(out.contains("[1,2]"), "{out}");
        let out = format_reply("cancel", &reply);
        assert!(out.starts_with("node n1: canceled 2\n"), "{out}");
        let out = format_reply("running", &json!({"node_id": "n1"}));
        assert_eq!(out, "node n1: nothing running or waiting\n");
    }

    #[test]
    fn history_table_truncates() {
        let long = "x".repeat(200);
        let reply = json!({"node_id": "n1", "calls": [
            {"uuid": "0123456789abcdef", "task": "t.add", "outcome": "ok", "result": 3,
             "wait_ms": 1.234, "run_ms": 0.5, "total_ms": 1.734},
            {"uuid": "fedcba9876543210", "task": "t.fail", "outcome": "error", "error": long,
             "wait_ms": null, "run_ms": null, "total_ms": 2.0},
        ]});
        let out = format_reply("history", &reply);
        assert!(out.starts_with("node n1: 2 calls\n"), "{out}");
        assert!(
            out.contains("uuid      task    outcome  wait ms  run ms  total ms  error / result"),
            "{out}"
        );
        assert!(out.contains("01234567  t.add"), "{out}");
        assert!(!out.contains("0123456789"), "{out}");
        assert!(out.contains("1.2") && out.contains('…'), "{out}");
        assert!(!out.contains(&"x".repeat(CELL_MAX_CHARS)), "{out}");
    }

    #[test]
    fn unexpected_shapes_fall_back_to_json() {
        let out = format_reply("workers", &json!({"node_id": "n", "weird": 1}));
        assert!(out.starts_with("node n:\n{"), "{out}");
        let out = format_reply("main", &json!({"node_id": "n", "pid": 1}));
        assert_eq!(out, "node n:\n{\n  \"pid\": 1\n}\n");
    }

    #[test]
    fn json_output_is_one_array() {
        let replies = vec![json!({"node_id": "a"}), json!({"node_id": "b"})];
        let out = format_json(&replies);
        let back: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back, Value::Array(replies));
        assert_eq!(format_json(&[]), "[]\n");
    }

    #[test]
    fn exit_codes_for_missing_replies() {
        let c = cli(&["alive", "--expected-replies", "3"]).unwrap();
        let r = finish(&c, vec![json!({"node_id": "a"}), json!({"node_id": "b"})]);
        assert_eq!(r.code, exit::MISSING_REPLIES);
        assert!(r.stderr[0].contains("only 2 of 3"), "{:?}", r.stderr);
        assert!(r.stdout.contains("node a: alive"));
        let c = cli(&["alive", "--timeout", "1"]).unwrap();
        let r = finish(&c, vec![]);
        assert_eq!(r.code, exit::MISSING_REPLIES);
        assert_eq!(
            r.stderr,
            vec!["no service replied on channel \"dispatcher\" within 1s"]
        );
        let r = finish(&c, vec![json!({"node_id": "a"})]);
        assert_eq!(r.code, exit::OK);
        assert!(r.stderr.is_empty());
    }
}
