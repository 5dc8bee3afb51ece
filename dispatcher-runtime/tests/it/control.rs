//! Control commands answered by the service loop (over the broker and locally).

use std::time::Duration;

use dispatcher_core::{Outcome, TaskRegistry};
use serde_json::{json, Value};

use crate::tasks::*;
use dispatcher_testkit::TestService;

use crate::{service, WAIT};

#[tokio::test]
async fn control_over_the_broker_replies_on_reply_to() {
    let svc = service(2).await;
    let broker = svc.broker().clone();
    let reply_channel = format!("reply_to_{}", uuid_hex());
    use futures_util::StreamExt;
    let mut replies = broker
        .subscribe(std::slice::from_ref(&reply_channel))
        .await
        .unwrap();
    svc.publish_raw(&json!({"control": "alive", "reply_to": reply_channel}).to_string())
        .await;
    let reply = tokio::time::timeout(WAIT, replies.next())
        .await
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(&reply.payload).unwrap();
    assert_eq!(v["node_id"], json!(svc.handle().node_id()));
    svc.publish_raw(&json!({"control": "frobnicate", "reply_to": reply_channel}).to_string())
        .await;
    let reply = tokio::time::timeout(WAIT, replies.next())
        .await
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(&reply.payload).unwrap();
    assert_eq!(v["error"], json!("No control method frobnicate"));
    svc.shutdown().await;
}

fn uuid_hex() -> String {
    dispatcher_core::call::new_uuid().replace('-', "")
}

