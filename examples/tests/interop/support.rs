//! What every interop test needs: the Python environment with the real dispatcherd, the processes
//! (the Rust demo service, a dispatcherd service, dispatcherd's client, `dispatcherctl`), control
//! requests and bounded polling.

use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dispatcher::PgBroker;
use dispatcher_testkit::postgres::PgFixture;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// Longest any single wait (a process start, a client run, a condition polled) may take.
pub const STEP: Duration = Duration::from_secs(20);
/// Longest a whole test may take, once the Python environment exists.
pub const TEST_BOUND: Duration = Duration::from_secs(55);
/// Longest creating the Python environment may take (once per machine and pin set: a venv and a
/// `pip install` from PyPI).
const VENV_BOUND: Duration = Duration::from_secs(300);

/// The pinned Python requirements and the helper scripts live here.
pub fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/py")
}

/// The workspace's target directory: `CARGO_TARGET_DIR` (relative to the workspace root when
/// relative, as `.ci/run` sees it) or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the examples crate lies in the workspace")
        .to_path_buf();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace.join(d)
            }
        }
        _ => workspace.join("target"),
    }
}

/// Where the venv goes: `<target>/dispatcherd-venv` (`.ci/run` makes the same one beforehand).
pub fn venv_dir() -> PathBuf {
    target_dir().join("dispatcherd-venv")
}

/// The venv's python, with dispatcherd and psycopg installed (made on first use; see
/// `py/ensure_venv.py`, which serialises concurrent makers with a file lock and keeps a marker of
/// the pins it installed). Panics, saying what to provide, when it cannot be made.
pub fn python() -> &'static Path {
    match python_or_why() {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn python_or_why() -> Result<&'static Path, &'static str> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYTHON.get_or_init(make_venv) {
        Ok(p) => Ok(p),
        Err(e) => Err(e),
    }
}

fn make_venv() -> Result<PathBuf, String> {
    let system = std::env::var("DISPATCHERD_INTEROP_PYTHON").unwrap_or_else(|_| "python3".into());
    let requirements = py_dir().join("requirements.txt");
    let pins = std::fs::read_to_string(&requirements).unwrap_or_default();
    let pins: Vec<&str> = pins
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    let how = format!(
        "the interop tests run the real Python dispatcherd: they need python3 (>= 3.11, with the \
         venv module and pip; Debian/Ubuntu: `apt-get install python3 python3-venv python3-pip`), \
         or DISPATCHERD_INTEROP_PYTHON pointing at such an interpreter, and network access to PyPI \
         once, to install {} into {} (`.ci/run` makes it beforehand)",
        pins.join(" "),
        venv_dir().display()
    );
    let mut cmd = std::process::Command::new(&system);
    cmd.arg(py_dir().join("ensure_venv.py"))
        .arg(venv_dir())
        .arg(&requirements);
    let out = run_bounded(cmd, VENV_BOUND).map_err(|e| format!("{how}: running {system}: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "{how}: {system} ensure_venv.py failed ({}):\n{}",
            out.status,
            tail(&stderr, 60)
        ));
    }
    if !stderr.trim().is_empty() {
        eprintln!("{}", tail(&stderr, 20));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let python = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    if !python.is_file() {
        return Err(format!(
            "{how}: ensure_venv.py named no python (stdout: {stdout:?})"
        ));
    }
    Ok(python)
}

