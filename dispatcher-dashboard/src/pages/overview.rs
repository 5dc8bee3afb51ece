//! The overview and workers pages: numbers, charts, nodes, queue counts, events, workers.

use maud::{html, Markup};

use super::format::{clock, ms, rate, short, span};
use crate::collect::{now_epoch, percentile, WINDOW_S};
use crate::snapshot::{Sample, Snapshot};

pub(super) fn numbers(snap: &Snapshot) -> Markup {
    let (received, finished, failed) = snap.totals();
    let last = snap.series.last().copied().unwrap_or_default();
    let running: u64 = snap.nodes.iter().map(|n| n.main.pool.running_ct).sum();
    let queued: u64 = snap
        .nodes
        .iter()
        .map(|n| n.main.pool.queued_count + n.main.pool.delayed_count + n.main.pool.blocked_count)
        .sum();
    // Publish → start over the Calls that finished in the last minute.
    let mut recent: Vec<f64> = snap
        .calls
        .iter()
        .take_while(|c| c.finished_at.is_some_and(|f| snap.at - f <= 60.0))
        .filter(|c| c.attempt.unwrap_or(1) <= 1)
        .filter_map(|c| {
            let sent = c.time_pub.or(c.received_at)?;
            Some(((c.started_at? - sent) * 1000.0).max(0.0))
        })
        .collect();
    recent.sort_by(f64::total_cmp);
    let (p50, p99) = if recent.is_empty() {
        (None, None)
    } else {
        (
            Some(percentile(&recent, 0.5)),
            Some(percentile(&recent, 0.99)),
        )
    };
    html! {
        div.cards {
            div.card { div.label { "received" } div.value #received-total { (received) } div.sub { (rate(last.received_ps)) } }
            div.card { div.label { "finished" } div.value #finished-total { (finished) } div.sub { (rate(last.finished_ps)) } }
            div.card { div.label { "failed" } div.value #failed-total { (failed) } div.sub { (rate(last.failed_ps)) } }
            div.card { div.label { "running" } div.value #running-now { (running) } div.sub { (queued) " waiting" } }
            div.card title="over the Calls finished in the last minute" { div.label { "publish → start" } div.value #latency-p50 { (ms(p50)) } div.sub { "p99 " (ms(p99)) " · last minute" } }
        }
    }
}

/// A chart's line: its name, its CSS class, and its value in a sample.
type Line<'a> = (&'a str, &'a str, fn(&Sample) -> Option<f64>);

/// A line chart of the last 15 minutes (inline SVG).
pub(super) fn chart(
    title: &str,
    series: &[Sample],
    now: f64,
    lines: &[Line<'_>],
    unit: &str,
) -> Markup {
    const W: f64 = 600.0;
    const H: f64 = 120.0;
    let max = series
        .iter()
        .flat_map(|s| lines.iter().filter_map(move |(_, _, f)| f(s)))
        .fold(0.0f64, f64::max)
        .max(1.0);
    // The window grows with the data, from a minute to the whole 15 minutes kept.
    let window = series
        .first()
        .map(|s| (now - s.t).clamp(60.0, WINDOW_S))
        .unwrap_or(60.0);
    let x = |t: f64| ((t - (now - window)) / window * W).clamp(0.0, W);
    let y = |v: f64| H - 4.0 - v / max * (H - 12.0);
    html! {
        figure.chart {
            figcaption {
                (title)
                @for (name, class, _) in lines { span class={"key " (class)} { (name) } }
                span.max { "max " (format!("{max:.1}")) " " (unit) }
            }
            svg viewBox={"0 0 " (W) " " (H)} preserveAspectRatio="none" role="img" aria-label=(title) {
                line.grid x1="0" x2=(W) y1=(y(max / 2.0)) y2=(y(max / 2.0)) {}
                @for (_, class, f) in lines {
                    @let points: String = series.iter().filter_map(|s| f(s).map(|v| format!("{:.1},{:.1} ", x(s.t), y(v)))).collect();
                    polyline class={"line " (class)} points=(points) {}
                    @if let Some(v) = series.last().and_then(f) {
                        circle class={"pt " (class)} cx=(format!("{:.1}", x(series.last().map_or(now, |s| s.t)))) cy=(format!("{:.1}", y(v))) r="3" {}
                    }
                }
            }
            div.axis { span { "−" (span(window)) } span { "now" } }
        }
    }
}

pub(super) fn charts(snap: &Snapshot) -> Markup {
    let now = if snap.at > 0.0 { snap.at } else { now_epoch() };
    html! {
        div.charts {
            (chart("Throughput", &snap.series, now, &[
                ("received", "c1", |s: &Sample| Some(s.received_ps)),
                ("finished", "c2", |s: &Sample| Some(s.finished_ps)),
                ("failed", "c3", |s: &Sample| Some(s.failed_ps)),
            ], "/s"))
            (chart("Publish → start latency", &snap.series, now, &[
                ("p50", "c1", |s: &Sample| s.p50_ms),
                ("p99", "c3", |s: &Sample| s.p99_ms),
            ], "ms"))
        }
    }
}

pub(super) fn nodes(snap: &Snapshot) -> Markup {
    html! {
        h2 { "Nodes" }
        div.scroll {
            table #nodes {
                thead { tr { th { "node" } th { "version" } th { "uptime" } th { "channels" } th { "workers" } th { "running" } th { "broker" } th { "self-check" } th { "recycles" } } }
                tbody {
                    @if snap.nodes.is_empty() {
                        tr { td colspan="9" { "no service answered yet" } }
                    }
                    @for n in &snap.nodes {
                        tr.node-row data-node=(n.id) class=[(!n.answering).then_some("stale")] {
                            td { (n.id) @if !n.answering { " " span.badge.bad { "not answering" } } }
                            td { (n.main.version.as_deref().unwrap_or("-")) }
                            td { (span(n.main.uptime)) }
                            td { (n.channel) }
                            td { (n.main.pool.worker_ct) }
                            td { (n.main.pool.running_ct) }
                            td {
                                @for b in &n.main.brokers {
                                    div {
                                        (b.broker) " "
                                        @match b.connected {
                                            Some(true) => span.badge.ok { "connected" },
                                            Some(false) => span.badge.bad { "disconnected" },
                                            None => {},
                                        }
                                    }
                                }
                            }
                            td {
                                @for b in &n.main.brokers {
                                    @if let Some(c) = &b.self_check {
                                        div { (ms(c.last_rtt_ms)) @if c.failures > 0 { " · " (c.failures) " failed" } }
                                    }
                                }
                            }
                            td { @for b in &n.main.brokers { div { (b.recycles) } } }
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn queue_counts(snap: &Snapshot) -> Markup {
    html! {
        h2 { "Durable queue" }
        @match &snap.jobs {
            None => p { "gathering…" },
            Some(j) => {
                @if let Some(e) = &j.error { p.problems { (e) } }
                @if let Some(s) = &j.stats {
                    div.scroll {
                        table #queue-counts {
                            thead { tr { th { "queue" } th { "available" } th { "due" } th { "running" } th { "failed" } th { "canceled" } th { "oldest due" } } }
                            tbody {
                                @if s.queues.is_empty() { tr { td colspan="7" { "no jobs" } } }
                                @for q in &s.queues {
                                    tr { td { (q.queue) } td { (q.available) } td { (q.due) } td { (q.running) } td { (q.failed) } td { (q.canceled) } td { (span(q.oldest_due_s)) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn events(snap: &Snapshot, n: usize) -> Markup {
    html! {
        h2 { "Events" }
        @if snap.events.is_empty() {
            p.muted { "nothing yet: workers started, retired or lost, and nodes coming and going show here" }
        } @else {
            ul.events {
                @for e in snap.events.iter().take(n) {
                    li class={"ev " (e.kind)} { time { (clock(e.at)) } " " b { (e.node) } " " (e.text) }
                }
            }
        }
    }
}

pub(super) fn workers(snap: &Snapshot) -> Markup {
    let now = snap.at;
    html! {
        @if snap.nodes.is_empty() { p { "no service answered yet" } }
        @for n in &snap.nodes {
            h2 { (n.id) " " span.muted { (n.main.pool.worker_ct) " workers · " (n.main.pool.finished_count) " Calls finished" } }
            div.scroll {
                table.workers data-node=(n.id) {
                    thead { tr { th { "worker" } th { "pid" } th { "state" } th { "task" } th { "running for" } th { "Calls served" } th { "RSS" } th { "age" } } }
                    tbody {
                        @for w in n.workers.values() {
                            tr.worker-row data-pid=[w.pid] {
                                td { (w.worker_id) }
                                td { (w.pid.map(|p| p.to_string()).unwrap_or("-".into())) }
                                td { (format!("{:?}", w.status).to_lowercase()) }
                                td {
                                    @if let (Some(t), Some(u)) = (&w.current_task, &w.current_task_uuid) {
                                        a href={"/calls/" (u)} { (t) } " " span.muted { (short(u)) }
                                    } @else { "-" }
                                }
                                td { (w.current_task_started_at.map(|s| span(now - s)).unwrap_or("-".into())) }
                                td { (w.finished_count) }
                                td { (w.rss_kb.map(|k| format!("{:.1} MiB", k as f64 / 1024.0)).unwrap_or("-".into())) }
                                td { (span(w.age)) }
                            }
                        }
                    }
                }
            }
        }
    }
}
