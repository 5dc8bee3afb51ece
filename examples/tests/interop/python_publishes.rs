//! dispatcherd's publishers → the Rust service: messages built and sent by dispatcherd's own
//! Python API (`submit_task`, the pg_notify broker's `publish_message` with its chunking) run the
//! demo's Rust tasks. Outcomes are read with the Rust control `history` command.

use std::sync::Arc;
use std::time::Duration;

use dispatcher::PgBroker;
use dispatcher_testkit::postgres::PgFixture;
use serde_json::{json, Value};

use crate::support::*;

/// A Rust demo service in a fresh database, and what a test needs to talk to it.
pub struct RustSide {
    // Drop order: the service first, the database last.
    pub demo: DemoService,
    pub broker: Arc<PgBroker>,
    pub params: String,
    pub scratch: Scratch,
    pub _fx: PgFixture,
}

impl RustSide {
    pub async fn start(tag: &str) -> RustSide {
        let fx = PgFixture::new().await.expect("a PostgreSQL database");
        let channel = unique(tag);
        let scratch = Scratch::new(&channel);
        let (demo, broker) =
            tokio::join!(DemoService::start(&fx, &channel, &scratch), pg_broker(&fx));
        let params = py_params(&fx, &channel, None);
        RustSide {
            demo,
            broker,
            params,
            scratch,
            _fx: fx,
        }
    }

    pub fn channel(&self) -> &str {
        &self.demo.channel
    }

    /// Runs dispatcherd's client (`py/py_client.py`) against this service's channel.
    pub async fn py(&self, args: &[&str]) -> Value {
        py_client(&self.params, args).await
    }

    /// dispatcherd's `submit_task`; returns the message it sent.
    pub async fn submit(&self, args: &[&str]) -> Value {
        let mut full = vec!["submit"];
        full.extend_from_slice(args);
        let out = self.py(&full).await;
        assert_eq!(out["queue"], self.channel(), "dispatcherd's queue: {out}");
        out
    }

    pub async fn call(&self, uuid: &str) -> Value {
        wait_for_call(&self.broker, self.channel(), uuid).await
    }

