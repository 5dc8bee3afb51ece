//! Output: the `--json` array ([`format_json`]) and the readable sections ([`format_human`]),
//! read from the typed replies of [`dispatcher_core::control`]; the queue commands' output
//! ([`queue`]).

pub(crate) mod queue;
mod summary;
mod tables;
mod text;

use dispatcher_core::control::{
    AioTasksReply, ChunksReply, Command, HistoryReply, LogLevelReply, MainReply, MetricsReply,
    ProducersReply, Reply, RunReply, RunningReply, StatusReply, TasksReply, WorkersReply,
};
use serde_json::Value;

pub use tables::calls_table;
pub use text::{num, render_table, short_uuids, truncate, CELL_MAX_CHARS, UUID_SHOWN};

/// The `--json` output: one pretty-printed JSON array of the replies as they arrived, and a
/// newline.
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

/// One reply rendered for people (ends with a newline): `node <id>: error: ...` when it carries
/// an `error`, a table when it reads as the command's typed reply, its JSON otherwise.
pub fn format_reply(command: &str, reply: &Value) -> String {
    if !reply.is_object() {
        return format!("unexpected reply (not a JSON object): {reply}\n");
    }
    let reply = Reply::from_value(reply.clone());
    let node = if reply.node_id.is_empty() {
        "(no node_id)"
    } else {
        reply.node_id.as_str()
    };
    if let Some(error) = error_text(&reply) {
        return format!("node {node}: error: {error}\n");
    }
    match typed_section(command, &reply) {
        Some(section) => format!("node {node}:{section}"),
        None => format!("node {node}:\n{:#}\n", reply.body),
    }
}

/// The error a reply carries: its text, or its JSON when it is not a string.
fn error_text(reply: &Reply) -> Option<String> {
    match reply.error() {
        Some(text) => Some(text.to_owned()),
        None => reply.body.get("error").map(Value::to_string),
    }
}

/// What follows `node <id>:` for the commands shown as tables; `None` for other commands and for
/// replies that do not read as the command's typed reply.
fn typed_section(command: &str, reply: &Reply) -> Option<String> {
    let has = |field: &str| reply.body.get(field).is_some();
    match Command::parse(command)? {
        Command::Alive => Some(" alive\n".to_owned()),
        Command::Workers => reply
            .parse::<WorkersReply>()
            .ok()
            .map(|w| tables::workers(&w, &reply.body)),
        Command::Running => reply
            .parse::<RunningReply>()
            .ok()
            .map(|r| tables::running(&r)),
        Command::Cancel => reply
            .parse::<RunningReply>()
            .ok()
            .map(|r| tables::canceled(&r)),
        // Every field of these replies has a default: the one that makes them is required.
        Command::History if has("calls") => reply
            .parse::<HistoryReply>()
            .ok()
            .map(|h| tables::history(&h)),
        Command::Main if has("pool") => reply.parse::<MainReply>().ok().map(|m| tables::main(&m)),
        Command::Status if has("main") => reply
            .parse::<StatusReply>()
            .ok()
            .map(|s| summary::status(&s, &reply.body)),
        Command::Metrics if has("finished") || has("enabled") => reply
            .parse::<MetricsReply>()
            .ok()
            .map(|m| summary::metrics(&m)),
        Command::SetLogLevel if has("level") => reply
            .parse::<LogLevelReply>()
            .ok()
            .map(|l| summary::log_level(&l)),
        Command::Run if has("ack") => reply.parse::<RunReply>().ok().map(|r| summary::run(&r)),
        Command::Producers => reply
            .parse::<ProducersReply>()
            .ok()
            .map(|p| summary::producers(&p)),
        Command::Tasks => reply.parse::<TasksReply>().ok().map(|t| tables::tasks(&t)),
        Command::AioTasks => reply
            .parse::<AioTasksReply>()
            .ok()
            .map(|t| summary::aio_tasks(&t)),
        Command::Chunks if has("status") => reply
            .parse::<ChunksReply>()
            .ok()
            .map(|c| summary::chunks(&c)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
