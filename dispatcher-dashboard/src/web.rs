//! The HTTP side: routes, the live stream, sign-in and the actions.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use dispatcher_core::control::RunningReply;
use dispatcher_core::Call;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::auth::COOKIE;
use crate::pages::{self, CallQuery, Page, Viewer};
use crate::shared::{JobAction, Shared};

type S = State<Arc<Shared>>;

pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/", get(overview))
        .route("/workers", get(workers))
        .route("/calls", get(calls))
        .route("/calls/{uuid}", get(call))
        .route("/calls/{uuid}/cancel", post(cancel))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}/{action}", post(job_action))
        .route("/tasks", get(tasks))
        .route("/live/{page}", get(live))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/assets/style.css", get(css))
        .route("/assets/live.js", get(js))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(shared);
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    if let Err(e) = server.await {
        tracing::error!(error = %e, "dashboard server ended");
    }
}

/// No framing by other sites, scripts and styles from here only.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn viewer<'a>(s: &'a Shared, headers: &HeaderMap) -> Viewer<'a> {
    let cookie = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    let signed_in = s.auth.signed_in(cookie);
    Viewer {
        auth_enabled: s.auth.enabled(),
        signed_in,
        form_token: if signed_in { s.auth.form_token() } else { "" },
        has_jobs: s.config.queue_schema.is_some(),
    }
}

fn render(s: &Shared, headers: &HeaderMap, p: &Page, fetched: Option<&Call>) -> Response {
    s.viewed();
    let snap = s.snapshot.borrow().clone();
    let html = pages::page(p, &snap, &viewer(s, headers), fetched).into_string();
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

async fn overview(State(s): S, headers: HeaderMap) -> Response {
    render(&s, &headers, &Page::Overview, None)
}

async fn workers(State(s): S, headers: HeaderMap) -> Response {
    render(&s, &headers, &Page::Workers, None)
}

async fn calls(State(s): S, headers: HeaderMap, Query(q): Query<CallQuery>) -> Response {
    render(&s, &headers, &Page::Calls(q), None)
}

async fn tasks(State(s): S, headers: HeaderMap) -> Response {
    render(&s, &headers, &Page::Tasks, None)
}

async fn jobs(State(s): S, headers: HeaderMap) -> Response {
    render(&s, &headers, &Page::Jobs, None)
}

/// A uuid or a prefix of one: hex digits and dashes.
fn valid_uuid(u: &str) -> bool {
    !u.is_empty() && u.len() <= 36 && u.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// A Call that is neither kept nor running: asked of the services.
async fn fetch_call(s: &Shared, uuid: &str) -> Option<Call> {
    {
        let snap = s.snapshot.borrow();
        if snap.call(uuid).is_some() || snap.running(uuid).is_some() {
            return None;
        }
    }
    let data = json!({"uuid": uuid, "limit": 1});
    let (replies, _) = s
        .ask("history", data.as_object().cloned().unwrap_or_default())
        .await;
    replies.into_iter().find_map(|(_, r)| {
        r.parse::<dispatcher_core::control::HistoryReply>()
            .ok()
            .and_then(|h| h.calls.into_iter().find(|c| c.uuid == uuid))
    })
}

async fn call(State(s): S, headers: HeaderMap, Path(uuid): Path<String>) -> Response {
    if !valid_uuid(&uuid) {
        return (
            StatusCode::NOT_FOUND,
            Html(pages::refused("not a Call uuid").into_string()),
        )
            .into_response();
    }
    let fetched = fetch_call(&s, &uuid).await;
    render(&s, &headers, &Page::Call(uuid), fetched.as_ref())
}

/// The live stream of a page: after each round, the sections that changed.
async fn live(
    State(s): S,
    headers: HeaderMap,
    Path(page): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let page = match page.as_str() {
        "overview" => Page::Overview,
        "workers" => Page::Workers,
        "calls" => Page::Calls(CallQuery {
            task: get("task"),
            outcome: get("outcome"),
            node: get("node"),
            uuid: get("uuid"),
        }),
        "call" if valid_uuid(&get("uuid")) => Page::Call(get("uuid")),
        "jobs" => Page::Jobs,
        "tasks" => Page::Tasks,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let fetched = match &page {
        Page::Call(u) => fetch_call(&s, u).await,
        _ => None,
    };
    let signed_in = viewer(&s, &headers).signed_in;
    let rx = s.snapshot.subscribe();
    let stop = s.stop.clone();
    struct St {
        s: Arc<Shared>,
        rx: watch::Receiver<Arc<crate::snapshot::Snapshot>>,
        stop: watch::Receiver<bool>,
        last: HashMap<&'static str, String>,
        page: Page,
        fetched: Option<Call>,
        signed_in: bool,
        first: bool,
    }
    let st = St {
        s: s.clone(),
        rx,
        stop,
        last: HashMap::new(),
        page,
        fetched,
        signed_in,
        first: true,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if !st.first {
                tokio::select! {
                    r = st.rx.changed() => if r.is_err() { return None },
                    _ = st.stop.wait_for(|s| *s) => return None,
                }
            }
            st.first = false;
            st.s.viewed();
            let snap = st.rx.borrow_and_update().clone();
            let viewer = Viewer {
                auth_enabled: st.s.auth.enabled(),
                signed_in: st.signed_in,
                form_token: if st.signed_in {
                    st.s.auth.form_token()
                } else {
                    ""
                },
                has_jobs: st.s.config.queue_schema.is_some(),
            };
            let mut changed = Map::new();
            for (id, markup) in pages::sections(&st.page, &snap, &viewer, st.fetched.as_ref()) {
                let html = markup.into_string();
                if st.last.get(id) != Some(&html) {
                    changed.insert(id.to_owned(), Value::String(html.clone()));
                    st.last.insert(id, html);
                }
            }
            if !changed.is_empty() {
                let event = Event::default().data(Value::Object(changed).to_string());
                return Some((Ok::<_, Infallible>(event), st));
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, Html(pages::refused(why).into_string())).into_response()
}

/// A refused request: its status and why.
struct Refused(StatusCode, &'static str);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        refuse(self.0, self.1)
    }
}

/// Refuses a POST that is not from a signed-in page of this dashboard.
fn check_action(
    s: &Shared,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(), Refused> {
    if !s.auth.enabled() {
        return Err(Refused(
            StatusCode::FORBIDDEN,
            "This dashboard is read-only: no access token is configured.",
        ));
    }
    check_origin(headers)?;
    let cookie = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    if !s.auth.signed_in(cookie) {
        return Err(Refused(StatusCode::FORBIDDEN, "Not signed in."));
    }
    if !form.get("csrf").is_some_and(|t| s.auth.form_ok(t)) {
        return Err(Refused(
            StatusCode::FORBIDDEN,
            "The form token is missing or wrong: actions are taken from the dashboard's own pages.",
        ));
    }
    Ok(())
}

/// A browser names the page a POST comes from: it must be this dashboard.
fn check_origin(headers: &HeaderMap) -> Result<(), Refused> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let ours = host.is_some_and(|h| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(h)
        });
        if !ours {
            return Err(Refused(
                StatusCode::FORBIDDEN,
                "Cross-site request refused.",
            ));
        }
    }
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
    {
        return Err(Refused(
            StatusCode::FORBIDDEN,
            "Cross-site request refused.",
        ));
    }
    Ok(())
}

async fn cancel(
    State(s): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(uuid): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = check_action(&s, &headers, &form) {
        tracing::warn!(action = "cancel", %uuid, %peer, "dashboard action refused");
        return r.into_response();
    }
    if !valid_uuid(&uuid) || uuid.len() < 8 {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Not a Call uuid (8 characters at least).",
        );
    }
    let data = json!({ "uuid": uuid });
    let (replies, problems) = s
        .ask("cancel", data.as_object().cloned().unwrap_or_default())
        .await;
    let canceled: usize = replies
        .iter()
        .filter_map(|(_, r)| r.parse::<RunningReply>().ok())
        .map(|r| r.len())
        .sum();
    tracing::info!(action = "cancel", %uuid, %peer, who = "access token holder", canceled, ?problems, "dashboard action");
    s.poke.notify_one();
    Redirect::to(&format!("/calls/{uuid}")).into_response()
}

