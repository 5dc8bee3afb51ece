//! The command line's unit tests.

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
fn help_documents_the_new_exit_code_and_flags() {
    let help = Cli::command().render_long_help().to_string();
    for needle in [
        "5  a reply carried an error",
        "--quiet-window",
        "--watch",
        "completions SHELL",
        "whole command may take",
    ] {
        assert!(help.contains(needle), "{needle:?} missing in\n{help}");
    }
}

#[test]
fn watch_and_local_commands() {
    let c = cli(&["running", "--watch", "2"]).unwrap();
    assert_eq!(c.watch, Some(Duration::from_secs(2)));
    assert_eq!(action(&c), Ok(Action::Control));
    assert_eq!(
        action(&cli(&["jobs", "--watch", "1"]).unwrap()),
        Ok(Action::Queue(QueueCommand::Jobs))
    );
    for args in [
        &["cancel", "--data", "{}", "--watch", "1"][..],
        &["run", "--data", "{}", "--watch", "1"],
        &["retry", "1", "--watch", "1"],
        &["frobnicate", "--watch", "1"],
        &["man", "--watch", "1"],
    ] {
        let e = action(&cli(args).unwrap()).unwrap_err();
        assert!(
            e.contains("--watch repeats read-only commands only"),
            "{args:?}: {e}"
        );
    }
    assert_eq!(
        cli(&["alive", "--watch", "0.01"]).unwrap_err().exit_code(),
        2
    );
    assert_eq!(
        action(&cli(&["completions", "zsh"]).unwrap()),
        Ok(Action::Completions(clap_complete::Shell::Zsh))
    );
    assert_eq!(action(&cli(&["man"]).unwrap()), Ok(Action::Man));
    let e = action(&cli(&["completions"]).unwrap()).unwrap_err();
    assert!(e.contains("bash, zsh, fish"), "{e}");
    // Completions and the man page need no database: they parse without `--database-url`
    // (DATABASE_URL may or may not be set where the tests run), and without either a command
    // that needs one says where to give it.
    let mut c = Cli::try_parse_from(["dispatcherctl", "man"]).unwrap();
    assert_eq!(action(&c), Ok(Action::Man));
    c.database_url = None;
    assert!(c.database_url().unwrap_err().contains("DATABASE_URL"));
}

#[test]
fn the_quiet_window_applies_without_an_expected_count() {
    assert_eq!(cli(&["alive"]).unwrap().quiet(), Some(DEFAULT_QUIET));
    let c = cli(&["alive", "--quiet-window", "0.5"]).unwrap();
    assert_eq!(c.quiet(), Some(Duration::from_millis(500)));
    let c = cli(&["alive", "--quiet-window", "0.5", "--expected-replies", "2"]).unwrap();
    assert_eq!(c.quiet(), None);
    assert_eq!(
        cli(&["alive", "--quiet-window", "-1"])
            .unwrap_err()
            .exit_code(),
        2
    );
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