/// Runs a blocking command to its end, killing it after `bound`.
fn run_bounded(
    mut cmd: std::process::Command,
    bound: Duration,
) -> Result<std::process::Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut so = child.stdout.take().expect("piped");
    let mut se = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + bound;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("did not finish within {bound:?}; killed"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Ok(std::process::Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs a test body: the Python environment first (its one-time making is not counted), then the
/// body within [`TEST_BOUND`].
pub async fn bounded<F: Future<Output = ()>>(body: F) {
    let made = tokio::task::spawn_blocking(python_or_why)
        .await
        .expect("making the Python environment");
    if let Err(why) = made {
        panic!("{why}");
    }
    let started = Instant::now();
    if tokio::time::timeout(TEST_BOUND, body).await.is_err() {
        panic!("the test did not finish within {TEST_BOUND:?}");
    }
    eprintln!("interop: test body took {:?}", started.elapsed());
}

/// Locates (or builds) this workspace's `dispatcherctl` before a test's bounded part starts:
/// building it may take longer than a test is given.
pub async fn prepare_dispatcherctl() {
    tokio::task::spawn_blocking(|| {
        dispatcherctl_bin();
    })
    .await
    .expect("locating dispatcherctl");
}

/// Polls `probe` every 100 ms until it gives `Some`, for at most [`STEP`].
pub async fn poll_until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {STEP:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A unique channel name (every test also has a database of its own).
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &id[..12])
}

/// A scratch directory for logs and marker files; removed at the end of a passing test, kept
/// (and named) when the test fails.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("dispatcherd-interop-{name}"));
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path in the scratch directory, as a string (what the tasks get).
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("interop: logs and markers kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The fixture's connection settings as psycopg keyword arguments (host, port, user, dbname and
/// the password when there is one).
pub fn pg_kwargs(fx: &PgFixture) -> Value {
    let c = fx.config();
    let mut m = Map::new();
    if let Some(h) = c.get_hosts().first() {
        let host = match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        };
        m.insert("host".into(), host.into());
    }
    if let Some(p) = c.get_ports().first() {
        m.insert("port".into(), (*p).into());
    }
    if let Some(u) = c.get_user() {
        m.insert("user".into(), u.into());
    }
    if let Some(d) = c.get_dbname() {
        m.insert("dbname".into(), d.into());
    }
    if let Some(pw) = c.get_password() {
        m.insert(
            "password".into(),
            String::from_utf8_lossy(pw).into_owned().into(),
        );
    }
    Value::Object(m)
}

/// What the Python helpers get in `DISPATCHERD_INTEROP`.
pub fn py_params(fx: &PgFixture, channel: &str, node_id: Option<&str>) -> String {
    json!({ "pg": pg_kwargs(fx), "channel": channel, "node_id": node_id }).to_string()
}

/// Sends SIGKILL to a process group we started (its leader's pid is the group id).
fn kill_group(pgid: Option<u32>) {
    if let Some(id) = pgid.and_then(|id| i32::try_from(id).ok()) {
        let _ = killpg(Pid::from_raw(id), Signal::SIGKILL);
    }
}

/// Prints a service's log when the test fails.
fn report_log(what: &str, log: &Path) {
    if std::thread::panicking() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        eprintln!(
            "---- {what} log ({}), last lines:\n{}",
            log.display(),
            tail(&text, 40)
        );
    }
}

/// A control request through the Rust client (`dispatcher::core::control::request`): the first
/// reply, or none when none came within `timeout`.
pub async fn rust_control(
    broker: &PgBroker,
    channel: &str,
    command: &str,
    data: Value,
    timeout: Duration,
) -> Vec<Value> {
    let data = match data {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => panic!("control data must be an object, got {other}"),
    };
    dispatcher::core::control::request(broker, channel, command, data, Some(1), timeout)
        .await
        .unwrap_or_else(|e| panic!("control request {command} on {channel}: {e}"))
}

/// A PgBroker on the fixture's database, for the test's own control requests and publishing.
pub async fn pg_broker(fx: &PgFixture) -> Arc<PgBroker> {
    Arc::new(
        tokio::time::timeout(STEP, PgBroker::connect(&fx.url()))
            .await
            .expect("PgBroker::connect within the step bound")
            .expect("PgBroker::connect"),
    )
}

/// The Rust demo service (`dispatcher-demo serve`) as a child process; killed (with its worker
/// processes) when dropped.
pub struct DemoService {
    child: Child,
    log: PathBuf,
    pub node_id: String,
    pub channel: String,
}

impl DemoService {
    /// Starts it with 2 workers and waits until it answers `alive`.
    pub async fn start(fx: &PgFixture, channel: &str, scratch: &Scratch) -> DemoService {
        DemoService::start_with(fx, channel, scratch, &[]).await
    }

