//! The command line: [`Cli`], the checks clap cannot make ([`check`]), and the exit codes
//! ([`exit`]).

use std::time::Duration;

use clap::builder::NonEmptyStringValueParser;
use clap::Parser;
use dispatcher_core::message::kind_of;
use dispatcher_core::signing::SigningKey;
use serde_json::{Map, Value};

use crate::render::truncate;

/// The channel used when `--channel` is absent: the core's default listen channel.
pub const DEFAULT_CHANNEL: &str = "dispatcher";

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

/// Parses `--channel`: 1 to 63 bytes, no NUL (the core's rule).
pub fn parse_channel(text: &str) -> Result<String, String> {
    dispatcher_core::broker::validate_channel(text)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
}

fn show_input(text: &str) -> String {
    format!("'{}'", truncate(text, 200))
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
    fn data_parsing() {
        assert_eq!(parse_data(r#"{"a": 1}"#).unwrap()["a"], json!(1));
        assert!(parse_data("{}").unwrap().is_empty());
        let e = parse_data("\"x\"").unwrap_err();
        assert!(e.contains("a string"), "{e}");
        let e = parse_data("").unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
    }
}
