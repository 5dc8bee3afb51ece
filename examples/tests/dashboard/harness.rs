//! What the dashboard tests stand on: `dispatcher-demo serve --dashboard` on a fresh database,
//! a headless Chromium driven through chromedriver (WebDriver), raw HTTP for what a browser
//! would not send, and screenshots under `target/dashboard-screenshots/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher::{PgBroker, Publisher, TaskMessage};
use dispatcher_testkit::postgres::PgFixture;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub const WAIT: Duration = Duration::from_secs(30);

/// One browser test at a time: each runs a service, its workers and a Chromium on two cores.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A free local port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// `dispatcher-demo serve --dashboard` on a fresh database.
pub struct Demo {
    _fx: PgFixture,
    pub url: String,
    pub channel: String,
    pub node: String,
    pub dashboard: SocketAddr,
    pub publisher: Publisher,
    child: Child,
    log: PathBuf,
}

pub struct DemoOptions {
    pub token: Option<&'static str>,
    pub queue: bool,
    pub workers: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            token: None,
            queue: false,
            workers: 2,
        }
    }
}

impl Demo {
    pub async fn start(o: DemoOptions) -> Demo {
        let fx = PgFixture::new().await.unwrap();
        let url = fx.url();
        let channel = "dash_test".to_string();
        let node = format!("dash-{}", std::process::id());
        let dashboard: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::env::temp_dir().join(format!(
            "dispatcher-dashboard-test-{}-{}.log",
            std::process::id(),
            dashboard.port()
        ));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dispatcher-demo"));
        cmd.args(["serve", "--database-url", &url, "--channel", &channel])
            .args(["--workers", &o.workers.to_string(), "--node-id", &node])
            .args(["--dashboard", &dashboard.to_string()])
            .env_remove("RUST_LOG")
            .env_remove("DISPATCHER_DASHBOARD_TOKEN")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        if o.queue {
            cmd.arg("--queue");
        }
        if let Some(t) = o.token {
            cmd.env("DISPATCHER_DASHBOARD_TOKEN", t);
        }
        let child = cmd.spawn().unwrap();
        let broker = Arc::new(PgBroker::connect(&url).await.unwrap());
        let publisher = Publisher::new(broker, &channel).unwrap();
        let demo = Demo {
            _fx: fx,
            url,
            channel,
            node,
            dashboard,
            publisher,
            child,
            log,
        };
        let t = Instant::now();
        while http(demo.dashboard, "GET / HTTP/1.1\r\n\r\n")
            .await
            .is_none()
        {
            assert!(
                t.elapsed() < WAIT,
                "the dashboard never served; log:\n{}",
                demo.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        demo
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.dashboard)
    }

    /// Publishes `task(args)` with a chosen uuid.
    pub async fn publish(&self, task: &str, args: Value, uuid: &str) {
        let mut m = TaskMessage::new(task);
        m.args = args.as_array().cloned().unwrap_or_default();
        m.uuid = Some(uuid.to_owned());
        self.publisher
            .publish_message(&self.channel, m)
            .await
            .unwrap();
    }

    /// Stops the service (SIGTERM) and checks that it exits cleanly.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let status = tokio::time::timeout(WAIT, self.child.wait()).await;
        let ok = matches!(&status, Ok(Ok(s)) if s.success());
        assert!(
            ok,
            "the demo did not stop cleanly: {status:?}; log:\n{}",
            self.log()
        );
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One raw HTTP exchange (`request` without the Host and Connection headers, which are added);
/// the status code and the whole response, or `None` when nothing answers.
pub async fn http(addr: SocketAddr, request: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (head, body) = request.split_once("\r\n").unwrap_or((request, ""));
    let full = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n{body}");
    s.write_all(full.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text.split(' ').nth(1)?.parse().ok()?;
    Some((code, text))
}

/// A form POST: status and response.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    form: &str,
) -> (u16, String) {
    let mut req = format!("POST {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    ));
    http(addr, &req).await.expect("the dashboard answers")
}

/// chromedriver and a headless Chromium session.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

fn program(env: &str, default: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| default.to_owned())
}

impl Browser {
    /// Starts chromedriver and a Chromium session of 1280×800 (`dark`: the dark colour scheme).
    pub async fn start(dark: bool) -> Browser {
        let driver_bin = program("CHROMEDRIVER", "chromedriver");
        let chrome_bin = program("CHROME", "/usr/bin/chromium");
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {driver_bin} ({e}): these tests need Debian's chromium and \
                     chromium-driver (.ci/run installs them), or CHROMEDRIVER and CHROME set"
                )
            });
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,800",
        ];
        if dark {
            args.push("--force-dark-mode");
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chrome_bin, "args": args }),
        );
        let t = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(
                        t.elapsed() < WAIT,
                        "no WebDriver session from {driver_bin} with {chrome_bin}: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        Browser { client, driver }
    }

    /// Signs in on the dashboard at `base` with `token`, as a person would.
    pub async fn sign_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/login")).await;
        self.wait_for("#token")
            .await
            .send_keys(token)
            .await
            .unwrap();
        self.client
            .find(Locator::Css("form button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_for("form.inline button.link").await; // "sign out": signed in
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Waits for an element (CSS selector).
    pub async fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} within {WAIT:?}: {e}"))
    }

    /// Whether an element is on the page now.
    pub async fn has(&self, css: &str) -> bool {
        self.client.find(Locator::Css(css)).await.is_ok()
    }

    /// The text of an element now.
    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Waits until `check` holds for the text of `css` (the page updating itself).
    pub async fn wait_text(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = e.text().await {
                    if check(&text) {
                        return text;
                    }
                    assert!(
                        t.elapsed() < WAIT,
                        "{css} never showed {what}; it shows {text:?}"
                    );
                }
            }
            assert!(t.elapsed() < WAIT, "{css} never showed {what}");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// The texts of every element matching `css`, in order.
    pub async fn cells(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.client.find_all(Locator::Css(css)).await.unwrap() {
            out.push(e.text().await.unwrap().trim().to_owned());
        }
        out
    }

    /// Runs a script and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Marks the page, so that a later [`Browser::same_page`] proves no reload happened.
    pub async fn mark(&self) {
        self.js("window.__not_reloaded = true; return true;").await;
    }

    pub async fn same_page(&self) -> bool {
        self.js("return window.__not_reloaded === true;").await == json!(true)
    }

    /// Saves a screenshot as `target/dashboard-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
        drop(self.driver);
    }
}

/// `<target>/dashboard-screenshots` (the test binary lives in `<target>/<profile>/deps`).
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .map(|t| t.join("dashboard-screenshots"))
        .unwrap()
}