    /// Starts it with 2 workers and the `serve` options `extra` (e.g. `--queue`), and waits
    /// until it answers `alive`.
    pub async fn start_with(
        fx: &PgFixture,
        channel: &str,
        scratch: &Scratch,
        extra: &[&str],
    ) -> DemoService {
        let node_id = unique("rust_node");
        let log = scratch.path().join("dispatcher-demo.log");
        let file = std::fs::File::create(&log).expect("creating the demo's log");
        let child = Command::new(env!("CARGO_BIN_EXE_dispatcher-demo"))
            .args(["serve", "--database-url", &fx.url(), "--channel", channel])
            .args(["--workers", "2", "--node-id", &node_id])
            .args(extra)
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file handle"))
            .stderr(file)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("starting dispatcher-demo serve");
        let mut demo = DemoService {
            child,
            log,
            node_id,
            channel: channel.to_owned(),
        };
        let broker = pg_broker(fx).await;
        let node = demo.node_id.clone();
        let deadline = Instant::now() + STEP;
        loop {
            if let Ok(Some(status)) = demo.child.try_wait() {
                panic!("dispatcher-demo serve exited early: {status}");
            }
            let replies = rust_control(
                &broker,
                channel,
                "alive",
                Value::Null,
                Duration::from_millis(500),
            )
            .await;
            if replies.iter().any(|r| r["node_id"] == node.as_str()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dispatcher-demo serve did not answer `alive` within {STEP:?}"
            );
        }
        demo
    }

    /// What the service logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DemoService {
    fn drop(&mut self) {
        kill_group(self.child.id());
        report_log("dispatcher-demo", &self.log);
    }
}

/// A real dispatcherd service (`py/py_service.py`, i.e. `dispatcherd.run_service()` with the
/// tasks of `py/interop_tasks.py`) as a child process group; killed when dropped (and it stops by
/// itself when its stdin closes, should the test process die first).
pub struct PyService {
    child: Child,
    _stdin: ChildStdin,
    log: PathBuf,
    pub node_id: String,
    pub channel: String,
}

impl PyService {
    /// Starts it and waits until its broker LISTENs on `channel`.
    pub async fn start(fx: &PgFixture, channel: &str, scratch: &Scratch) -> PyService {
        let node_id = unique("py_node");
        let log = scratch.path().join("dispatcherd.log");
        let file = std::fs::File::create(&log).expect("creating the dispatcherd log");
        let mut child = Command::new(python())
            .arg(py_dir().join("py_service.py"))
            .env(
                "DISPATCHERD_INTEROP",
                py_params(fx, channel, Some(&node_id)),
            )
            .env("DISPATCHERD_INTEROP_WATCH_STDIN", "1")
            .env("PYTHONPATH", py_dir())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(file)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("starting the dispatcherd service");
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let service = PyService {
            child,
            _stdin: stdin,
            log,
            node_id,
            channel: channel.to_owned(),
        };
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(STEP, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim() == "dispatcherd-interop: ready" {
                    return true;
                }
            }
            false
        })
        .await;
        match ready {
            Ok(true) => {}
            Ok(false) => panic!("the dispatcherd service exited before it was ready"),
            Err(_) => panic!("the dispatcherd service was not ready within {STEP:?}"),
        }
        // Task output may go to stdout: keep reading it so the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        service
    }
}

impl Drop for PyService {
    fn drop(&mut self) {
        kill_group(self.child.id());
        report_log("dispatcherd service", &self.log);
    }
}

/// Runs `py/py_client.py` (dispatcherd's own publishing and control API) and returns the JSON it
/// prints.
pub async fn py_client(params: &str, args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(py_dir().join("py_client.py"))
        .args(args)
        .env("DISPATCHERD_INTEROP", params)
        .env("PYTHONPATH", py_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(STEP, out)
        .await
        .unwrap_or_else(|_| panic!("py_client.py {} took over {STEP:?}", short(args)))
        .expect("running py_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "py_client.py {} failed ({}):\n{}",
        short(args),
        out.status,
        tail(&stderr, 40)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "py_client.py {} printed no JSON ({e}): {}\nstderr:\n{}",
            short(args),
            clip(&stdout),
            tail(&stderr, 20)
        )
    })
}

