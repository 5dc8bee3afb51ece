//! The readable sections of the typed replies: each returns what follows `node <id>:`.

use dispatcher_core::call::now_epoch;
use dispatcher_core::control::{
    HistoryReply, MainReply, RunningEntry, RunningReply, TasksReply, WorkersReply,
};
use dispatcher_core::{BrokerStatus, Call, Outcome, WorkerState, WorkerStatus};
use serde_json::Value;

use super::queue::{age, utc};
use super::text::{count, ms, num, or_dash, render_table, short_uuids, slot_order, text_or_dash};

/// `workers`: one row per worker, `worker-2` before `worker-10`. `raw` is the reply as sent, for
/// status words this version does not know.
pub(super) fn workers(workers: &WorkersReply, raw: &Value) -> String {
    let mut sorted: Vec<(&String, &WorkerStatus)> = workers.iter().collect();
    sorted.sort_by_key(|(key, _)| slot_order(key));
    let uuids = short_uuids(
        &sorted
            .iter()
            .map(|(_, w)| w.current_task_uuid.as_deref().unwrap_or(""))
            .collect::<Vec<_>>(),
    );
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .zip(uuids)
        .map(|((key, w), uuid)| {
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
                uuid,
                age(w.age),
            ]
        })
        .collect();
    let table = render_table(
        &["worker", "pid", "status", "finished", "task", "uuid", "age"],
        &rows,
    );
    format!(" {}\n{table}", count(rows.len() as u64, "worker"))
}

/// `tasks`: one row per registered task, by name, with its declared policy (`-`: none or the
/// publisher's default).
pub(super) fn tasks(tasks: &TasksReply) -> String {
    // Seconds without trailing zeros: `0.5s`, `30s`.
    let secs = |v: f64| {
        let n = num(v);
        let n = if n.contains('.') {
            n.trim_end_matches('0').trim_end_matches('.')
        } else {
            &n
        };
        format!("{n}s")
    };
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|(name, p)| {
            vec![
                name.clone(),
                p.timeout_s.map_or_else(|| "-".to_owned(), secs),
                text_or_dash(&p.on_duplicate),
                or_dash(p.queue.as_deref()),
                p.max_attempts.to_string(),
                secs(p.backoff_s),
                yes_no(p.unique),
                or_dash(p.concurrency),
                yes_no(p.context),
            ]
        })
        .collect();
    let table = render_table(
        &[
            "task",
            "timeout",
            "on_duplicate",
            "queue",
            "attempts",
            "backoff",
            "unique",
            "concurrency",
            "context",
        ],
        &rows,
    );
    format!(
        " {}
{table}",
        count(rows.len() as u64, "task")
    )
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

/// The table of a [`RunningReply`] and its length; `None` when it lists nothing. A running Call
/// shows how long it has run, a delayed one how long until it is due (the service's figures;
/// from its timestamps and this clock when a service does not send them).
pub(super) fn slots(reply: &RunningReply) -> Option<(usize, String)> {
    if reply.is_empty() {
        return None;
    }
    let mut sorted: Vec<(&String, &RunningEntry)> = reply.iter().collect();
    sorted.sort_by_key(|(key, _)| slot_order(key));
    let uuids = short_uuids(
        &sorted
            .iter()
            .map(|(_, e)| e.uuid.as_str())
            .collect::<Vec<_>>(),
    );
    let now = now_epoch();
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .zip(uuids)
        .map(|((key, e), uuid)| {
            let ran = e.run_s.or_else(|| e.started_at.map(|t| now - t));
            let due = e.due_in_s.or_else(|| e.due_at.map(|t| (t - now).max(0.0)));
            vec![
                (*key).clone(),
                text_or_dash(&e.task),
                uuid,
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
                ran.map_or_else(|| "-".to_owned(), age),
                due.map_or_else(|| "-".to_owned(), age),
            ]
        })
        .collect();
    Some((
        rows.len(),
        render_table(
            &[
                "slot", "task", "uuid", "args", "kwargs", "ran for", "due in",
            ],
            &rows,
        ),
    ))
}

