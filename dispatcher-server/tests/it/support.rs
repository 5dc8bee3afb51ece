//! What the tests share: the service process (this binary, started from a config file), its
//! control requests and log, temp dirs, free ports and scraping the metrics endpoint.

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher_broker_pg::PgBroker;
use dispatcher_core::{Broker, Publisher};
use dispatcher_testkit::postgres::PgFixture;
use libtest_mimic::Failed;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::SERVICE_CONFIG_ENV;

pub const WAIT: Duration = Duration::from_secs(20);

/// Runs one test on a runtime of its own.
pub fn block_on<F: Future<Output = ()>>(f: F) -> Result<(), Failed> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| Failed::from(e.to_string()))?;
    rt.block_on(f);
    Ok(())
}

/// A running service process, its config dir and a broker on its database.
pub struct Svc {
    child: Child,
    pub dir: PathBuf,
    broker: Arc<PgBroker>,
    pub channel: String,
    /// The database's URL.
    pub url: String,
    _fx: PgFixture,
}

pub fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("dispatcher-server-test-{}", uuid_hex()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn uuid_hex() -> String {
    dispatcher_core::call::new_uuid().replace('-', "")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the service on a fresh database with `extra` appended to its config file, and waits
/// until it answers.
pub async fn start(extra: &str) -> Svc {
    let fx = PgFixture::new().await.unwrap();
    let dir = temp_dir();
    let channel = format!("srv_{}", &uuid_hex()[..12]);
    // `extra` may set the grace and the log level itself (a key may appear once).
    let grace = if extra.contains("shutdown_grace") {
        ""
    } else {
        "shutdown_grace = 10.0\n"
    };
    let level = if extra.contains("log_level") {
        ""
    } else {
        "log_level = \"info,dispatcher_runtime=debug\"\n"
    };
    let config = format!(
        "node_id = \"srv-test\"\nchannels = [\"{channel}\"]\n{grace}{level}{extra}\n[broker]\nurl = \"{}\"\n[pool]\nmin_workers = 1\nmax_workers = 1\n",
        fx.url().replace('\\', "\\\\").replace('"', "\\\"")
    );
    let path = dir.join("dispatcher.toml");
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join("service.log")).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .env(SERVICE_CONFIG_ENV, &path)
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
        url: fx.url(),
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
    pub async fn control(&self, cmd: &str, data: Value) -> Vec<Value> {
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("service.log")).unwrap_or_default()
    }

    pub fn publisher(&self) -> Publisher {
        Publisher::new(self.broker.clone() as Arc<dyn Broker>, self.channel.clone()).unwrap()
    }

    async fn history_len(&self) -> usize {
        let r = self.control("history", json!({})).await;
        r.first()
            .and_then(|v| v["calls"].as_array().map(Vec::len))
            .unwrap_or(0)
    }

    pub async fn wait_history(&self, n: usize) {
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

    pub fn sigterm(&self) {
        let pid = self.child.id().unwrap() as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }

    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
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

/// Runs the service binary on a config file holding `text` and returns what it printed and its
/// exit status (for configurations that stop it at start).
pub async fn run_config(text: &str) -> std::process::Output {
    let dir = temp_dir();
    let path = dir.join("dispatcher.toml");
    std::fs::write(&path, text).unwrap();
    let out = tokio::time::timeout(
        WAIT,
        Command::new(std::env::current_exe().unwrap())
            .env(SERVICE_CONFIG_ENV, &path)
            .env_remove("RUST_LOG")
            .env_remove("DATABASE_URL")
            .output(),
    )
    .await
    .expect("the service stops at start")
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// The lines of `log` at WARN (text format) that mention `needle`.
pub fn warn_lines<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") && l.contains(needle))
        .collect()
}

/// The metrics endpoint's page at `addr`, headers included.
pub async fn scrape(addr: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}

/// The value of the sample `name` (labels included) in a scraped page.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
