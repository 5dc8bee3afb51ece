//! The web dashboard in a real headless Chromium, against `dispatcher-demo serve --dashboard`
//! on PostgreSQL: what an operator sees and does. Each test saves screenshots under
//! `target/dashboard-screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::time::Duration;

use dispatcher::{Job, PgQueue, PgQueueConfig};
use harness::{post, Browser, Demo, DemoOptions, ONE_AT_A_TIME, WAIT};
use serde_json::json;

const TOKEN: &str = "test-token-0123456789abcdef";

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn number(text: &str) -> u64 {
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

#[tokio::test]
async fn overview_workers_calls_and_charts_update_without_a_reload() {
    let _one = ONE_AT_A_TIME.lock().await;
    let demo = Demo::start(DemoOptions::default()).await;
    let b = Browser::start(false).await;
    b.goto(&demo.base()).await;
    let row = format!("tr.node-row[data-node=\"{}\"]", demo.node);
    b.wait_for(&row).await;
    assert!(b.text(&row).await.contains(&demo.node));
    assert!(
        b.text("#nodes").await.contains("connected"),
        "broker health shown"
    );

    // Workers: both, with their pids.
    b.goto(&format!("{}/workers", demo.base())).await;
    let workers = format!("table.workers[data-node=\"{}\"] tr.worker-row", demo.node);
    b.wait_for(&workers).await;
    let rows = b
        .client
        .find_all(fantoccini::Locator::Css(&workers))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "two workers listed");
    for r in rows {
        let pid = r.attr("data-pid").await.unwrap().unwrap();
        assert!(pid.parse::<u32>().unwrap() > 0);
    }
    b.screenshot("workers").await;

    // Tasks published now show in the numbers and the Calls without a reload.
    b.goto(&demo.base()).await;
    b.wait_for("#finished-total").await;
    let before = number(&b.text("#finished-total").await);
    let received_before = number(&b.text("#received-total").await);
    b.mark().await;
    let uuids: Vec<String> = (0..6).map(|_| uuid()).collect();
    for u in &uuids {
        demo.publish("demo.echo", json!([{"n": 1}]), u).await;
    }
    b.wait_text("#finished-total", "6 more finished", |t| {
        t.trim().parse::<u64>().is_ok_and(|n| n >= before + 6)
    })
    .await;
    assert!(number(&b.text("#received-total").await) >= received_before + 6);
    assert!(b.same_page().await, "the overview reloaded");
    // The throughput chart has points.
    let points = b
        .client
        .find(fantoccini::Locator::Css("polyline.line.c2"))
        .await
        .unwrap()
        .attr("points")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(!points.trim().is_empty(), "no throughput points");
    b.screenshot("overview").await;

    b.goto(&format!("{}/calls?task=demo.echo", demo.base()))
        .await;
    for u in &uuids {
        b.wait_for(&format!("tr.call-row[data-uuid=\"{u}\"]")).await;
    }
    b.mark().await;
    let late = uuid();
    demo.publish("demo.echo", json!(["late"]), &late).await;
    b.wait_for(&format!(
        "tr.call-row[data-uuid=\"{late}\"][data-outcome=\"ok\"]"
    ))
    .await;
    assert!(b.same_page().await, "the Calls page reloaded");
    b.screenshot("calls").await;

    // The registry with its declared policies.
    b.goto(&format!("{}/tasks", demo.base())).await;
    b.wait_for("tr.task-row[data-task=\"demo.flaky\"]").await;
    let flaky = b.cells("tr.task-row[data-task=\"demo.flaky\"] td").await;
    assert_eq!(
        (flaky[3].as_str(), flaky[4].as_str()),
        ("5", "500 ms"),
        "{flaky:?}"
    );
    let slow = b.cells("tr.task-row[data-task=\"demo.slow\"] td").await;
    assert_eq!(slow[1], "1.0 s", "{slow:?}");
    let echo = b.cells("tr.task-row[data-task=\"demo.echo\"] td").await;
    assert_eq!(echo[7], "7", "7 recent echo Calls counted: {echo:?}");
    b.screenshot("tasks").await;

    // A phone: nothing wider than the screen.
    b.client.set_window_size(390, 844).await.unwrap();
    b.goto(&demo.base()).await;
    b.wait_for(&row).await;
    let fits = b
        .js("return document.documentElement.scrollWidth <= window.innerWidth + 1;")
        .await;
    assert_eq!(fits, json!(true), "the overview is wider than a phone");
    b.screenshot("overview-phone").await;
    b.close().await;

    // Dark.
    let b = Browser::start(true).await;
    b.goto(&demo.base()).await;
    b.wait_for(&row).await;
    let bg = b
        .js("return getComputedStyle(document.body).backgroundColor;")
        .await;
    assert_eq!(bg, json!("rgb(18, 22, 29)"), "dark colours");
    b.screenshot("overview-dark").await;
    b.close().await;
    demo.stop().await;
}