    pub async fn control(&self, command: &str, data: Value) -> Value {
        let mut replies = rust_control(
            &self.broker,
            self.channel(),
            command,
            data,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(replies.len(), 1, "one reply to {command}");
        replies.remove(0)
    }
}

fn uuid_of(out: &Value) -> String {
    out["message"]["uuid"]
        .as_str()
        .unwrap_or_else(|| panic!("dispatcherd's message has a uuid: {out}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_task_with_positional_args_runs_the_rust_task() {
    bounded(async {
        let s = RustSide::start("py_pos").await;
        let out = s
            .submit(&["demo.echo", "--args", r#"[{"n": 4, "label": "x"}]"#])
            .await;
        let msg = &out["message"];
        assert_eq!(msg["task"], "demo.echo");
        assert_eq!(msg["args"], json!([{"n": 4, "label": "x"}]));
        assert!(msg.get("kwargs").is_none(), "{msg}");
        assert_eq!(out["chunks"], 1);
        let call = s.call(&uuid_of(&out)).await;
        assert_eq!(call["outcome"], "ok", "{call:#}");
        assert_eq!(call["task"], "demo.echo");
        assert_eq!(call["args"], json!([{"n": 4, "label": "x"}]));
        assert_eq!(call["result"], json!({"n": 4, "label": "x"}));
        assert_eq!(call["node_id"], s.demo.node_id.as_str());
        assert_eq!(call["channel"], s.channel());
        let sent = msg["time_pub"].as_f64().expect("dispatcherd sets time_pub");
        let kept = call["time_pub"].as_f64().expect("the Call keeps time_pub");
        assert!((sent - kept).abs() < 1e-6, "time_pub {sent} vs {kept}");

        // Two in a row, a number this time.
        let out = s.submit(&["demo.sleep", "--args", "[0.05]"]).await;
        let call = s.call(&uuid_of(&out)).await;
        assert_eq!(call["outcome"], "ok", "{call:#}");
        assert_eq!(call["result"], json!(0.05));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_task_with_keyword_args_runs_the_rust_task() {
    bounded(async {
        let s = RustSide::start("py_kw").await;
        let out = s
            .submit(&[
                "demo.echo",
                "--kwargs",
                r#"{"value": [1, "two", null, 3.5]}"#,
            ])
            .await;
        assert!(out["message"].get("args").is_none(), "{out}");
        let call = s.call(&uuid_of(&out)).await;
        assert_eq!(call["outcome"], "ok", "{call:#}");
        assert_eq!(call["kwargs"], json!({"value": [1, "two", null, 3.5]}));
        assert_eq!(call["result"], json!([1, "two", null, 3.5]));

        let out = s
            .submit(&["demo.sleep", "--kwargs", r#"{"seconds": 0.05}"#])
            .await;
        let call = s.call(&uuid_of(&out)).await;
        assert_eq!(call["outcome"], "ok", "{call:#}");
        assert_eq!(call["result"], json!(0.05));

        // The decorated stub's failing task: the error travels back as the Call's error.
        let out = s
            .submit(&["demo.fail", "--kwargs", r#"{"message": "from python"}"#])
            .await;
        let call = s.call(&uuid_of(&out)).await;
        assert_eq!(call["outcome"], "error", "{call:#}");
        assert!(
            call["error"].as_str().unwrap_or("").contains("from python"),
            "{call:#}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_task_name_published_by_dispatcherd_runs() {
    bounded(async {
        let s = RustSide::start("py_bare").await;
        // The pg_notify broker's publish_message with a payload that is just the task name (the
        // dispatcherd service reads a non-JSON payload as {"task": payload}).
        let out = s.py(&["publish", "demo.noop"]).await;
        assert_eq!(out["chunks"], 1);
        let call = poll_until("the demo.noop Call", || async {
            let r = s.control("history", json!({"task": "demo.noop"})).await;
            r["calls"].as_array().and_then(|c| c.first()).cloned()
        })
        .await;
        assert_eq!(call["outcome"], "ok", "{call:#}");
        assert!(
            call["uuid"].as_str().is_some_and(|u| !u.is_empty()),
            "the service assigns a uuid: {call:#}"
        );
    })
    .await;
}

/// 20,000 characters, with some that JSON escapes and some beyond ASCII (dispatcherd's json.dumps
/// escapes those as \uXXXX, surrogate pairs included).
fn big_string() -> String {
    let mut s = String::new();
    let mut i = 0;
    while s.chars().count() < 20_000 {
        s.push_str(match i % 7 {
            0 => "plain text ",
            1 => "quote \" and backslash \\ ",
            2 => "newline\n tab\t ",
            3 => "é ü ß ",
            4 => "€ ✓ ",
            5 => "😀 ",
            _ => "0123456789",
        });
        i += 1;
    }
    s.chars().take(20_000).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_20kb_message_from_dispatcherd_is_assembled() {
    bounded(async {
        let s = RustSide::start("py_chunk").await;
        let big = big_string();
        let args = json!([big]).to_string();
        let out = s.submit(&["demo.echo", "--args", &args]).await;
        let chunks = out["chunks"].as_u64().expect("chunk count");
        assert!(
            chunks >= 3,
            "dispatcherd split the message into {chunks} chunks"
        );
        let uuid = uuid_of(&out);
        let call = s.call(&uuid).await;
        assert_eq!(call["outcome"], "ok", "{}", &call["error"]);
        assert_eq!(call["args"][0].as_str(), Some(big.as_str()));
        assert_eq!(call["result"].as_str(), Some(big.as_str()));

        // The history reply (> 8000 bytes) goes back in the Rust service's chunk envelopes, which
        // dispatcherd's control client must reassemble.
        let data = json!({"uuid": uuid}).to_string();
        for client in ["--expected=1", "--async"] {
            let replies = s.py(&["control", "history", "--data", &data, client]).await;
            assert_eq!(replies.as_array().map(Vec::len), Some(1), "{client}");
            let reply = &replies[0];
            assert!(reply.to_string().len() > 8000);
            assert_eq!(
                reply["node_id"],
                s.demo.node_id.as_str(),
                "{}",
                clip_json(reply)
            );
            assert_eq!(
                reply["calls"][0]["result"].as_str(),
                Some(big.as_str()),
                "dispatcherd's client ({client}) reassembled the chunked reply"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awx_style_options_are_ignored_and_delay_is_honoured() {
    bounded(async {
        let s = RustSide::start("py_opts").await;
        // @task(on_duplicate=...) and submit_task(timeout=..., bind=True) as AWX uses them: the
        // fields travel in the message and the Rust service ignores them (the registry decides).
        let out = s
            .submit(&[
                "demo.echo",
                "--args",
                r#"["awx"]"#,
                "--timeout",
                "5",
                "--on-duplicate",
                "discard",
                "--bind",
            ])
            .await;
        assert_eq!(out["message"]["timeout"], json!(5.0));
        assert_eq!(out["message"]["bind"], json!(true));
        assert_eq!(out["message"]["on_duplicate"], "discard");
        let call = s.call(&uuid_of(&out)).await;
        assert_eq!(call["outcome"], "ok", "{call:#}");
        assert_eq!(call["result"], "awx");
        let metrics = s.control("metrics", json!({})).await;
        assert!(
            metrics["ignored_fields"].as_u64() >= Some(1),
            "ignored fields are counted: {metrics:#}"
        );

        // dispatcherd's Delayer.Params(delay=...) processor option: held, then run.
        let out = s.submit(&["demo.noop", "--delay", "1.0"]).await;
        assert_eq!(out["message"]["delay"], json!(1.0));
        let call = s.call(&uuid_of(&out)).await;
        assert_eq!(call["outcome"], "ok", "{call:#}");
        let received = call["received_at"].as_f64().expect("received_at");
        let started = call["started_at"].as_f64().expect("started_at");
        assert!(
            started - received >= 0.9,
            "delayed by {} s, asked 1.0",
            started - received
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tasks_and_bad_arguments_from_dispatcherd_are_rejected_not_lost() {
    bounded(async {
        let s = RustSide::start("py_rej").await;
        let out = s.submit(&["demo.nope", "--args", "[1]"]).await;
        let call = s.call(&uuid_of(&out)).await;
        assert_eq!(call["outcome"], "rejected", "{call:#}");
        assert!(
            call["error"].as_str().unwrap_or("").contains("demo.nope"),
            "{call:#}"
        );

        let out = s.submit(&["demo.sleep", "--args", r#"["abc"]"#]).await;
        let call = s.call(&uuid_of(&out)).await;
        assert_eq!(call["outcome"], "rejected", "{call:#}");
        let error = call["error"].as_str().unwrap_or("");
        assert!(
            error.contains("demo.sleep") && error.contains("seconds"),
            "{call:#}"
        );
    })
    .await;
}

fn clip_json(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(500).collect()
}
