//! The Rust side → a real dispatcherd service: the Rust `Publisher` runs Python tasks (marker
//! files prove it), and `dispatcherctl` and `dispatcher::core::control::request` get and read
//! dispatcherd's replies, chunked ones included.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher::{Broker, PgBroker, Publisher, TaskMessage};
use dispatcher_testkit::postgres::PgFixture;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use crate::support::*;

/// The Python service's `interop_tasks.write_marker(path, content)`, declared in Rust only so that
/// the typed API can publish it; it never runs on this side.
#[dispatcher::core::task(name = "interop_tasks.write_marker")]
fn write_marker(path: String, content: String) {
    let _ = (path, content);
}

/// A dispatcherd service in a fresh database, and what a test needs to talk to it.
struct PySide {
    // Drop order: the service first, the database last.
    py: PyService,
    broker: Arc<PgBroker>,
    publisher: Publisher,
    scratch: Scratch,
    fx: PgFixture,
}

impl PySide {
    async fn start(tag: &str) -> PySide {
        let fx = PgFixture::new().await.expect("a PostgreSQL database");
        let channel = unique(tag);
        let scratch = Scratch::new(&channel);
        let (py, broker) = tokio::join!(PyService::start(&fx, &channel, &scratch), pg_broker(&fx));
        let publisher = Publisher::new(broker.clone(), channel).expect("a valid channel");
        PySide {
            py,
            broker,
            publisher,
            scratch,
            fx,
        }
    }

    fn channel(&self) -> &str {
        &self.py.channel
    }

    async fn send(&self, message: TaskMessage) -> String {
        let sent = self
            .publisher
            .publish_message(self.channel(), message)
            .await
            .expect("publishing to the dispatcherd service");
        sent.uuid().to_owned()
    }

