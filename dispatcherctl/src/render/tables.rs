//! The readable sections of the typed replies: each returns what follows `node <id>:`.

use dispatcher_core::control::{HistoryReply, MainReply, RunningEntry, RunningReply, WorkersReply};
use dispatcher_core::{Call, Outcome, WorkerState, WorkerStatus};
use serde_json::Value;

use super::text::{count, ms, or_dash, render_table, slot_order, text_or_dash};

/// `workers`: one row per worker, `worker-2` before `worker-10`. `raw` is the reply as sent, for
/// status words this version does not know.
pub(super) fn workers(workers: &WorkersReply, raw: &Value) -> String {
    let mut sorted: Vec<(&String, &WorkerStatus)> = workers.iter().collect();
    sorted.sort_by_key(|(key, _)| slot_order(key));
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|(key, w)| {
            let word = raw
                .get(key.as_str())
                .and_then(|v| v.get("status"))
                .and_then(Value::as_str);
            vec![
                (*key).clone(),
                or_dash(w.pid),
                worker_state(w, word),
                w.finished_count.to_string(),
                or_dash(w.current_task.as_deref()),
                or_dash(w.current_task_uuid.as_deref()),
                format!("{:.1}s", w.age),
            ]
        })
        .collect();
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
    format!(" {}\n{table}", count(rows.len() as u64, "worker"))
}

/// A worker's state for people: `busy` while it runs a Call, `idle` when it is ready for one
/// (dispatcherd calls both `ready`), otherwise the status word as sent (`word`, for words this
/// version does not know).
pub(super) fn worker_state(w: &WorkerStatus, word: Option<&str>) -> String {
    if w.is_busy() {
        return "busy".to_owned();
    }
    match w.status {
        WorkerState::Ready => "idle".to_owned(),
        WorkerState::Unknown => word.unwrap_or("unknown").to_owned(),
        other => other.as_str().to_owned(),
    }
}

/// `running`: the Calls running or waiting.
pub(super) fn running(reply: &RunningReply) -> String {
    match slots(reply) {
        None => " nothing running or waiting\n".to_owned(),
        Some((n, table)) => format!(" {n} running or waiting\n{table}"),
    }
}

/// `cancel`: the Calls it canceled.
pub(super) fn canceled(reply: &RunningReply) -> String {
    match slots(reply) {
        None => " nothing matched; nothing canceled\n".to_owned(),
        Some((n, table)) => format!(" canceled {n}\n{table}"),
    }
}

/// The table of a [`RunningReply`] and its length; `None` when it lists nothing.
fn slots(reply: &RunningReply) -> Option<(usize, String)> {
    if reply.is_empty() {
        return None;
    }
    let mut sorted: Vec<(&String, &RunningEntry)> = reply.iter().collect();
    sorted.sort_by_key(|(key, _)| slot_order(key));
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|(key, e)| {
            vec![
                (*key).clone(),
                text_or_dash(&e.task),
                text_or_dash(&e.uuid),
                if e.args.is_empty() {
                    "-".to_owned()
                } else {
                    Value::Array(e.args.clone()).to_string()
                },
                if e.kwargs.is_empty() {
                    "-".to_owned()
                } else {
                    Value::Object(e.kwargs.clone()).to_string()
                },
            ]
        })
        .collect();
    Some((
        rows.len(),
        render_table(&["slot", "task", "uuid", "args", "kwargs"], &rows),
    ))
}

/// `history`: one row per finished Call, oldest first, uuids cut to 8 characters.
pub(super) fn history(reply: &HistoryReply) -> String {
    let rows: Vec<Vec<String>> = reply.calls.iter().map(history_row).collect();
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
    format!(" {}\n{table}", count(rows.len() as u64, "call"))
}

fn history_row(c: &Call) -> Vec<String> {
    let detail = match (&c.error, &c.result) {
        (Some(e), _) => e.clone(),
        (None, Some(r)) => r.to_string(),
        (None, None) => "-".to_owned(),
    };
    vec![
        text_or_dash(&c.uuid.chars().take(8).collect::<String>()),
        text_or_dash(&c.task),
        or_dash(c.outcome.map(Outcome::as_str)),
        ms(c.wait_ms),
        ms(c.run_ms),
        ms(c.total_ms),
        detail,
    ]
}

/// `main`: the reply as JSON without its pool (`raw`, as sent), then the pool summary.
pub(super) fn main(reply: &MainReply, raw: &Value) -> String {
    let mut rest = raw.clone();
    if let Value::Object(fields) = &mut rest {
        fields.remove("pool");
    }
    let p = &reply.pool;
    let table = render_table(
        &[
            "queued",
            "blocked",
            "delayed",
            "dispatched",
            "finished",
            "canceled",
            "discarded",
            "rejected",
            "retired",
        ],
        &[[
            p.queued_count,
            p.blocked_count,
            p.delayed_count,
            p.dispatched_count,
            p.finished_count,
            p.canceled_count,
            p.discard_count,
            p.rejected_count,
            p.retirement_count,
        ]
        .iter()
        .map(u64::to_string)
        .collect()],
    );
    format!(
        "\n{rest:#}\npool: {}, {} running, {} active\n{table}",
        count(p.worker_ct, "worker"),
        p.running_ct,
        p.active_task_ct
    )
}
