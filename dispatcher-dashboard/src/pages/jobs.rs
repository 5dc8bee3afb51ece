//! The durable queue's jobs and the task registry.

use std::collections::BTreeMap;

use dispatcher_core::Outcome;
use maud::{html, Markup};

use super::format::{clock, ms, span};
use super::overview::queue_counts;
use super::Viewer;
use crate::collect::percentile;
use crate::snapshot::Snapshot;

pub(super) fn jobs(snap: &Snapshot, viewer: &Viewer<'_>) -> Markup {
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

pub(super) fn tasks(snap: &Snapshot) -> Markup {
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
