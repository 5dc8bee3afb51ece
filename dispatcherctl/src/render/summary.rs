//! The readable sections of the remaining replies: `status`, `metrics`, `set_log_level`, `run`,
//! `producers`, `aio_tasks`, `chunks`. Each returns what follows `node <id>:`.

use dispatcher_core::control::{
    AioTasksReply, ChunksReply, LogLevelReply, MetricsReply, ProducersReply, RunReply, StatusReply,
};
use serde_json::Value;

use super::queue::age;
use super::tables;
use super::text::{count, num, or_dash, render_table, short_uuids, text_or_dash};

/// `status`: `main`, then workers, running, metrics, producers, chunks, background tasks and
/// the newest Calls, each under its name.
pub(super) fn status(s: &StatusReply, raw: &Value) -> String {
    let workers_raw = raw.get("workers").cloned().unwrap_or(Value::Null);
    let mut out = tables::main(&s.main);
    out.push_str(&format!(
        "\nworkers:{}",
        tables::workers(&s.workers, &workers_raw)
    ));
    out.push_str(&format!("\nrunning:{}", tables::running(&s.running)));
    out.push_str(&format!("\nmetrics:{}", metrics(&s.metrics)));
    out.push_str(&format!("\nproducers:{}", producers(&s.producers)));
    out.push_str(&format!("\nchunks:{}", chunks(&s.chunks)));
    out.push_str(&format!("\nbackground tasks:{}", aio_tasks(&s.aio_tasks)));
    if let Some(h) = &s.history {
        out.push_str(&format!("\nnewest calls:{}", tables::history(h)));
    }
    out
}

/// `metrics`: the counters, one per row, and the metrics endpoint.
pub(super) fn metrics(m: &MetricsReply) -> String {
    let mut rows: Vec<Vec<String>> = [
        ("received", m.received),
        ("control", m.control),
        ("dispatched", m.dispatched),
        ("waiting", m.waiting),
        ("queue depth", m.queue_depth),
        ("partial chunked messages", m.partial_chunked_messages),
        ("history size", m.history_size),
        ("ignored fields", m.ignored_fields),
        ("signature failures", m.signature_failures),
    ]
    .iter()
    .map(|(name, n)| vec![(*name).to_owned(), n.to_string()])
    .collect();
    rows.extend(
        m.finished
            .iter()
            .map(|(outcome, n)| vec![format!("finished {outcome}"), n.to_string()]),
    );
    let endpoint = match (&m.status, m.enabled) {
        (Some(e), true) => format!(
            "metrics endpoint: {}:{}{}",
            e.host,
            or_dash(e.port),
            if e.ready { "" } else { " (not ready)" }
        ),
        (None, true) => "metrics endpoint: enabled".to_owned(),
        (_, false) => "metrics endpoint: none".to_owned(),
    };
    format!(
        "\n{}{endpoint}\n",
        render_table(&["metric", "value"], &rows)
    )
}

/// `set_log_level`: what changed.
pub(super) fn log_level(r: &LogLevelReply) -> String {
    format!(
        "\n{}",
        render_table(
            &["logger", "level", "previous level"],
            &[vec![
                text_or_dash(&r.logger),
                text_or_dash(&r.level),
                text_or_dash(&r.previous_level),
            ]],
        )
    )
}

/// `run`: the Call it made (its uuid in full: it is new, and `history` or `cancel` take it).
pub(super) fn run(r: &RunReply) -> String {
    let field = |name: &str| match r.ack.get(name) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => text_or_dash(s),
        Some(other) => other.to_string(),
    };
    format!(
        " started\n{}",
        render_table(
            &["task", "uuid", "args", "kwargs", "delay"],
            &[vec![
                field("task"),
                or_dash(r.uuid.as_deref()),
                field("args"),
                field("kwargs"),
                field("delay"),
            ]],
        )
    )
}

/// `producers`: where work comes from.
pub(super) fn producers(p: &ProducersReply) -> String {
    let rows: Vec<Vec<String>> = p
        .iter()
        .map(|(name, s)| {
            let check = s.broker_self_check.as_ref();
            let secs_ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |s| num(s * 1000.0));
            vec![
                name.clone(),
                s.produced_count.to_string(),
                age(s.uptime_seconds),
                or_dash(s.recycle_count),
                or_dash(check.map(|c| c.success_count)),
                secs_ms(check.and_then(|c| c.average_time_seconds)),
                secs_ms(check.and_then(|c| c.max_time_seconds)),
            ]
        })
        .collect();
    format!(
        " {}\n{}",
        count(rows.len() as u64, "producer"),
        render_table(
            &[
                "producer",
                "produced",
                "uptime",
                "replaced",
                "self-checks ok",
                "mean rtt ms",
                "max rtt ms",
            ],
            &rows,
        )
    )
}

/// `aio_tasks`: the service's background tasks.
pub(super) fn aio_tasks(t: &AioTasksReply) -> String {
    let rows: Vec<Vec<String>> = t
        .iter()
        .map(|(name, task)| {
            vec![
                name.clone(),
                if task.done { "done" } else { "running" }.to_owned(),
                text_or_dash(&task.stack),
            ]
        })
        .collect();
    format!(
        " {}\n{}",
        count(rows.len() as u64, "task"),
        render_table(&["task", "state", "doing"], &rows)
    )
}

/// `chunks`: the counts, then the payloads being assembled.
pub(super) fn chunks(c: &ChunksReply) -> String {
    let s = &c.status;
    let mut out = format!(
        " {} chunks received, {} assembled, {} errored, {} timed out, {} in progress\n",
        s.total_chunks_received,
        s.successful_assemblies,
        s.errored_assemblies,
        s.timed_out_assemblies,
        s.active_messages
    );
    if !c.partials.is_empty() {
        let ids = short_uuids(&c.partials.keys().map(String::as_str).collect::<Vec<_>>());
        let rows: Vec<Vec<String>> = c
            .partials
            .values()
            .zip(ids)
            .map(|(p, id)| {
                vec![
                    id,
                    p.chunks.len().to_string(),
                    or_dash(p.expected_total),
                    p.seconds_since_start.map_or_else(|| "-".to_owned(), age),
                ]
            })
            .collect();
        out.push_str(&render_table(&["message", "chunks", "of", "since"], &rows));
    }
    out
}
