//! The pages, rendered with maud: a page is a layout around *live sections*, each a function
//! of the snapshot (and the page's query). The first request renders the whole page; the live
//! stream re-renders the sections after each round and sends those that changed, which the
//! browser swaps in place. One rendering path, in Rust, escaped by construction.

use std::collections::BTreeMap;

use dispatcher_core::{Call, Outcome};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use crate::collect::{now_epoch, percentile, Sample, Snapshot, WINDOW_S};

/// What the page needs to know about the viewer.
pub(crate) struct Viewer<'a> {
    /// The dashboard has a token (actions exist).
    pub auth_enabled: bool,
    /// This browser signed in with it.
    pub signed_in: bool,
    /// The form token to embed in action forms.
    pub form_token: &'a str,
    /// The dashboard shows a queue.
    pub has_jobs: bool,
}

/// The Calls page's filters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct CallQuery {
    pub task: String,
    pub outcome: String,
    pub node: String,
    pub uuid: String,
}

impl CallQuery {
    fn matches(&self, c: &Call) -> bool {
        (self.task.is_empty() || c.task == self.task)
            && (self.outcome.is_empty()
                || c.outcome.map(|o| o.as_str()) == Some(self.outcome.as_str()))
            && (self.node.is_empty() || c.node_id.as_str() == self.node)
            && (self.uuid.is_empty()
                || dispatcher_core::call::uuid_matches(&c.uuid, self.uuid.trim()))
    }

    /// The query string, for the live stream's URL.
    pub fn to_query(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("task", &self.task),
            ("outcome", &self.outcome),
            ("node", &self.node),
            ("uuid", &self.uuid),
        ] {
            if !v.is_empty() {
                parts.push(format!("{k}={}", percent_encode(v)));
            }
        }
        parts.join("&")
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A page and what it was asked for.
#[derive(Debug, Clone)]
pub(crate) enum Page {
    Overview,
    Workers,
    Calls(CallQuery),
    Call(String),
    Jobs,
    Tasks,
}

impl Page {
    fn title(&self) -> String {
        match self {
            Page::Overview => "Overview".into(),
            Page::Workers => "Workers".into(),
            Page::Calls(_) => "Calls".into(),
            Page::Call(u) => format!("Call {}", short(u)),
            Page::Jobs => "Jobs".into(),
            Page::Tasks => "Tasks".into(),
        }
    }

    fn nav(&self) -> &'static str {
        match self {
            Page::Overview => "overview",
            Page::Workers => "workers",
            Page::Calls(_) | Page::Call(_) => "calls",
            Page::Jobs => "jobs",
            Page::Tasks => "tasks",
        }
    }

    /// The live stream's URL for this page.
    pub fn live_url(&self) -> String {
        match self {
            Page::Overview => "/live/overview".into(),
            Page::Workers => "/live/workers".into(),
            Page::Calls(q) => format!("/live/calls?{}", q.to_query()),
            Page::Call(u) => format!("/live/call?uuid={}", percent_encode(u)),
            Page::Jobs => "/live/jobs".into(),
            Page::Tasks => "/live/tasks".into(),
        }
    }
}

/// The first 8 characters of a uuid.
fn short(uuid: &str) -> &str {
    uuid.get(..8).unwrap_or(uuid)
}

/// `HH:MM:SS.mmm` (UTC) of epoch seconds.
pub(crate) fn clock(epoch: f64) -> String {
    if !epoch.is_finite() || epoch <= 0.0 {
        return "-".into();
    }
    let ms = (epoch * 1000.0).round() as u64;
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

/// `YYYY-MM-DD HH:MM:SS.mmm UTC` of epoch seconds.
pub(crate) fn timestamp(epoch: f64) -> String {
    if !epoch.is_finite() || epoch <= 0.0 {
        return "-".into();
    }
    let days = (epoch / 86_400.0).floor() as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {} UTC", clock(epoch))
}

/// A duration in seconds, briefly.
pub(crate) fn span(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        "-".into()
    } else if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} d", s / 86_400.0)
    }
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| {
        if v < 10.0 {
            format!("{v:.2} ms")
        } else {
            format!("{v:.0} ms")
        }
    })
    .unwrap_or("-".into())
}

fn rate(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1}/s")
    } else {
        format!("{v:.0}/s")
    }
}

fn outcome_badge(o: Option<Outcome>) -> Markup {
    let (name, class) = match o {
        None => ("running", "run"),
        Some(Outcome::Ok) => ("ok", "ok"),
        Some(Outcome::Canceled) | Some(Outcome::Discarded) => {
            (o.map_or("", |o| o.as_str()), "muted")
        }
        Some(o) => (o.as_str(), "bad"),
    };
    html! { span class={"badge " (class)} { (name) } }
}

