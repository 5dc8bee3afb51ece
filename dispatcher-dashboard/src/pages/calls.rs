//! The Calls page and a Call's page.

use dispatcher_core::{Call, Outcome};
use maud::{html, Markup};

use super::format::{clock, json_text, ms, outcome_badge, short, span, timestamp};
use super::{CallQuery, Viewer};
use crate::snapshot::Snapshot;

pub(super) fn call_filters(q: &CallQuery, snap: &Snapshot) -> Markup {
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

pub(super) fn calls(snap: &Snapshot, q: &CallQuery) -> Markup {
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

pub(super) fn call_page(
    snap: &Snapshot,
    uuid: &str,
    viewer: &Viewer<'_>,
    fetched: Option<&Call>,
) -> Markup {
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

pub(super) fn finished_call(snap: &Snapshot, c: &Call) -> Markup {
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