#[tokio::test]
async fn main_workers_history_run_status() {
    let svc = service(2).await;
    let h = svc.handle();
    let ack = h
        .control(
            "run",
            json!({"task": "t.double", "args": [4]})
                .as_object()
                .unwrap()
                .clone(),
        )
        .await
        .unwrap();
    assert!(ack.get("ack").is_some(), "{ack}");
    let bad = h
        .control(
            "run",
            json!({"task": "t.nope"}).as_object().unwrap().clone(),
        )
        .await
        .unwrap();
    assert!(
        bad["error"].as_str().unwrap().contains("unknown task"),
        "{bad}"
    );
    svc.wait_for_calls(2, WAIT).await.unwrap();

    let main = h.control("main", Default::default()).await.unwrap();
    assert_eq!(main["received_count"], json!(2));
    assert_eq!(main["pool"]["rejected_count"], json!(1));
    assert_eq!(main["pid"], json!(std::process::id()));

    let workers = h.control("workers", Default::default()).await.unwrap();
    let w = workers.as_object().unwrap();
    assert_eq!(w.len(), 2);
    let finished: u64 = w
        .values()
        .map(|v| v["finished_count"].as_u64().unwrap())
        .sum();
    assert_eq!(finished, 1);

    let hist = h
        .control(
            "history",
            json!({"outcome": "ok", "task": "t.double"})
                .as_object()
                .unwrap()
                .clone(),
        )
        .await
        .unwrap();
    let calls = hist["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["result"], json!(8));
    assert!(calls[0]["run_ms"].as_f64().is_some());
    let bad = h
        .control(
            "history",
            json!({"outcome": "meh"}).as_object().unwrap().clone(),
        )
        .await
        .unwrap();
    assert!(bad["error"]
        .as_str()
        .unwrap()
        .contains("unknown outcome \"meh\""));
    let bad = h
        .control(
            "history",
            json!({"limit": "ten"}).as_object().unwrap().clone(),
        )
        .await
        .unwrap();
    assert!(bad["error"].as_str().unwrap().contains("limit"));

    let status = h.control("status", Default::default()).await.unwrap();
    // dispatcherd's parts, and the newest Calls.
    for k in [
        "main",
        "workers",
        "running",
        "aio_tasks",
        "producers",
        "metrics",
        "chunks",
        "history",
    ] {
        assert!(status.get(k).is_some(), "status lacks {k}: {status}");
    }
    assert!(status.get("alive").is_none(), "{status}");
    let typed: dispatcher_core::control::StatusReply =
        serde_json::from_value(status.clone()).unwrap();
    assert_eq!(typed.main.pool.worker_ct, 2, "{status}");
    assert_eq!(typed.history.map(|h| h.calls.len()), Some(2), "{status}");
    svc.shutdown().await;
}

#[tokio::test]
async fn running_and_cancel_filters() {
    let svc = service(1).await;
    let p = svc.publisher();
    p.publish(nap::call(30.0)).await.unwrap();
    p.publish(nap::call(31.0)).await.unwrap();
    p.publish(double::call(1).delay(Duration::from_secs(30)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let h = svc.handle();
    let running = h.control("running", Default::default()).await.unwrap();
    let keys: Vec<_> = running.as_object().unwrap().keys().cloned().collect();
    assert!(keys.iter().any(|k| k.starts_with("worker-")), "{running}");
    assert!(keys.contains(&"queued-0".to_string()), "{running}");
    assert!(keys.contains(&"delayed-0".to_string()), "{running}");
    let only = h
        .control(
            "running",
            json!({"args": [31.0]}).as_object().unwrap().clone(),
        )
        .await
        .unwrap();
    assert_eq!(only.as_object().unwrap().len(), 1, "{only}");
    let bad = h
        .control(
            "cancel",
            json!({"colour": "red"}).as_object().unwrap().clone(),
        )
        .await
        .unwrap();
    assert!(bad["error"]
        .as_str()
        .unwrap()
        .contains("unknown filter field \"colour\""));
    let canceled = h
        .control(
            "cancel",
            json!({"task": "t.nap"}).as_object().unwrap().clone(),
        )
        .await
        .unwrap();
    assert_eq!(canceled.as_object().unwrap().len(), 2, "{canceled}");
    svc.wait_for_calls(2, WAIT).await.unwrap();
    let calls = svc.history();
    assert!(
        calls.iter().all(|c| c.outcome == Some(Outcome::Canceled)),
        "{calls:#?}"
    );
    let left = h.control("running", Default::default()).await.unwrap();
    assert_eq!(
        left.as_object().unwrap().len(),
        1,
        "only the delayed one: {left}"
    );
    svc.shutdown().await;
}

#[tokio::test]
async fn duplicate_task_names_fail_at_start() {
    mod other {
        #[dispatcher_core::task(name = "t.double")]
        pub fn impostor(x: i64) -> i64 {
            x
        }
    }
    let r = TaskRegistry::new()
        .register::<double>()
        .register::<other::impostor>();
    let e = dispatcher_runtime::Service::builder()
        .registry(r)
        .pool(dispatcher_runtime::InProcessPool::new(1))
        .start()
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("\"t.double\" is registered twice"),
        "{e}"
    );
    // the collected registry sees both too
    let e = TaskRegistry::collected().unwrap_err();
    assert!(e.to_string().contains("t.double"), "{e}");
}

/// Commands sent by `request_with` (on the channel and its control channel) are answered at once
/// while thousands of tasks wait behind the intake pause, and answered once.
#[tokio::test]
async fn control_is_answered_ahead_of_a_flood() {
    let svc = flood_service().await;
    // No flood: the service reads the channel alone, and one reply comes in a whole second.
    let replies = ask(&svc, "alive", Duration::from_secs(1), None).await;
    assert_eq!(replies.len(), 1, "{replies:?}");

    // 3,000 tasks of 50 ms each on one worker: about 150 s of work; the service reads 10 at a
    // time. A command behind them on the channel alone would wait that long.
    flood(&svc, 3000).await;
    let replies = ask_until_answered(&svc).await;
    assert_eq!(replies.len(), 1, "no reply while the tasks wait");
    let done = svc.history().len();
    assert!(done < 100, "answered only after {done} tasks had run");
    let _ = svc.handle().shutdown_with_grace(Some(Duration::ZERO)).await;
}

#[tokio::test]
async fn a_command_read_on_both_paths_is_answered_once() {
    let svc = flood_service().await;
    // 40 tasks of 50 ms: the intake pauses for about 2 s, then the channel copies of the
    // commands sent meanwhile come out from behind the tasks, and are dropped.
    flood(&svc, 40).await;
    ask_until_answered(&svc).await;
    let replies = ask(&svc, "alive", Duration::from_secs(5), None).await;
    assert_eq!(svc.history().len(), 40, "the flood ran meanwhile");
    assert_eq!(replies.len(), 1, "answered on each path: {replies:?}");
    let _ = svc.handle().shutdown_with_grace(Some(Duration::ZERO)).await;
}

/// One worker, reading 10 Calls at a time.
async fn flood_service() -> TestService {
    TestService::builder()
        .registry(crate::registry())
        .pool(dispatcher_runtime::InProcessPool::new(1))
        .configure(|b| b.intake_pause_at(10))
        .start()
        .await
        .unwrap()
}

/// `n` tasks of 50 ms each, in one batch.
async fn flood(svc: &TestService, n: usize) {
    let batch: Vec<(String, String)> = (0..n)
        .map(|_| {
            let m = json!({"task": "t.nap", "args": [0.05]}).to_string();
            (svc.channel().to_owned(), m)
        })
        .collect();
    svc.broker().publish_batch(&batch).await.unwrap();
}

/// The replies to one command sent with `dispatcher_core::control::request_with`.
async fn ask(
    svc: &TestService,
    command: &str,
    timeout: Duration,
    expected: Option<usize>,
) -> Vec<Value> {
    use dispatcher_core::control::{request_with, RequestOptions};
    let options = RequestOptions::new(timeout).expected(expected);
    request_with(
        &**svc.broker(),
        svc.channel(),
        command,
        Default::default(),
        &options,
    )
    .await
    .unwrap()
}

/// Asks `running` until a reply comes within a second. The service reads its control channel
/// once its intake has paused; a command sent before then travels on the channel alone, behind
/// the tasks, and the next one is asked.
async fn ask_until_answered(svc: &TestService) -> Vec<Value> {
    let start = std::time::Instant::now();
    loop {
        let replies = ask(svc, "running", Duration::from_secs(1), Some(1)).await;
        if !replies.is_empty() {
            return replies;
        }
        assert!(
            start.elapsed() < WAIT,
            "no command answered within {WAIT:?}"
        );
    }
}

/// The data of a control command from a JSON object literal.
fn data(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

#[tokio::test]
async fn uuid_prefixes_select_and_ambiguous_cancels_are_refused() {
    const A: &str = "feed0001-0000-4000-8000-00000000000a";
    const B: &str = "feed0001-0000-4000-8000-00000000000b";
    const C: &str = "c0ffee00-0000-4000-8000-000000000001";
    let svc = service(1).await;
    let p = svc.publisher();
    p.publish(nap::call(30.0).uuid(A)).await.unwrap();
    p.publish(nap::call(30.0).uuid(B)).await.unwrap();
    p.publish(double::call(1).uuid(C).delay(Duration::from_secs(30)))
        .await
        .unwrap();
    let h = svc.handle();
    let mut tries = 0;
    while h
        .control("running", Default::default())
        .await
        .unwrap()
        .as_object()
        .map_or(0, |m| m.len())
        < 3
    {
        tries += 1;
        assert!(tries < 100, "three Calls in flight");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // running: a prefix lists every Call it begins; a full-length uuid only its own.
    let shared = h
        .control("running", data(json!({"uuid": "feed0001"})))
        .await
        .unwrap();
    assert_eq!(shared.as_object().unwrap().len(), 2, "{shared}");
    let exact = h
        .control("running", data(json!({"uuid": A})))
        .await
        .unwrap();
    assert_eq!(exact.as_object().unwrap().len(), 1, "{exact}");
    // The running one says how long it has run; the delayed one when it is due.
    let running = h.control("running", Default::default()).await.unwrap();
    let worker = &running["worker-0"];
    assert!(worker["run_s"].as_f64().unwrap() >= 0.0, "{running}");
    let due = running["delayed-0"]["due_in_s"].as_f64().unwrap();
    assert!(due > 20.0 && due <= 30.0, "{running}");

    // cancel: an ambiguous prefix cancels nothing and names the candidates.
    let refused = h
        .control("cancel", data(json!({"uuid": "feed0001"})))
        .await
        .unwrap();
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("ambiguous") && error.contains(A) && error.contains(B),
        "{refused}"
    );
    let still = h.control("running", Default::default()).await.unwrap();
    assert_eq!(still.as_object().unwrap().len(), 3, "{still}");

    // A prefix of one Call cancels it.
    let canceled = h
        .control("cancel", data(json!({"uuid": "c0ffee00"})))
        .await
        .unwrap();
    assert_eq!(canceled["delayed-0"]["uuid"], json!(C), "{canceled}");
    svc.wait_for_calls(1, WAIT).await.unwrap();

    // history: the prefix again.
    let history = h
        .control("history", data(json!({"uuid": "c0ff"})))
        .await
        .unwrap();
    let calls = history["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{history}");
    assert_eq!(calls[0]["outcome"], "canceled");
    let none = h
        .control("history", data(json!({"uuid": "c0ffee01"})))
        .await
        .unwrap();
    assert!(none["calls"].as_array().unwrap().is_empty(), "{none}");
    svc.shutdown().await;
}

mod policies {
    //! Tasks whose declared policies the `tasks` command reports.

    #[dispatcher_core::task(name = "p.timed", timeout = 2.5)]
    pub fn timed() {}

    #[dispatcher_core::task(name = "p.discard", on_duplicate = "discard", queue = "elsewhere")]
    pub fn discarding(x: i64) -> i64 {
        x
    }

    #[dispatcher_core::task(name = "p.retried", max_attempts = 7, backoff = 0.5, unique)]
    pub fn retried() {}

    #[dispatcher_core::task(name = "p.limited", concurrency = 3, context)]
    pub fn limited(_ctx: &dispatcher_core::TaskContext) {}
}

#[tokio::test]
async fn tasks_reports_each_declared_policy() {
    use dispatcher_core::control::{TaskPolicy, TasksReply};
    use dispatcher_core::task::{DEFAULT_BACKOFF, DEFAULT_MAX_ATTEMPTS};
    let registry = TaskRegistry::new()
        .register::<policies::timed>()
        .register::<policies::discarding>()
        .register::<policies::retried>()
        .register::<policies::limited>();
    let svc = TestService::builder()
        .registry(registry)
        .pool(dispatcher_runtime::InProcessPool::new(1))
        .start()
        .await
        .unwrap();
    // Over the broker, as dispatcherctl and the dashboard ask.
    let replies = ask(&svc, "tasks", WAIT, Some(1)).await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["node_id"], json!(svc.handle().node_id()));
    let reply = dispatcher_core::control::Reply::from_value(replies[0].clone());
    let tasks: TasksReply = reply.parse().unwrap();
    let defaults = TaskPolicy {
        timeout_s: None,
        on_duplicate: "parallel".into(),
        queue: None,
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        backoff_s: DEFAULT_BACKOFF.as_secs_f64(),
        unique: false,
        concurrency: None,
        context: false,
    };
    let expected: TasksReply = [
        (
            "p.timed",
            TaskPolicy {
                timeout_s: Some(2.5),
                ..defaults.clone()
            },
        ),
        (
            "p.discard",
            TaskPolicy {
                on_duplicate: "discard".into(),
                queue: Some("elsewhere".into()),
                ..defaults.clone()
            },
        ),
        (
            "p.retried",
            TaskPolicy {
                max_attempts: 7,
                backoff_s: 0.5,
                unique: true,
                ..defaults.clone()
            },
        ),
        (
            "p.limited",
            TaskPolicy {
                concurrency: Some(3),
                context: true,
                ..defaults.clone()
            },
        ),
    ]
    .into_iter()
    .map(|(name, policy)| (name.to_owned(), policy))
    .collect();
    assert_eq!(tasks, expected, "{}", replies[0]);
    // Locally, the same; and it is read-only: nothing was received as a task.
    let local = svc
        .handle()
        .control("tasks", Default::default())
        .await
        .unwrap();
    assert_eq!(local["p.retried"]["backoff_s"], json!(0.5), "{local}");
    assert_eq!(local.as_object().map(|m| m.len()), Some(4), "{local}");
    svc.shutdown().await;
}
