//! The pages, rendered with maud: a page is a layout around *live sections*, each a function
//! of the snapshot (and the page's query). The first request renders the whole page; the live
//! stream re-renders the sections after each round and sends those that changed, which the
//! browser swaps in place. One rendering path, in Rust, escaped by construction.

mod calls;
mod format;
mod jobs;
mod overview;

use dispatcher_core::Call;
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use crate::snapshot::Snapshot;
use calls::{call_filters, call_page, calls};
use format::{clock, short};
use jobs::{jobs, tasks};
use overview::{charts, events, nodes, numbers, queue_counts, workers};

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
    use super::format::{span, timestamp};
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
