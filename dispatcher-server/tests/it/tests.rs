//! The tests: each starts this binary as a service process.

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher_broker_pg::PgBroker;
use dispatcher_core::{Broker, Publisher, TaskMessage};
use dispatcher_testkit::postgres::PgFixture;
use libtest_mimic::{Failed, Trial};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(20);

fn block_on<F: Future<Output = ()>>(f: F) -> Result<(), Failed> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| Failed::from(e.to_string()))?;
    rt.block_on(f);
    Ok(())
}

macro_rules! trials {
    ($($name:ident),* $(,)?) => {
        vec![$(Trial::test(stringify!($name), || block_on($name()))),*]
    };
}

pub fn all() -> Vec<Trial> {
    trials![
        sigterm_lets_the_running_call_finish_and_exits_0,
        metrics_endpoint_counts_calls,
        set_log_level_changes_the_filter,
        bad_config_file_names_the_key,
    ]
}

struct Svc {
    child: Child,
    dir: PathBuf,
    broker: Arc<PgBroker>,
    channel: String,
    _fx: PgFixture,
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("dispatcher-server-test-{}", uuid_hex()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn uuid_hex() -> String {
    dispatcher_core::call::new_uuid().replace('-', "")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(extra: &str) -> Svc {
    let fx = PgFixture::new().await.unwrap();
    let dir = temp_dir();
    let channel = format!("srv_{}", &uuid_hex()[..12]);
    let config = format!(
        "node_id = \"srv-test\"\nchannels = [\"{channel}\"]\nshutdown_grace = 10.0\nlog_level = \"info,dispatcher_runtime=debug\"\n{extra}\n[broker]\nurl = \"{}\"\n[pool]\nmin_workers = 1\nmax_workers = 1\n",
        fx.url().replace('\\', "\\\\").replace('"', "\\\"")
    );
    let path = dir.join("dispatcher.toml");
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join("service.log")).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .env("SERVER_TEST_CONFIG", &path)
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let broker = Arc::new(PgBroker::connect(&fx.url()).await.unwrap());
    let svc = Svc {
        child,
        dir,
        broker,
        channel,
        _fx: fx,
    };
    // wait until it answers
    let t = Instant::now();
    loop {
        let r = svc.control("alive", json!({})).await;
        if r.len() == 1 {
            break;
        }
        assert!(
            t.elapsed() < WAIT,
            "service never answered; log:\n{}",
            svc.log()
        );
    }
    svc
}

impl Svc {
    async fn control(&self, cmd: &str, data: Value) -> Vec<Value> {
        dispatcher_core::control::request(
            &*self.broker,
            &self.channel,
            cmd,
            data.as_object().cloned().unwrap_or_default(),
            Some(1),
            Duration::from_millis(500),
        )
        .await
        .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("service.log")).unwrap_or_default()
    }

    fn publisher(&self) -> Publisher {
        Publisher::new(self.broker.clone() as Arc<dyn Broker>, self.channel.clone()).unwrap()
    }

    async fn history_len(&self) -> usize {
        let r = self.control("history", json!({})).await;
        r.first()
            .and_then(|v| v["calls"].as_array().map(Vec::len))
            .unwrap_or(0)
    }

    async fn wait_history(&self, n: usize) {
        let t = Instant::now();
        while self.history_len().await < n {
            assert!(
                t.elapsed() < WAIT,
                "history never reached {n}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn sigterm(&self) {
        let pid = self.child.id().unwrap() as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }

    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the service exits")
            .unwrap()
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn sigterm_lets_the_running_call_finish_and_exits_0() {
    let mut svc = start("").await;
    let marker = svc.dir.join("finished.marker");
    let mut msg = TaskMessage::new("srv.sleep_then_touch");
    msg.args = vec![json!(1.5), json!(marker.display().to_string())];
    let sent = svc
        .publisher()
        .publish_message(svc.channel.clone(), msg)
        .await
        .unwrap();
    let uuid = sent.uuid().to_owned();
    // wait until it runs on the worker
    let t = Instant::now();
    loop {
        let r = svc.control("running", json!({"uuid": uuid})).await;
        if r.first()
            .and_then(Value::as_object)
            .is_some_and(|m| m.keys().any(|k| k.starts_with("worker-")))
        {
            break;
        }
        assert!(t.elapsed() < WAIT, "never ran; log:\n{}", svc.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    svc.sigterm();
    let status = svc.wait_exit().await;
    let log = svc.log();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status:?}; log:\n{log}"
    );
    assert!(
        marker.exists(),
        "the running task was not allowed to finish; log:\n{log}"
    );
    assert!(log.contains("SIGTERM received"), "{log}");
    let finished_ok = log
        .lines()
        .any(|l| l.contains(&uuid) && l.contains("call finished") && l.contains("outcome=ok"));
    assert!(finished_ok, "no ok finish logged for {uuid}:\n{log}");
}

async fn scrape(addr: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

async fn metrics_endpoint_counts_calls() {
    let port = free_port();
    let mut svc = start(&format!("[metrics]\naddress = \"127.0.0.1:{port}\"\n")).await;
    let p = svc.publisher();
    for i in 0..5 {
        let mut m = TaskMessage::new("srv.add");
        m.args = vec![json!(i), json!(1)];
        p.publish_message(svc.channel.clone(), m).await.unwrap();
    }
    p.publish_message(svc.channel.clone(), TaskMessage::new("srv.nope"))
        .await
        .unwrap();
    let mut bad = TaskMessage::new("srv.add");
    bad.args = vec![json!("x")];
    p.publish_message(svc.channel.clone(), bad).await.unwrap();
    svc.wait_history(7).await;
    let addr = format!("127.0.0.1:{port}");
    // counters are exported at once; gauges once a second
    let t = Instant::now();
    let text = loop {
        let text = scrape(&addr).await;
        if metric(&text, "dispatcher_workers{status=\"idle\"}") == Some(1.0)
            && metric(&text, "dispatcher_finished_total{outcome=\"ok\"}") == Some(5.0)
        {
            break text;
        }
        assert!(t.elapsed() < WAIT, "metrics never settled:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        metric(&text, "dispatcher_finished_total{outcome=\"rejected\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "dispatcher_finished_total{outcome=\"discarded\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "dispatcher_received_total"),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "dispatcher_dispatched_total"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "dispatcher_call_run_seconds_count"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(metric(&text, "dispatcher_queue_depth"), Some(0.0), "{text}");
    assert!(
        metric(&text, "dispatcher_control_total").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "dispatcher_broker_self_checks_total").is_some()
            || t.elapsed() < Duration::from_secs(3),
        "{text}"
    );
    svc.sigterm();
    assert_eq!(svc.wait_exit().await.code(), Some(0));
}

async fn set_log_level_changes_the_filter() {
    let mut svc = start("").await;
    let r = svc
        .control("set_log_level", json!({"level": "debug"}))
        .await;
    assert_eq!(r[0]["level"], json!("debug"), "{r:?}");
    assert_eq!(
        r[0]["previous_level"],
        json!("info,dispatcher_runtime=debug"),
        "{r:?}"
    );
    let r = svc
        .control("set_log_level", json!({"level": "info,[nope"}))
        .await;
    assert!(r[0]["error"].as_str().unwrap().contains("refused"), "{r:?}");
    let r = svc.control("set_log_level", json!({})).await;
    assert!(
        r[0]["error"]
            .as_str()
            .unwrap()
            .contains("needs control_data"),
        "{r:?}"
    );
    svc.sigterm();
    assert_eq!(svc.wait_exit().await.code(), Some(0));
}

async fn bad_config_file_names_the_key() {
    let dir = temp_dir();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "channels = [\"x\"]\n[pool]\nworkers = 3\n").unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .env("SERVER_TEST_CONFIG", &path)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unknown field `workers`") && err.contains("bad.toml"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