    async fn control(&self, command: &str, data: Value) -> Value {
        let mut replies = rust_control(
            &self.broker,
            self.channel(),
            command,
            data,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(replies.len(), 1, "one reply to {command}: {replies:?}");
        let reply = replies.remove(0);
        assert_eq!(
            reply["node_id"],
            self.py.node_id.as_str(),
            "{command}: {reply}"
        );
        reply
    }

    /// Starts `interop_tasks.sleep_then_mark(seconds, marker, padding)` and waits until it runs.
    async fn start_sleeper(&self, seconds: f64, padding: &str) -> (String, String) {
        let marker = self.scratch.file(&unique("sleeper"));
        let mut kwargs = Map::new();
        kwargs.insert("padding".into(), padding.into());
        let uuid = self
            .send(TaskMessage {
                task: "interop_tasks.sleep_then_mark".into(),
                args: vec![json!(seconds), json!(marker)],
                kwargs,
                ..TaskMessage::default()
            })
            .await;
        wait_for_file(&marker, |t| t == "started").await;
        (uuid, marker)
    }
}

fn args_of(kv: &[(&str, Value)]) -> Map<String, Value> {
    kv.iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_publisher_runs_python_tasks() {
    bounded(async {
        let s = PySide::start("rs_pub").await;

        // An untyped TaskMessage naming the Python task, positional arguments.
        let marker = s.scratch.file("positional");
        s.send(TaskMessage {
            task: "interop_tasks.write_marker".into(),
            args: vec![json!(marker), json!("from rust")],
            ..TaskMessage::default()
        })
        .await;
        wait_for_file(&marker, |t| t == "from rust").await;

        // Keyword arguments (and positional ones before them).
        let marker = s.scratch.file("keywords");
        s.send(TaskMessage {
            task: "interop_tasks.record_call".into(),
            args: vec![json!(marker), json!(1)],
            kwargs: args_of(&[("a", json!("x")), ("b", json!([true, null, 2.5]))]),
            ..TaskMessage::default()
        })
        .await;
        let seen: Value =
            serde_json::from_str(&wait_for_file(&marker, |t| !t.is_empty()).await).expect("JSON");
        assert_eq!(seen["args"], json!([1]), "{seen}");
        assert_eq!(
            seen["kwargs"],
            json!({"a": "x", "b": [true, null, 2.5]}),
            "{seen}"
        );

        // The typed API, through a Rust declaration of the Python task; with a delay, which
        // dispatcherd's Delayer honours.
        let marker = s.scratch.file("typed");
        let sent_at = Instant::now();
        write_marker::call(marker.clone(), "typed".into())
            .delay(Duration::from_secs(1))
            .publish(&s.publisher)
            .await
            .expect("typed publish");
        wait_for_file(&marker, |t| t == "typed").await;
        assert!(
            sent_at.elapsed() >= Duration::from_millis(900),
            "dispatcherd held the delayed task for {:?}, asked 1 s",
            sent_at.elapsed()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_message_from_the_rust_publisher_is_assembled_by_dispatcherd() {
    bounded(async {
        let s = PySide::start("rs_chunk").await;
        // Watch the channel to see the chunk envelopes on the wire.
        let sniffer = pg_broker(&s.fx).await;
        let mut wire = sniffer
            .subscribe(&[s.channel().to_owned()])
            .await
            .expect("subscribing");

        let blob: String = "abc \"q\" \\ é € 😀\n"
            .chars()
            .cycle()
            .take(20_000)
            .collect();
        let marker = s.scratch.file("chunked");
        s.send(TaskMessage {
            task: "interop_tasks.record_call".into(),
            args: vec![json!(marker)],
            kwargs: args_of(&[("blob", json!(blob))]),
            ..TaskMessage::default()
        })
        .await;
        let seen: Value =
            serde_json::from_str(&wait_for_file(&marker, |t| !t.is_empty()).await).expect("JSON");
        assert_eq!(
            seen["kwargs"]["blob"].as_str(),
            Some(blob.as_str()),
            "dispatcherd reassembled the message"
        );

        let mut envelopes = 0;
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), wire.next()).await
        {
            let v: Value = serde_json::from_str(&m.payload).expect("JSON on the wire");
            if v["__dispatcherd_chunk__"] == "v1" {
                assert!(
                    m.payload.len() < 8000,
                    "an envelope of {} bytes",
                    m.payload.len()
                );
                envelopes += 1;
            }
        }
        assert!(envelopes >= 3, "{envelopes} chunk envelopes on the wire");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcherctl_alive_workers_running_cancel_run_against_dispatcherd() {
    prepare_dispatcherctl().await;
    bounded(async {
        let s = PySide::start("rs_ctl").await;
        let node = s.py.node_id.as_str();

        let (code, replies) =
            dispatcherctl(&s.fx, s.channel(), &["--expected-replies", "1", "alive"]).await;
        assert_eq!(code, 0, "{replies}");
        assert_eq!(replies, json!([{"node_id": node}]));

        let (code, replies) =
            dispatcherctl(&s.fx, s.channel(), &["--expected-replies", "1", "workers"]).await;
        assert_eq!(code, 0, "{replies}");
        let w = &replies[0]["worker-0"];
        assert_eq!(replies[0]["node_id"], node, "{replies:#}");
        for k in ["worker_id", "pid", "finished_count"] {
            assert!(w[k].is_u64(), "workers.worker-0.{k}: {replies:#}");
        }
        assert!(w["status"].is_string(), "{replies:#}");
        assert!(w["age"].is_number(), "{replies:#}");

        let (uuid, marker) = s.start_sleeper(20.0, "").await;
        let data = json!({"task": "interop_tasks.sleep_then_mark"}).to_string();
        let (code, replies) = dispatcherctl(
            &s.fx,
            s.channel(),
            &["--expected-replies", "1", "running", "--data", &data],
        )
        .await;
        assert_eq!(code, 0, "{replies}");
        let running: Vec<&Value> = replies[0]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.starts_with("worker-"))
                    .map(|(_, v)| v)
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(running.len(), 1, "{replies:#}");
        assert_eq!(running[0]["uuid"], uuid.as_str(), "{replies:#}");
        assert_eq!(running[0]["args"], json!([20.0, marker]), "{replies:#}");

        // The human output reads dispatcherd's replies too.
        for command in ["workers", "running", "alive", "main"] {
            let (code, out) =
                dispatcherctl_human(&s.fx, s.channel(), &["--expected-replies", "1", command])
                    .await;
            assert_eq!(code, 0, "{command}: {out}");
            assert!(out.contains(node), "{command}: {out}");
        }

        let data = json!({"uuid": uuid}).to_string();
        let (code, replies) = dispatcherctl(
            &s.fx,
            s.channel(),
            &["--expected-replies", "1", "cancel", "--data", &data],
        )
        .await;
        assert_eq!(code, 0, "{replies}");
        assert!(
            replies[0].as_object().is_some_and(|m| m
                .iter()
                .any(|(k, v)| k.starts_with("worker-") && v["uuid"] == uuid.as_str())),
            "{replies:#}"
        );
        let idle = poll_until("the canceled task to leave its worker", || async {
            let r = s.control("running", json!({"uuid": uuid})).await;
            (r.as_object().map(|m| m.len()) == Some(1)).then_some(r)
        })
        .await;
        assert_eq!(idle, json!({"node_id": node}));
        assert_eq!(
            std::fs::read_to_string(&marker).unwrap_or_default(),
            "started",
            "the canceled task did not finish"
        );

        let marker = s.scratch.file("via_run");
        let data = json!({"task": "interop_tasks.write_marker", "args": [marker, "via run"]});
        let (code, replies) = dispatcherctl(
            &s.fx,
            s.channel(),
            &[
                "--expected-replies",
                "1",
                "run",
                "--data",
                &data.to_string(),
            ],
        )
        .await;
        assert_eq!(code, 0, "{replies}");
        assert_eq!(
            replies[0]["ack"]["task"], "interop_tasks.write_marker",
            "{replies:#}"
        );
        wait_for_file(&marker, |t| t == "via run").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_request_reads_dispatcherd_replies_including_chunked_ones() {
    bounded(async {
        let s = PySide::start("rs_req").await;
        let alive = s.control("alive", json!({})).await;
        assert_eq!(alive, json!({"node_id": s.py.node_id}));

        let main = s.control("main", json!({})).await;
        for k in ["received_count", "control_count", "pid"] {
            assert!(main[k].is_u64(), "main.{k}: {main:#}");
        }
        assert!(main["pool"]["finished_count"].is_u64(), "{main:#}");

        let unknown = s.control("nosuch", json!({})).await;
        assert_eq!(
            unknown,
            json!({"error": "No control method nosuch", "node_id": s.py.node_id})
        );

        // A running task with a 20 KB argument: dispatcherd's `running` reply shows the whole
        // message, so it sends the reply in chunks, which the Rust client reassembles.
        let padding: String = "pad é 😀 \"x\" ".chars().cycle().take(20_000).collect();
        let (uuid, _marker) = s.start_sleeper(20.0, &padding).await;
        let reply = s
            .control("running", json!({"task": "interop_tasks.sleep_then_mark"}))
            .await;
        // Larger than one NOTIFY can carry: dispatcherd must have sent it as chunk envelopes.
        assert!(reply.to_string().len() > 8000, "a large reply");
        let entry = reply
            .as_object()
            .and_then(|m| m.iter().find(|(k, _)| k.starts_with("worker-")))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("a running worker: {}", reply.to_string().len()));
        assert_eq!(entry["uuid"], uuid.as_str());
        assert_eq!(
            entry["kwargs"]["padding"].as_str(),
            Some(padding.as_str()),
            "the chunked reply was reassembled whole"
        );
        s.control("cancel", json!({"uuid": uuid})).await;
    })
    .await;
}
