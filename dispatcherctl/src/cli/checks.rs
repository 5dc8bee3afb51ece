//! The checks clap cannot make: which flags and arguments each command takes ([`action`]).

use super::{parse_job_id, show_input};
use super::{Action, Cli, Pick, QueueCommand, LOCAL_COMMANDS, QUEUE_COMMANDS};

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
                 status, history, metrics, aio_tasks, chunks, producers, tasks, jobs); {command:?} {}",
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