/// `history`: one row per finished Call, oldest first.
pub(super) fn history(reply: &HistoryReply) -> String {
    let n = count(reply.calls.len() as u64, "call");
    if reply.calls.is_empty() {
        return format!(" {n}\n");
    }
    format!(" {n}\n{}", calls_table(&reply.calls))
}

/// The table of finished Calls that `dispatcherctl history` prints (and the demo, so the two
/// read alike): each Call's uuid as short as still picks it (the commands take a uuid's
/// beginning), task, outcome, attempt (durable queue jobs), when it finished (UTC), wait, run
/// and total milliseconds, and the error or the result, cut at
/// [`CELL_MAX_CHARS`](super::text::CELL_MAX_CHARS).
pub fn calls_table(calls: &[Call]) -> String {
    let uuids = short_uuids(&calls.iter().map(|c| c.uuid.as_str()).collect::<Vec<_>>());
    let rows: Vec<Vec<String>> = calls
        .iter()
        .zip(uuids)
        .map(|(c, uuid)| {
            let detail = match (&c.error, &c.result) {
                (Some(e), _) => e.clone(),
                (None, Some(r)) => r.to_string(),
                (None, None) => "-".to_owned(),
            };
            vec![
                uuid,
                text_or_dash(&c.task),
                or_dash(c.outcome.map(Outcome::as_str)),
                or_dash(c.attempt),
                c.finished_at.map_or_else(|| "-".to_owned(), utc),
                ms(c.wait_ms),
                ms(c.run_ms),
                ms(c.total_ms),
                detail,
            ]
        })
        .collect();
    render_table(
        &[
            "uuid",
            "task",
            "outcome",
            "attempt",
            "finished (UTC)",
            "wait ms",
            "run ms",
            "total ms",
            "result / error",
        ],
        &rows,
    )
}

/// `main`: pid, uptime, counts and tasks on a few lines, then the brokers and the pool as
/// tables.
pub(super) fn main(reply: &MainReply) -> String {
    let mut out = format!(
        "\npid {}, up {}, {} received, {} control commands\n",
        reply.pid,
        age(reply.uptime),
        reply.received_count,
        reply.control_count
    );
    out.push_str(&format!(
        "tasks ({}): {}\n",
        reply.registered_tasks.len(),
        if reply.registered_tasks.is_empty() {
            "-".to_owned()
        } else {
            reply.registered_tasks.join(", ")
        }
    ));
    if !reply.brokers.is_empty() {
        out.push_str(&brokers(&reply.brokers));
    }
    let p = &reply.pool;
    out.push_str(&format!(
        "pool: {}, {} running, {} active\n",
        count(p.worker_ct, "worker"),
        p.running_ct,
        p.active_task_ct
    ));
    out.push_str(&render_table(
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
    ));
    out
}

/// The brokers of `main`: health, replacements and the self-check's round trips.
fn brokers(brokers: &[BrokerStatus]) -> String {
    let rows: Vec<Vec<String>> = brokers
        .iter()
        .map(|b| {
            let check = b.self_check.as_ref();
            let rtt = |f: fn(&dispatcher_core::broker::SelfCheckStatus) -> Option<f64>| {
                check.and_then(f).map_or_else(|| "-".to_owned(), num)
            };
            vec![
                text_or_dash(&b.broker),
                match b.connected {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "no".to_owned(),
                    None => "-".to_owned(),
                },
                b.recycles.to_string(),
                or_dash(b.last_recycle_reason.as_deref()),
                check.map_or_else(
                    || "-".to_owned(),
                    |c| format!("{} ({} failed)", c.count, c.failures),
                ),
                rtt(|c| c.last_rtt_ms),
                rtt(|c| c.mean_rtt_ms),
                rtt(|c| c.max_rtt_ms),
            ]
        })
        .collect();
    render_table(
        &[
            "broker",
            "connected",
            "replaced",
            "last replaced because",
            "self-checks",
            "last rtt ms",
            "mean rtt ms",
            "max rtt ms",
        ],
        &rows,
    )
}