fn json_text(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// The whole page: layout, navigation, the page's fixed parts and its live sections.
pub(crate) fn page(
    p: &Page,
    snap: &Snapshot,
    viewer: &Viewer<'_>,
    fetched: Option<&Call>,
) -> Markup {
    let nav: &[(&str, &str, &str)] = &[
        ("overview", "/", "Overview"),
        ("workers", "/workers", "Workers"),
        ("calls", "/calls", "Calls"),
        ("jobs", "/jobs", "Jobs"),
        ("tasks", "/tasks", "Tasks"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                meta name="live" content=(p.live_url());
                title { (p.title()) " · dispatcher" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/live.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "dispatcher" }
                    nav {
                        @for (id, href, label) in nav {
                            @if *id != "jobs" || viewer.has_jobs {
                                a href=(href) class=[(p.nav() == *id).then_some("active")] { (label) }
                            }
                        }
                    }
                    span.status data-live="status" { (status(snap)) }
                    @if viewer.auth_enabled {
                        @if viewer.signed_in {
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(viewer.form_token);
                                button.link type="submit" { "sign out" }
                            }
                        } @else {
                            a.signin href="/login" { "sign in" }
                        }
                    }
                }
                main {
                    h1 { (p.title()) }
                    @if let Page::Calls(q) = p {
                        (call_filters(q, snap))
                    }
                    @for (id, markup) in sections(p, snap, viewer, fetched) {
                        @if id != "status" {
                            div data-live=(id) { (markup) }
                        }
                    }
                }
            }
        }
    }
}

/// The page's live sections, by id. `fetched`: a Call looked up for this page outside the
/// snapshot.
pub(crate) fn sections(
    p: &Page,
    snap: &Snapshot,
    viewer: &Viewer<'_>,
    fetched: Option<&Call>,
) -> Vec<(&'static str, Markup)> {
    let mut out = vec![("status", status(snap))];
    match p {
        Page::Overview => {
            out.push(("problems", problems(snap)));
            out.push(("numbers", numbers(snap)));
            out.push(("charts", charts(snap)));
            out.push(("nodes", nodes(snap)));
            if viewer.has_jobs {
                out.push(("queue", queue_counts(snap)));
            }
            out.push(("events", events(snap, 12)));
        }
        Page::Workers => {
            out.push(("workers", workers(snap)));
            out.push(("events", events(snap, 50)));
        }
        Page::Calls(q) => out.push(("calls", calls(snap, q))),
        Page::Call(uuid) => out.push(("call", call_page(snap, uuid, viewer, fetched))),
        Page::Jobs => out.push(("jobs", jobs(snap, viewer))),
        Page::Tasks => out.push(("tasks", tasks(snap))),
    }
    out
}

fn status(snap: &Snapshot) -> Markup {
    let answering = snap.nodes.iter().filter(|n| n.answering).count();
    html! {
        @if snap.round == 0 {
            span.dot.wait {} "gathering…"
        } @else {
            span class={"dot " (if answering > 0 { "good" } else { "bad" })} {}
            span #nodes-answering { (answering) } " node" @if answering != 1 { "s" }
            " · updated " time #updated-at { (clock(snap.at)) }
        }
    }
}

fn problems(snap: &Snapshot) -> Markup {
    html! {
        @if !snap.problems.is_empty() && snap.round > 0 {
            ul.problems {
                @for p in &snap.problems { li { (p) } }
            }
        }
    }
}