/// Runs dispatcherd's own command-line client (`dispatcherctl` of the Python package) with a
/// config file; returns its exit code and stdout (YAML).
pub async fn py_dispatcherctl(config: &str, args: &[&str]) -> (i32, String) {
    let exe = python()
        .parent()
        .expect("the venv's bin directory")
        .join("dispatcherctl");
    // After the command: its subparser has --config and --log-level too, and their defaults
    // would override values given before it.
    let out = Command::new(exe)
        .args(args)
        .args(["--config", config, "--log-level", "ERROR"])
        .env_remove("DISPATCHERD_CONFIG_FILE")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(STEP, out)
        .await
        .unwrap_or_else(|_| panic!("dispatcherd's dispatcherctl {args:?} took over {STEP:?}"))
        .expect("running dispatcherd's dispatcherctl");
    if !out.status.success() {
        eprintln!(
            "dispatcherd's dispatcherctl {args:?}: {}\n{}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        );
    }
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The `dispatcherctl` binary of this workspace: next to the test executable's directory, or
/// built with `cargo build -p dispatcherctl` (bounded) when a narrower `cargo test` did not build
/// it.
pub fn dispatcherctl_bin() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = BIN.get_or_init(|| {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // target/<profile>/deps/interop-<hash> -> target/<profile>/dispatcherctl
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("dispatcherctl"))
            .ok_or("no target directory above the test executable")?;
        if bin.is_file() {
            return Ok(bin);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(&cargo);
        cmd.args(["build", "-p", "dispatcherctl", "--bin", "dispatcherctl"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        let out = run_bounded(cmd, Duration::from_secs(300))
            .map_err(|e| format!("{cargo} build -p dispatcherctl: {e}"))?;
        if !out.status.success() || !bin.is_file() {
            return Err(format!(
                "{cargo} build -p dispatcherctl did not produce {} ({}):\n{}",
                bin.display(),
                out.status,
                tail(&String::from_utf8_lossy(&out.stderr), 30)
            ));
        }
        Ok(bin)
    });
    match found {
        Ok(p) => p,
        Err(e) => panic!("dispatcherctl binary: {e}"),
    }
}

/// Runs this workspace's `dispatcherctl --json` and returns its exit code and the JSON array of
/// replies.
pub async fn dispatcherctl(fx: &PgFixture, channel: &str, args: &[&str]) -> (i32, Value) {
    let bin = tokio::task::spawn_blocking(|| dispatcherctl_bin().to_path_buf())
        .await
        .expect("locating dispatcherctl");
    let out = Command::new(bin)
        .args(["--database-url", &fx.url(), "--channel", channel])
        .args(["--json", "--timeout", "10"])
        .args(args)
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(STEP, out)
        .await
        .unwrap_or_else(|_| panic!("dispatcherctl {args:?} took over {STEP:?}"))
        .expect("running dispatcherctl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let replies = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "dispatcherctl --json {args:?} printed no JSON array ({e}): {}\nstderr: {}",
            clip(&stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), replies)
}

/// Runs this workspace's `dispatcherctl` without `--json` (the human output).
pub async fn dispatcherctl_human(fx: &PgFixture, channel: &str, args: &[&str]) -> (i32, String) {
    let bin = tokio::task::spawn_blocking(|| dispatcherctl_bin().to_path_buf())
        .await
        .expect("locating dispatcherctl");
    let out = Command::new(bin)
        .args(["--database-url", &fx.url(), "--channel", channel])
        .args(["--timeout", "10"])
        .args(args)
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(STEP, out)
        .await
        .unwrap_or_else(|_| panic!("dispatcherctl {args:?} took over {STEP:?}"))
        .expect("running dispatcherctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Waits for the Call `uuid` to be in the Rust service's history (control `history`), finished.
pub async fn wait_for_call(broker: &PgBroker, channel: &str, uuid: &str) -> Value {
    poll_until(&format!("Call {uuid} in the history"), || async {
        let replies = rust_control(
            broker,
            channel,
            "history",
            json!({ "uuid": uuid }),
            Duration::from_secs(2),
        )
        .await;
        replies
            .first()
            .and_then(|r| r["calls"].as_array())
            .and_then(|c| c.last())
            .filter(|c| c["outcome"].is_string())
            .cloned()
    })
    .await
}

/// Waits until a file holds what `check` accepts; returns its content.
pub async fn wait_for_file(path: &str, check: impl Fn(&str) -> bool) -> String {
    poll_until(&format!("marker file {path}"), || async {
        std::fs::read_to_string(path).ok().filter(|t| check(t))
    })
    .await
}

fn short(args: &[&str]) -> String {
    args.iter().map(|a| clip(a)).collect::<Vec<_>>().join(" ")
}

fn clip(s: &str) -> String {
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &s[..end], s.len())
    } else {
        s.to_owned()
    }
}