#[tokio::test]
async fn a_failed_calls_page_shows_its_error_timings_and_family() {
    let _one = ONE_AT_A_TIME.lock().await;
    let demo = Demo::start(DemoOptions::default()).await;
    let b = Browser::start(false).await;
    let failed = uuid();
    demo.publish("demo.fail", json!(["boom <b>on purpose</b>"]), &failed)
        .await;
    b.goto(&format!("{}/calls/{failed}", demo.base())).await;
    b.wait_text("#call-outcome", "error", |t| t.contains("error"))
        .await;
    assert_eq!(b.text("#call-error").await, "boom <b>on purpose</b>");
    assert!(b.text("#call-args").await.contains("boom"));
    assert!(b.text("table.times").await.contains("UTC"));
    b.screenshot("call-failed").await;

    // A parent and its children link to each other.
    let parent = uuid();
    demo.publish("demo.fanout", json!([2]), &parent).await;
    b.goto(&format!("{}/calls/{parent}", demo.base())).await;
    b.wait_text("#call-outcome", "ok", |t| t.contains("ok"))
        .await;
    let child = b.wait_for("dl.facts dd a[href^=\"/calls/\"]").await;
    child.click().await.unwrap();
    b.wait_for(&format!("dl.facts a[href=\"/calls/{parent}\"]"))
        .await;
    b.close().await;
    demo.stop().await;
}

#[tokio::test]
async fn cancel_with_the_token_turns_a_running_sleep_into_canceled() {
    let _one = ONE_AT_A_TIME.lock().await;
    let demo = Demo::start(DemoOptions {
        token: Some(TOKEN),
        ..DemoOptions::default()
    })
    .await;
    let b = Browser::start(false).await;
    let sleeper = uuid();
    demo.publish("demo.sleep", json!([60.0]), &sleeper).await;

    b.sign_in(&demo.base(), TOKEN).await;

    b.goto(&format!("{}/calls/{sleeper}", demo.base())).await;
    b.wait_text("#call-outcome", "running", |t| t.contains("running"))
        .await;
    let button = b.wait_for("#cancel-form button").await;
    b.screenshot("call-running").await;
    button.click().await.unwrap();
    b.wait_text("#call-outcome", "canceled", |t| t.contains("canceled"))
        .await;
    b.screenshot("call-canceled").await;
    assert!(
        demo.log().contains("dashboard action"),
        "the action is logged:\n{}",
        demo.log()
    );
    b.close().await;
    demo.stop().await;
}

#[tokio::test]
async fn read_only_without_a_token_and_forged_posts_are_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Without a token: no cancel control, and a POST is refused.
    let demo = Demo::start(DemoOptions::default()).await;
    let b = Browser::start(false).await;
    let sleeper = uuid();
    demo.publish("demo.sleep", json!([30.0]), &sleeper).await;
    let page = format!("{}/calls/{sleeper}", demo.base());
    b.goto(&page).await;
    b.wait_text("#call-outcome", "running", |t| t.contains("running"))
        .await;
    assert!(
        !b.has("#cancel-form").await,
        "a cancel control without a token"
    );
    assert!(!b.has("a.signin").await, "a sign-in link without a token");
    let (code, body) = post(
        demo.dashboard,
        &format!("/calls/{sleeper}/cancel"),
        &[],
        "csrf=anything",
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("read-only"), "{body}");
    b.close().await;
    demo.stop().await;

    // With a token: forgeries fail, the real form works.
    let demo = Demo::start(DemoOptions {
        token: Some(TOKEN),
        ..DemoOptions::default()
    })
    .await;
    let sleeper = uuid();
    demo.publish("demo.sleep", json!([30.0]), &sleeper).await;
    let path = format!("/calls/{sleeper}/cancel");
    let (code, _) = post(demo.dashboard, &path, &[], "csrf=x").await;
    assert_eq!(code, 403, "no session");
    let (code, body) = post(demo.dashboard, "/login", &[], &format!("token={TOKEN}")).await;
    assert_eq!(code, 303, "{body}");
    let cookie = body
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let (code, _) = post(demo.dashboard, &path, &[("Cookie", &cookie)], "csrf=x").await;
    assert_eq!(code, 403, "a session without the form token");
    // The form token, as the Call's page embeds it for a signed-in browser.
    let (code, html) = harness::http(
        demo.dashboard,
        &format!("GET /calls/{sleeper} HTTP/1.1\r\nCookie: {cookie}\r\n\r\n"),
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    let form = format!("csrf={csrf}");
    let (code, body) = post(
        demo.dashboard,
        &path,
        &[("Cookie", &cookie), ("Origin", "http://evil.example")],
        &form,
    )
    .await;
    assert_eq!(code, 403, "another site's page: {body}");

    // A page of another site, in the signed-in browser, posting to the dashboard.
    let b = Browser::start(false).await;
    b.sign_in(&demo.base(), TOKEN).await;
    let forged = format!(
        "data:text/html,<form method=post action='{}{path}'><input name=csrf value=x></form>\
         <script>document.forms[0].submit()</script>",
        demo.base()
    );
    b.goto(&forged).await;
    let refused = b.wait_for("#refused").await.text().await.unwrap();
    assert!(!refused.is_empty());
    b.screenshot("forged-post-refused").await;
    // The sleeper still runs.
    b.goto(&format!("{}/calls/{sleeper}", demo.base())).await;
    b.wait_text("#call-outcome", "running", |t| t.contains("running"))
        .await;

    // The dashboard's own form, from a raw client with everything right, is accepted.
    let (code, body) = post(
        demo.dashboard,
        &path,
        &[("Cookie", &cookie), ("Origin", &demo.base())],
        &form,
    )
    .await;
    assert_eq!(code, 303, "{body}");
    b.wait_text("#call-outcome", "canceled", |t| t.contains("canceled"))
        .await;
    b.close().await;
    demo.stop().await;
}