fn numbers(snap: &Snapshot) -> Markup {
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
fn chart(title: &str, series: &[Sample], now: f64, lines: &[Line<'_>], unit: &str) -> Markup {
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

fn charts(snap: &Snapshot) -> Markup {
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

fn nodes(snap: &Snapshot) -> Markup {
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

fn queue_counts(snap: &Snapshot) -> Markup {
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

fn events(snap: &Snapshot, n: usize) -> Markup {
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

fn workers(snap: &Snapshot) -> Markup {
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

fn call_filters(q: &CallQuery, snap: &Snapshot) -> Markup {
    let tasks: std::collections::BTreeSet<&str> = snap
        .calls
        .iter()
        .map(|c| c.task.as_str())
        .chain(snap.tasks.keys().map(String::as_str))
        .collect();
    html! {
        form.filters method="get" action="/calls" {
            label { "task " select name="task" {
                option value="" { "any" }
                @for t in &tasks { option value=(t) selected[*t == q.task] { (t) } }
            } }
            label { "outcome " select name="outcome" {
                option value="" { "any" }
                @for o in Outcome::ALL { option value=(o.as_str()) selected[o.as_str() == q.outcome] { (o.as_str()) } }
            } }
            label { "node " select name="node" {
                option value="" { "any" }
                @for n in &snap.nodes { option value=(n.id) selected[n.id == q.node] { (n.id) } }
            } }
            label { "uuid " input name="uuid" value=(q.uuid) placeholder="prefix" size="10"; }
            button type="submit" { "filter" }
        }
    }
}

fn calls(snap: &Snapshot, q: &CallQuery) -> Markup {
    let shown: Vec<&Call> = snap
        .calls
        .iter()
        .map(|c| &**c)
        .filter(|c| q.matches(c))
        .take(200)
        .collect();
    html! {
        p.muted { (shown.len()) " shown (newest first) of " (snap.calls.len()) " recent Calls across nodes" }
        div.scroll {
            table #calls {
                thead { tr { th { "uuid" } th { "task" } th { "outcome" } th { "node" } th { "attempt" } th { "wait" } th { "run" } th { "finished" } th { "error" } } }
                tbody {
                    @for c in shown {
                        tr.call-row data-uuid=(c.uuid) data-outcome=[c.outcome.map(|o| o.as_str())] {
                            td { a href={"/calls/" (c.uuid)} { code { (short(&c.uuid)) } } }
                            td { (c.task) }
                            td { (outcome_badge(c.outcome)) }
                            td { (c.node_id.as_str()) }
                            td { (c.attempt.map(|a| a.to_string()).unwrap_or("-".into())) }
                            td { (ms(c.wait_ms)) }
                            td { (ms(c.run_ms)) }
                            td { (c.finished_at.map(clock).unwrap_or("-".into())) }
                            td.error { (c.error.as_deref().map(|e| e.chars().take(120).collect::<String>()).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    }
}

fn call_page(snap: &Snapshot, uuid: &str, viewer: &Viewer<'_>, fetched: Option<&Call>) -> Markup {
    if let Some(c) = snap.call(uuid).map(|c| &**c).or(fetched) {
        return finished_call(snap, c);
    }
    if let Some((node, w)) = snap.running(uuid) {
        let run = w.current_task_started_at.map(|s| span(snap.at - s));
        return html! {
            dl.facts {
                dt { "state" } dd #call-outcome { (outcome_badge(None)) }
                dt { "task" } dd { (w.current_task.as_deref().unwrap_or("-")) }
                dt { "uuid" } dd { code { (uuid) } }
                dt { "node" } dd { (node.id) }
                dt { "worker" } dd { (w.worker_id) " (pid " (w.pid.map(|p| p.to_string()).unwrap_or("-".into())) ")" }
                dt { "running for" } dd { (run.unwrap_or("-".into())) }
            }
            @if viewer.signed_in {
                form #cancel-form method="post" action={"/calls/" (uuid) "/cancel"} {
                    input type="hidden" name="csrf" value=(viewer.form_token);
                    button.danger type="submit" { "Cancel this Call" }
                }
            } @else if viewer.auth_enabled {
                p.muted { a href="/login" { "Sign in" } " to cancel it." }
            }
        };
    }
    html! {
        p #call-outcome { "Not among the running Calls or the recent history of any node (yet)." }
    }
}

fn finished_call(snap: &Snapshot, c: &Call) -> Markup {
    let children: Vec<&Call> = snap
        .calls
        .iter()
        .map(|x| &**x)
        .filter(|x| x.parent_uuid.as_deref() == Some(c.uuid.as_str()))
        .collect();
    let total = c.total_ms.unwrap_or(0.0).max(1e-9);
    let wait = c.wait_ms.unwrap_or(0.0);
    let run = c.run_ms.unwrap_or(0.0);
    html! {
        dl.facts {
            dt { "outcome" } dd #call-outcome data-outcome=[c.outcome.map(|o| o.as_str())] { (outcome_badge(c.outcome)) }
            dt { "task" } dd { (c.task) }
            dt { "uuid" } dd { code { (c.uuid) } }
            dt { "node" } dd { (c.node_id.as_str()) }
            dt { "channel" } dd { (c.channel.as_str()) }
            dt { "worker" } dd { (c.worker_id.map(|w| w.to_string()).unwrap_or("-".into())) " (pid " (c.pid.map(|p| p.to_string()).unwrap_or("-".into())) ")" }
            @if let Some(a) = c.attempt { dt { "attempt" } dd { (a) } }
            @if let Some(p) = &c.parent_uuid { dt { "parent" } dd { a href={"/calls/" (p)} { code { (p) } } } }
            @if !children.is_empty() {
                dt { "children" } dd { @for ch in &children { a href={"/calls/" (ch.uuid)} { code { (short(&ch.uuid)) } } " " } }
            }
        }
        h2 { "Timing" }
        div.split title="wait / run" {
            span.wait style={"width:" (format!("{:.1}", wait / total * 100.0)) "%"} {}
            span.run style={"width:" (format!("{:.1}", run / total * 100.0)) "%"} {}
        }
        p { "waited " b { (ms(c.wait_ms)) } ", ran " b { (ms(c.run_ms)) } ", " (ms(c.total_ms)) " in all" }
        table.times {
            tbody {
                tr { th { "published" } td { (c.time_pub.map(timestamp).unwrap_or("-".into())) } }
                tr { th { "received" } td { (c.received_at.map(timestamp).unwrap_or("-".into())) } }
                tr { th { "queued" } td { (c.queued_at.map(timestamp).unwrap_or("-".into())) } }
                tr { th { "started" } td { (c.started_at.map(timestamp).unwrap_or("-".into())) } }
                tr { th { "finished" } td { (c.finished_at.map(timestamp).unwrap_or("-".into())) } }
            }
        }
        h2 { "Arguments" }
        pre #call-args { (json_text(&c.args)) @if !c.kwargs.is_null() && c.kwargs.as_object().is_none_or(|m| !m.is_empty()) { "\n" (json_text(&c.kwargs)) } }
        @if let Some(e) = &c.error {
            h2 { "Error" }
            pre.error #call-error { (e) }
        }
        @if let Some(r) = &c.result {
            h2 { "Result" }
            pre #call-result { (json_text(r)) }
        }
        @if let Some(r) = &c.reject_reason {
            h2 { "Rejected" }
            pre.error { (format!("{r:?}")) }
        }
    }
}

fn jobs(snap: &Snapshot, viewer: &Viewer<'_>) -> Markup {
    let Some(j) = &snap.jobs else {
        return html! { p { "No durable queue is configured for this dashboard." } };
    };
    let now = snap.at;
    html! {
        (queue_counts(snap))
        h2 { "Scheduled" }
        div.scroll {
            table #scheduled {
                thead { tr { th { "id" } th { "queue" } th { "task" } th { "due in" } th { "attempt" } } }
                tbody {
                    @if j.scheduled.is_empty() { tr { td colspan="5" { "none" } } }
                    @for s in &j.scheduled {
                        tr { td { (s.id) } td { (s.queue) } td { (s.task) } td { (span(s.run_at - now)) } td { (s.attempt) } }
                    }
                }
            }
        }
        h2 { "Failed" }
        div.scroll {
            table #failed {
                thead { tr { th { "id" } th { "queue" } th { "task" } th { "state" } th { "attempts" } th { "failed" } th { "errors" } @if viewer.signed_in { th { "actions" } } } }
                tbody {
                    @if j.failed.is_empty() { tr { td colspan="8" { "none" } } }
                    @for f in &j.failed {
                        tr.job-row data-job=(f.id) data-task=(f.task) {
                            td { (f.id) }
                            td { (f.queue) }
                            td { (f.task) }
                            td { (f.state) }
                            td { (f.attempt) }
                            td { (clock(f.failed_at)) }
                            td.error {
                                ol {
                                    @for e in f.errors.as_array().map(|a| a.as_slice()).unwrap_or_default() {
                                        li { "attempt " (e.get("attempt").map(|a| a.to_string()).unwrap_or("?".into())) ": " (e.get("error").and_then(|x| x.as_str()).unwrap_or("")) }
                                    }
                                }
                            }
                            @if viewer.signed_in {
                                td.actions {
                                    form method="post" action={"/jobs/" (f.id) "/retry"} {
                                        input type="hidden" name="csrf" value=(viewer.form_token);
                                        button type="submit" class="retry" { "retry" }
                                    }
                                    form method="post" action={"/jobs/" (f.id) "/discard"} {
                                        input type="hidden" name="csrf" value=(viewer.form_token);
                                        button.danger type="submit" class="discard" { "discard" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn tasks(snap: &Snapshot) -> Markup {
    // Recent counts and run-time percentiles from the Calls kept.
    let mut by_task: BTreeMap<&str, (u64, u64, Vec<f64>)> = BTreeMap::new();
    for c in &snap.calls {
        let e = by_task.entry(c.task.as_str()).or_default();
        e.0 += 1;
        if matches!(
            c.outcome,
            Some(Outcome::Error | Outcome::Panic | Outcome::Timeout | Outcome::WorkerLost)
        ) {
            e.1 += 1;
        }
        if let Some(r) = c.run_ms {
            e.2.push(r);
        }
    }
    for v in by_task.values_mut() {
        v.2.sort_by(f64::total_cmp);
    }
    let mut names: Vec<&str> = snap.tasks.keys().map(String::as_str).collect();
    for n in snap
        .nodes
        .iter()
        .flat_map(|n| n.main.registered_tasks.iter())
    {
        if !names.contains(&n.as_str()) {
            names.push(n);
        }
    }
    names.sort_unstable();
    html! {
        p.muted { "Declared policies; counts and run times over the " (snap.calls.len()) " recent Calls kept." }
        div.scroll {
            table #tasks {
                thead { tr { th { "task" } th { "timeout" } th { "duplicates" } th { "attempts" } th { "backoff" } th { "concurrency" } th { "unique" } th { "Calls" } th { "failed" } th { "run p50" } th { "run p99" } } }
                tbody {
                    @for name in names {
                        @let p = snap.tasks.get(name);
                        @let recent = by_task.get(name);
                        tr.task-row data-task=(name) {
                            td { (name) }
                            td { (p.and_then(|p| p.timeout_s).map(span).unwrap_or("none".into())) }
                            td { (p.map(|p| p.on_duplicate.as_str()).unwrap_or("-")) }
                            td { (p.map(|p| p.max_attempts.to_string()).unwrap_or("-".into())) }
                            td { (p.map(|p| span(p.backoff_s)).unwrap_or("-".into())) }
                            td { (p.and_then(|p| p.concurrency).map(|c| c.to_string()).unwrap_or("-".into())) }
                            td { (p.map(|p| if p.unique { "yes" } else { "no" }).unwrap_or("-")) }
                            td { (recent.map(|r| r.0).unwrap_or(0)) }
                            td { (recent.map(|r| r.1).unwrap_or(0)) }
                            td { (recent.filter(|r| !r.2.is_empty()).map(|r| ms(Some(percentile(&r.2, 0.5)))).unwrap_or("-".into())) }
                            td { (recent.filter(|r| !r.2.is_empty()).map(|r| ms(Some(percentile(&r.2, 0.99)))).unwrap_or("-".into())) }
                        }
                    }
                }
            }
        }
    }
}

/// The sign-in page.
pub(crate) fn login(failed: bool, enabled: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in · dispatcher" }
                link rel="stylesheet" href="/assets/style.css";
            }
            body {
                header { a.brand href="/" { "dispatcher" } }
                main.narrow {
                    h1 { "Sign in" }
                    @if !enabled {
                        p { "This dashboard is read-only: no access token is configured." }
                    } @else {
                        @if failed { p.problems role="alert" { "That is not the access token." } }
                        form method="post" action="/login" {
                            label { "Access token " input #token type="password" name="token" autocomplete="current-password" required; }
                            button type="submit" { "sign in" }
                        }
                    }
                }
            }
        }
    }
}

/// A page for a refused request.
pub(crate) fn refused(why: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Refused · dispatcher" } link rel="stylesheet" href="/assets/style.css"; }
            body { main.narrow { h1 { "Refused" } p #refused { (why) } p { a href="/" { "back" } } } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc() {
        assert_eq!(timestamp(0.5), "1970-01-01 00:00:00.500 UTC");
        assert_eq!(timestamp(1_795_870_201.25), "2026-11-28 12:50:01.250 UTC");
        assert_eq!(clock(f64::NAN), "-");
        assert_eq!(span(0.25), "250 ms");
        assert_eq!(span(90.0), "90.0 s");
        assert_eq!(span(600.0), "10 min");
    }

    #[test]
    fn filters_encode_into_the_live_url() {
        let q = CallQuery {
            task: "demo.sleep".into(),
            outcome: "ok".into(),
            node: "a b&c".into(),
            uuid: String::new(),
        };
        assert_eq!(
            Page::Calls(q).live_url(),
            "/live/calls?task=demo.sleep&outcome=ok&node=a%20b%26c"
        );
    }

    #[test]
    fn markup_is_escaped() {
        let c = Call::received("u<1>".into(), "<script>".into(), "n", String::from("c"));
        let snap = Snapshot {
            calls: vec![std::sync::Arc::new(c)],
            ..Snapshot::default()
        };
        let html = calls(&snap, &CallQuery::default()).into_string();
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
    }
}