async fn job_action(
    State(s): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = check_action(&s, &headers, &form) {
        tracing::warn!(%action, job = %id, %peer, "dashboard action refused");
        return r.into_response();
    }
    let Ok(id) = id.parse::<i64>() else {
        return refuse(StatusCode::BAD_REQUEST, "A job id is a number.");
    };
    let which = match action.as_str() {
        "retry" => JobAction::Retry,
        "discard" => JobAction::Discard,
        _ => return refuse(StatusCode::NOT_FOUND, "Jobs can be retried or discarded."),
    };
    let done = s.job_action(id, which).await;
    match done {
        Ok(ids) => {
            tracing::info!(%action, job = id, %peer, who = "access token holder", affected = ids.len(), "dashboard action");
            s.poke.notify_one();
            Redirect::to("/jobs").into_response()
        }
        Err(e) => {
            tracing::warn!(%action, job = id, %peer, error = %e, "dashboard action failed");
            refuse(
                StatusCode::BAD_GATEWAY,
                &format!("{action} of job {id} failed: {e}"),
            )
        }
    }
}

async fn login_form(State(s): S) -> Response {
    Html(pages::login(false, s.auth.enabled()).into_string()).into_response()
}

async fn login(
    State(s): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = check_origin(&headers) {
        return r.into_response();
    }
    let token = form.get("token").map(String::as_str).unwrap_or("");
    match s.auth.sign_in(token) {
        Some(session) => {
            tracing::info!(%peer, "dashboard: signed in");
            let cookie = format!("{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict");
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        None => {
            tracing::warn!(%peer, "dashboard: sign-in with a wrong token");
            (
                StatusCode::FORBIDDEN,
                Html(pages::login(true, s.auth.enabled()).into_string()),
            )
                .into_response()
        }
    }
}

async fn logout(
    State(s): S,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = check_action(&s, &headers, &form) {
        return r.into_response();
    }
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/style.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/live.js"),
    )
        .into_response()
}