#[tokio::test]
async fn the_jobs_page_shows_a_failed_flaky_job_and_retry_runs_it_again() {
    let _one = ONE_AT_A_TIME.lock().await;
    let demo = Demo::start(DemoOptions {
        token: Some(TOKEN),
        queue: true,
        ..DemoOptions::default()
    })
    .await;
    let b = Browser::start(false).await;
    // The service migrates the queue's schema at start; wait until it answers.
    b.goto(&demo.base()).await;
    b.wait_for(&format!("tr.node-row[data-node=\"{}\"]", demo.node))
        .await;
    let queue = PgQueue::connect(PgQueueConfig::from_url(&demo.url).unwrap())
        .await
        .unwrap();
    let job_uuid = uuid();
    let payload = json!({"task": "demo.flaky", "args": [1], "uuid": job_uuid}).to_string();
    let job = Job::from_payload(&demo.channel, &payload)
        .unwrap()
        .max_attempts(1);
    let id = queue.enqueue(job).await.unwrap().id;
    // A job due later is listed as scheduled.
    let later = Job::from_payload(&demo.channel, &json!({"task": "demo.noop"}).to_string())
        .unwrap()
        .delay(Duration::from_secs(3600));
    queue.enqueue(later).await.unwrap();

    b.sign_in(&demo.base(), TOKEN).await;
    b.goto(&format!("{}/jobs", demo.base())).await;
    let row = format!("tr.job-row[data-job=\"{id}\"]");
    b.wait_for(&row).await;
    let text = b.text(&row).await;
    assert!(
        text.contains("demo.flaky") && text.contains("attempt 1 fails on purpose"),
        "{text}"
    );
    assert!(b.text("#scheduled").await.contains("demo.noop"));
    assert!(b.text("#queue-counts").await.contains(&demo.channel));
    b.screenshot("jobs").await;

    b.client
        .find(fantoccini::Locator::Css(&format!("{row} button.retry")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // It ran again (and, failing on its one attempt again, is back with two errors).
    let t = std::time::Instant::now();
    loop {
        let errors = b
            .client
            .find_all(fantoccini::Locator::Css(&format!("{row} td.error li")))
            .await
            .unwrap_or_default();
        if errors.len() >= 2 {
            break;
        }
        assert!(t.elapsed() < WAIT, "the retried job did not run again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.goto(&format!("{}/calls?task=demo.flaky", demo.base()))
        .await;
    let t = std::time::Instant::now();
    loop {
        let runs = b
            .client
            .find_all(fantoccini::Locator::Css(&format!(
                "tr.call-row[data-uuid=\"{job_uuid}\"]"
            )))
            .await
            .unwrap_or_default();
        if runs.len() >= 2 {
            break;
        }
        assert!(
            t.elapsed() < WAIT,
            "two runs of the job not among the Calls"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = demo.log();
    assert!(
        log.lines()
            .any(|l| l.contains("dashboard action") && l.contains("retry")),
        "the retry is logged:\n{log}"
    );
    b.close().await;
    demo.stop().await;
}
