//! The service process, the control client, publishing flows (NOTIFY messages and durable jobs)
//! and the accounting of Calls and jobs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dispatcher_broker_pg::queue::{Job, PgQueue, PgQueueConfig};
use dispatcher_broker_pg::PgBroker;
use dispatcher_core::{Broker, Call, Outcome, TaskMessage};
use dispatcher_testkit::postgres::PgFixture;
use libtest_mimic::{Failed, Trial};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// How long the service may take to answer after it starts.
const START_LIMIT: Duration = Duration::from_secs(30);

pub fn block_on<F: Future<Output = ()>>(f: F) -> Result<(), Failed> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| Failed::from(e.to_string()))?;
    rt.block_on(f);
    Ok(())
}

pub type Trials = Vec<Trial>;

/// How to run the service.
#[derive(Debug, Clone)]
pub struct Opts {
    pub workers: usize,
    pub history_size: usize,
    pub max_waiting: usize,
    /// Extra lines for the `[pool]` section.
    pub pool: String,
    /// On a private throwaway server (tests that restart PostgreSQL).
    pub throwaway: bool,
    /// Also consume the durable queue (`[queue] enabled = true`), with this lease in seconds.
    pub queue_lease: Option<f64>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            workers: 2,
            history_size: 20_000,
            max_waiting: 100_000,
            pool: String::new(),
            throwaway: false,
            queue_lease: None,
        }
    }
}

/// A service process and a client broker on the same database.
pub struct Svc {
    // Fields drop in this order: the process first, the database last.
    child: Child,
    pub pid: u32,
    pub dir: PathBuf,
    pub broker: Arc<PgBroker>,
    /// This service's own channel: control commands, and NOTIFY messages.
    pub channel: String,
    /// The durable queue it consumes (with `Opts::queue_lease`), which services on one
    /// database may share.
    pub queue: String,
    /// Its node id, also the `application_name` of its PostgreSQL connections.
    pub node: String,
    pub fx: Arc<PgFixture>,
}

fn uuid_hex() -> String {
    dispatcher_core::call::new_uuid().replace('-', "")
}

pub async fn start(opts: Opts) -> Svc {
    let fx = if opts.throwaway {
        PgFixture::throwaway().await.unwrap()
    } else {
        PgFixture::new().await.unwrap()
    };
    let queue = format!("faults_q_{}", &uuid_hex()[..12]);
    start_on(Arc::new(fx), &queue, opts).await
}

/// Starts a service on the database of `fx`, consuming the durable queue `queue` when
/// `opts.queue_lease` is set (several services may share one).
pub async fn start_on(fx: Arc<PgFixture>, queue: &str, opts: Opts) -> Svc {
    let dir = std::env::temp_dir().join(format!("dispatcher-faults-{}", uuid_hex()));
    std::fs::create_dir_all(&dir).unwrap();
    let channel = format!("faults_{}", &uuid_hex()[..12]);
    let node = format!("faults_{}", &uuid_hex()[..8]);
    let (channels, queue_section) = match opts.queue_lease {
        Some(lease) => (
            format!("\"{channel}\", \"{queue}\""),
            format!("[queue]\nenabled = true\nlease = {lease:?}\n"),
        ),
        None => (format!("\"{channel}\""), String::new()),
    };
    let url = format!("{} application_name={node}", fx.url());
    let config = format!(
        "node_id = \"{node}\"\nchannels = [{channels}]\nhistory_size = {}\nmax_waiting = {}\n\
         shutdown_grace = 5.0\nlog_level = \"info\"\n\
         [broker]\nurl = \"{}\"\n\
         [pool]\nmin_workers = {w}\nmax_workers = {w}\nkill_grace = 0.5\n{}\n{queue_section}",
        opts.history_size,
        opts.max_waiting,
        url.replace('\\', "\\\\").replace('"', "\\\""),
        opts.pool,
        w = opts.workers,
    );
    let path = dir.join("dispatcher.toml");
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join("service.log")).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .env(crate::SERVICE_CONFIG_ENV, &path)
        .env(crate::LEDGER_ENV, dir.join("ledger"))
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let broker = Arc::new(PgBroker::connect(&fx.url()).await.unwrap());
    let svc = Svc {
        child,
        pid,
        dir,
        broker,
        channel,
        queue: queue.to_owned(),
        node,
        fx,
    };
    let t = Instant::now();
    while svc.control("alive", json!({}), 500).await.is_none() {
        assert!(
            t.elapsed() < START_LIMIT,
            "the service never answered; log:\n{}",
            svc.log_tail()
        );
    }
    svc
}

/// What `metrics` says.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub received: u64,
    pub finished: BTreeMap<String, u64>,
    pub waiting: u64,
    pub queue_depth: u64,
    pub history_size: u64,
}

impl Counts {
    pub fn finished_total(&self) -> u64 {
        self.finished.values().sum()
    }

    pub fn outcome(&self, o: &str) -> u64 {
        self.finished.get(o).copied().unwrap_or(0)
    }

    /// The reply of `metrics`.
    pub fn parse(v: &Value) -> Counts {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Counts {
            received: n("received"),
            finished: v["finished"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                        .filter(|(_, v)| *v > 0)
                        .collect()
                })
                .unwrap_or_default(),
            waiting: n("waiting"),
            queue_depth: n("queue_depth"),
            history_size: n("history_size"),
        }
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "received={} finished={} {:?} waiting={} queue_depth={} history_size={}",
            self.received,
            self.finished_total(),
            self.finished,
            self.waiting,
            self.queue_depth,
            self.history_size
        )
    }
}

impl Svc {
    /// One control command; `None` when no reply came within `timeout_ms` (e.g. while the
    /// service's or this client's LISTEN connection is down).
    pub async fn control(&self, cmd: &str, data: Value, timeout_ms: u64) -> Option<Value> {
        let timeout = Duration::from_millis(timeout_ms);
        // Subscribing waits for this client's listener: bound the whole request.
        let r = tokio::time::timeout(
            timeout + Duration::from_secs(1),
            dispatcher_core::control::request(
                &*self.broker,
                &self.channel,
                cmd,
                data.as_object().cloned().unwrap_or_default(),
                Some(1),
                timeout,
            ),
        )
        .await;
        match r {
            Ok(Ok(mut v)) if !v.is_empty() => Some(v.swap_remove(0)),
            _ => None,
        }
    }

    /// A control command that must be answered within `limit` (asked again every 2 s).
    pub async fn ask(&self, cmd: &str, data: Value, limit: Duration) -> Value {
        self.ask_each(cmd, data, 2000, limit).await
    }

    /// A control command that must be answered within `limit`, each request waiting `each_ms`
    /// for its reply.
    pub async fn ask_each(&self, cmd: &str, data: Value, each_ms: u64, limit: Duration) -> Value {
        let t = Instant::now();
        loop {
            if let Some(v) = self.control(cmd, data.clone(), each_ms).await {
                return v;
            }
            assert!(
                t.elapsed() < limit,
                "no reply to `{cmd}` within {limit:?}; log:\n{}",
                self.log_tail()
            );
        }
    }

    pub async fn counts(&self) -> Counts {
        Counts::parse(
            &self
                .ask("metrics", json!({}), Duration::from_secs(20))
                .await,
        )
    }

    /// The broker status in `main` (listener pid, recycles, self-checks).
    pub async fn broker_status(&self) -> Value {
        let v = self.ask("main", json!({}), Duration::from_secs(20)).await;
        v["brokers"][0].clone()
    }

    pub async fn workers(&self) -> Vec<Value> {
        let v = self
            .ask("workers", json!({}), Duration::from_secs(20))
            .await;
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.starts_with("worker-"))
                    .map(|(_, w)| w.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The whole history, oldest first.
    pub async fn history(&self) -> Vec<Call> {
        // Thousands of Calls take seconds to serialize and to travel as chunks: a request waits
        // that long for its reply (asking again every 2 s would never let one arrive).
        let v = self
            .ask_each("history", json!({}), 30_000, Duration::from_secs(60))
            .await;
        serde_json::from_value(v["calls"].clone())
            .unwrap_or_else(|e| panic!("history reply is not a list of Calls: {e}"))
    }

    pub async fn call(&self, uuid: &str) -> Option<Call> {
        let v = self
            .ask("history", json!({ "uuid": uuid }), Duration::from_secs(20))
            .await;
        let calls: Vec<Call> = serde_json::from_value(v["calls"].clone()).unwrap();
        calls.into_iter().next()
    }

    /// Waits until the Call `uuid` is in the history.
    pub async fn wait_call(&self, uuid: &str, limit: Duration) -> Call {
        let t = Instant::now();
        loop {
            if let Some(c) = self.call(uuid).await {
                return c;
            }
            assert!(
                t.elapsed() < limit,
                "Call {uuid} not finished within {limit:?}: {}; log:\n{}",
                self.counts().await,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every received message is a finished Call and nothing waits: no Call stuck.
    pub async fn settle(&self, limit: Duration) -> Counts {
        let t = Instant::now();
        loop {
            let c = self.counts().await;
            if c.received == c.finished_total() && c.waiting == 0 && c.queue_depth == 0 {
                return c;
            }
            assert!(
                t.elapsed() < limit,
                "Calls stuck: not every received message finished within {limit:?}: {c}; log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Publishes one task message with a fresh uuid; the uuid.
    pub async fn publish(&self, task: &str, args: Vec<Value>) -> String {
        let (uuid, payload) = message(task, args);
        self.broker.publish(&self.channel, &payload).await.unwrap();
        uuid
    }

    /// Publishes `n` messages of `task` (arguments from `args(i)`) in one batch; their uuids.
    pub async fn publish_batch(
        &self,
        task: &str,
        n: usize,
        args: impl Fn(usize) -> Vec<Value>,
    ) -> Vec<String> {
        let mut uuids = Vec::with_capacity(n);
        let mut batch = Vec::with_capacity(n);
        for i in 0..n {
            let (uuid, payload) = message(task, args(i));
            uuids.push(uuid);
            batch.push((self.channel.clone(), payload));
        }
        self.broker.publish_batch(&batch).await.unwrap();
        uuids
    }

    /// Waits until the pool has `n` live workers, none of them `exclude`; how long it took.
    pub async fn wait_pool_size(
        &self,
        n: usize,
        exclude: Option<u64>,
        limit: Duration,
    ) -> Duration {
        let t = Instant::now();
        loop {
            let w = self.workers().await;
            let live = w
                .iter()
                .filter(|w| w["status"] == "ready")
                .filter(|w| exclude.is_none_or(|p| w["pid"].as_u64() != Some(p)))
                .count();
            if live == n && w.len() == n {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < limit,
                "pool not back to {n} workers within {limit:?}: {w:?}; log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The pid of the worker running Call `uuid`, once it runs.
    pub async fn worker_pid_of(&self, uuid: &str, limit: Duration) -> u32 {
        let t = Instant::now();
        loop {
            let w = self.workers().await;
            if let Some(pid) = w
                .iter()
                .find(|w| w["current_task_uuid"].as_str() == Some(uuid))
                .and_then(|w| w["pid"].as_u64())
            {
                return pid as u32;
            }
            assert!(
                t.elapsed() < limit,
                "Call {uuid} never ran within {limit:?}: {w:?}; log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `(VmRSS, VmHWM)` of the service process in kB.
    pub fn rss_kb(&self) -> (u64, u64) {
        proc_rss_kb(self.pid)
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("service.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// The durable queue's broker status in `main` (wake-up listener pid, recycles, owner ids,
    /// claim counters).
    pub async fn queue_status(&self) -> Value {
        let v = self.ask("main", json!({}), Duration::from_secs(20)).await;
        v["brokers"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["broker"] == "pg_queue"))
            .cloned()
            .unwrap_or_else(|| panic!("no pg_queue broker in `main`: {v}"))
    }

    /// Pids of this service's PostgreSQL backends (its connections carry its node id as
    /// `application_name`).
    pub async fn backends(&self) -> Vec<i32> {
        let admin = self.fx.client().await.unwrap();
        admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid",
                &[&self.node],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// SIGKILL, and waits until the process is gone (its workers die with it).
    pub async fn sigkill(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        assert!(
            matches!(status, Ok(Ok(_))),
            "the service did not die: {status:?}"
        );
    }

    /// The runs `f.job` completed in this service's workers: job id → the attempt of each run.
    pub fn ledger(&self) -> HashMap<u64, Vec<u32>> {
        let text = std::fs::read_to_string(self.dir.join("ledger")).unwrap_or_default();
        let mut runs: HashMap<u64, Vec<u32>> = HashMap::new();
        for line in text.lines() {
            let mut f = line.split(' ').map(|x| x.parse::<u64>());
            match (f.next(), f.next(), f.next()) {
                (Some(Ok(id)), Some(Ok(attempt)), None) => {
                    runs.entry(id).or_default().push(attempt as u32)
                }
                _ => panic!("a torn ledger line: {line:?}"),
            }
        }
        runs
    }

    /// SIGTERM, and the service must stop gracefully (exit status 0) within 20 s.
    pub async fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        let log = self.log_tail();
        let status = status
            .unwrap_or_else(|_| panic!("the service did not stop within 20 s; log:\n{log}"))
            .unwrap();
        assert_eq!(
            status.code(),
            Some(0),
            "exit status {status:?}; log:\n{log}"
        );
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `(VmRSS, VmHWM)` of process `pid` in kB (zeros when it is gone).
pub fn proc_rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Samples a process's RSS every 50 ms in a thread of its own until stopped; the largest seen.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let (s, m) = (stop.clone(), max.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(proc_rss_kb(pid).0, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler {
            stop,
            max,
            thread: Some(thread),
        }
    }

    /// The largest RSS seen, in kB.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.max.load(Ordering::Relaxed)
    }
}

/// A task message with a fresh uuid: `(uuid, JSON)`.
pub fn message(task: &str, args: Vec<Value>) -> (String, String) {
    let uuid = dispatcher_core::call::new_uuid();
    let mut m = TaskMessage::new(task);
    m.uuid = Some(uuid.clone());
    m.args = args;
    m.time_pub = Some(dispatcher_core::call::now_epoch());
    (uuid, m.to_json().unwrap())
}

/// One message of a flow.
#[derive(Debug, Clone)]
pub struct Sent {
    pub uuid: String,
    /// When the publish was started.
    pub at: Instant,
    /// The publish returned Ok.
    pub ok: bool,
}

/// Publishes a task message every `interval` until stopped, recording each.
pub struct Flow {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Sent>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Flow {
    pub fn start(svc: &Svc, task: &'static str, args: Vec<Value>, interval: Duration) -> Flow {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let broker = svc.broker.clone();
        let channel = svc.channel.clone();
        let (s, record) = (stop.clone(), sent.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                let (uuid, payload) = message(task, args.clone());
                let at = Instant::now();
                // A publish that hangs (server down) counts as failed; it may still arrive.
                let ok = matches!(
                    tokio::time::timeout(
                        Duration::from_secs(2),
                        broker.publish(&channel, &payload)
                    )
                    .await,
                    Ok(Ok(()))
                );
                record.lock().unwrap().push(Sent { uuid, at, ok });
            }
        });
        Flow { stop, sent, task }
    }

    pub async fn stop(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        let v = self.sent.lock().unwrap().clone();
        v
    }
}

/// The history checked against what was sent.
#[derive(Debug)]
pub struct Accounting {
    pub counts: Counts,
    pub calls: HashMap<String, Call>,
}

/// Waits until nothing is in flight, then checks the invariant: every message the service
/// received is exactly one finished Call in the history (`received` == number of Calls, no
/// duplicate uuid, every Call has an outcome), and every Call is one of `known` (what this test
/// published, whether or not the publish reported success).
pub async fn account(svc: &Svc, known: &HashSet<String>, limit: Duration) -> Accounting {
    let counts = svc.settle(limit).await;
    let list = svc.history().await;
    let n = list.len();
    let mut calls = HashMap::new();
    for c in list {
        assert!(
            c.outcome.is_some(),
            "a Call in the history has no outcome: {c:?}"
        );
        assert!(
            known.contains(&c.uuid),
            "the history holds a Call nobody published: {c:?}"
        );
        let uuid = c.uuid.clone();
        assert!(
            calls.insert(uuid.clone(), c).is_none(),
            "uuid {uuid} is twice in the history"
        );
    }
    assert_eq!(
        counts.received, n as u64,
        "received != Calls in the history (history_size must hold them all): {counts}, history \
         returned {n}"
    );
    assert_eq!(
        counts.history_size, n as u64,
        "the history reply and history_size disagree: {counts}, reply {n}"
    );
    // Nothing finished after the settle: the counters still agree.
    let again = svc.counts().await;
    assert_eq!(
        (again.received, again.finished_total()),
        (counts.received, counts.finished_total()),
        "Calls appeared after the service settled: before {counts}, after {again}"
    );
    Accounting { counts, calls }
}

/// Asserts that every uuid of `uuids` ended `ok`; `what` names them in the message.
pub fn assert_all_ok(acc: &Accounting, uuids: &[String], what: &str) {
    let mut bad: Vec<String> = Vec::new();
    for u in uuids {
        match acc.calls.get(u) {
            Some(c) if c.outcome == Some(Outcome::Ok) => {}
            Some(c) => bad.push(format!("{u}: {:?} {:?}", c.outcome, c.error)),
            None => bad.push(format!("{u}: not in the history")),
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} {what} did not end ok ({}): first: {:?}",
        bad.len(),
        uuids.len(),
        acc.counts,
        &bad[..bad.len().min(5)]
    );
}

/// A process stopped with SIGSTOP until the guard is dropped.
pub use dispatcher_testkit::postgres::Frozen;

/// Is process `pid` alive (a zombie counts as gone)?
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // The state follows the command name in parentheses.
            let state = s
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// Live (non-zombie) processes whose process group is `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit(')').next() else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state, ppid, pgrp.
        if f.len() > 2 && f[2].parse::<u32>().ok() == Some(pgid) && f[0] != "Z" && f[0] != "X" {
            out.push(pid);
        }
    }
    out
}

/// A client of the durable queue on `fx`'s database (it publishes; it consumes nothing). An
/// enqueue that gets no answer within 2 s is an error (whether it committed is unknown).
pub async fn queue_client(fx: &PgFixture) -> Arc<PgQueue> {
    let mut c = PgQueueConfig::from_url(&fx.url()).unwrap();
    c.statement_timeout = Duration::from_secs(2);
    Arc::new(PgQueue::connect(c).await.unwrap())
}

/// The message of `f.job` number `id` taking `micros`, with a fresh uuid: `(uuid, message)`.
pub fn job_message(id: u64, micros: u64) -> (String, TaskMessage) {
    let uuid = dispatcher_core::call::new_uuid();
    let mut m = TaskMessage::new("f.job");
    m.uuid = Some(uuid.clone());
    m.args = vec![json!(id), json!(micros)];
    m.time_pub = Some(dispatcher_core::call::now_epoch());
    (uuid, m)
}

/// One enqueue of a [`QueueFlow`].
#[derive(Debug, Clone)]
pub struct Enqueue {
    /// The ids of the jobs it carried.
    pub ids: std::ops::Range<u64>,
    /// When it was started.
    pub at: Instant,
    /// The error it returned, if any (then its jobs may or may not have been committed).
    pub error: Option<String>,
}

/// Enqueues a batch of `f.job` jobs every interval until stopped, recording each enqueue.
pub struct QueueFlow {
    stop: Arc<AtomicBool>,
    jobs: Arc<AtomicU64>,
    sent: Arc<Mutex<Vec<Enqueue>>>,
    task: tokio::task::JoinHandle<()>,
}

impl QueueFlow {
    /// Jobs numbered from `first`, `batch` per enqueue (one row of the jobs table), each taking
    /// `micros`, into `queue` through `client`.
    pub fn start(
        client: Arc<PgQueue>,
        queue: &str,
        first: u64,
        batch: u64,
        interval: Duration,
        micros: u64,
    ) -> QueueFlow {
        let stop = Arc::new(AtomicBool::new(false));
        let jobs = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let queue = queue.to_owned();
        let (s, n, record) = (stop.clone(), jobs.clone(), sent.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut next = first;
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                let ids = next..next + batch;
                next += batch;
                let batch: Vec<Job> = ids
                    .clone()
                    .map(|id| Job::new(queue.as_str(), &job_message(id, micros).1).unwrap())
                    .collect();
                let at = Instant::now();
                // The client's statement timeout bounds it; this bounds a connect, too.
                let r =
                    tokio::time::timeout(Duration::from_secs(5), client.enqueue_many(batch)).await;
                let error = match r {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("no answer within 5 s".to_owned()),
                };
                n.fetch_add(ids.end - ids.start, Ordering::Relaxed);
                record.lock().unwrap().push(Enqueue { ids, at, error });
            }
        });
        QueueFlow {
            stop,
            jobs,
            sent,
            task,
        }
    }

    /// Jobs enqueued so far (whatever the outcome).
    pub fn jobs_sent(&self) -> u64 {
        self.jobs.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` jobs were enqueued.
    pub async fn wait_sent(&self, n: u64, limit: Duration) {
        let t = Instant::now();
        while self.jobs_sent() < n {
            assert!(
                t.elapsed() < limit,
                "the flow enqueued only {} of {n} jobs in {limit:?}",
                self.jobs_sent()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) -> Vec<Enqueue> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        let v = self.sent.lock().unwrap().clone();
        v
    }
}

/// The `f.job` Calls of the services' histories, by job id.
#[derive(Debug, Default)]
pub struct QueueAccount {
    pub calls: HashMap<u64, Vec<Call>>,
    /// Each service's counters after it settled.
    pub counts: Vec<Counts>,
}

/// The job id of an `f.job` Call.
pub fn job_id(call: &Call) -> Option<u64> {
    (call.task == "f.job")
        .then(|| call.args.get(0).and_then(Value::as_u64))
        .flatten()
}

/// Waits until the durable queue of `svcs` has nothing left to run (no available or running
/// job, no claim) and every service settled; asserts that no job was kept as failed or
/// canceled; then collects their histories: every Call must be an `f.job` Call, each history
/// must hold every Call its service received, and each service's ledger (the runs its workers
/// completed) must match the Calls of its history that ended ok, job by job.
pub async fn drain_queue(svcs: &[&Svc], limit: Duration) -> QueueAccount {
    let admin = svcs[0].fx.client().await.unwrap();
    let t = Instant::now();
    loop {
        let row = admin
            .query_one(
                "SELECT (SELECT count(*) FROM dispatcher.jobs WHERE state IN ('available', 'running')),
                        (SELECT count(*) FROM dispatcher.claims),
                        (SELECT count(*) FROM dispatcher.jobs WHERE state IN ('failed', 'canceled'))",
                &[],
            )
            .await
            .unwrap();
        let (live, claims, kept): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        if kept > 0 {
            let rows = admin
                .query(
                    "SELECT id, state, attempt, errors::text, messages[1] FROM dispatcher.jobs
                      WHERE state IN ('failed', 'canceled') ORDER BY id LIMIT 5",
                    &[],
                )
                .await
                .unwrap();
            let rows: Vec<String> = rows
                .iter()
                .map(|r| {
                    format!(
                        "{} {} attempt {} errors {} {}",
                        r.get::<_, i64>(0),
                        r.get::<_, String>(1),
                        r.get::<_, i32>(2),
                        r.get::<_, String>(3),
                        r.get::<_, String>(4)
                    )
                })
                .collect();
            panic!("{kept} jobs were kept as failed or canceled: {rows:#?}");
        }
        if live == 0 && claims == 0 {
            break;
        }
        assert!(
            t.elapsed() < limit,
            "the queue did not drain within {limit:?}: {live} jobs available or running, {claims} \
             claims; log of the first service:\n{}",
            svcs[0].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut acc = QueueAccount::default();
    for svc in svcs {
        let counts = svc.settle(limit).await;
        let history = svc.history().await;
        assert_eq!(
            counts.received,
            history.len() as u64,
            "{}: received != Calls in the history (history_size must hold them all): {counts}",
            svc.node
        );
        let mut ok_runs: HashMap<u64, Vec<u32>> = HashMap::new();
        for call in history {
            let id = job_id(&call)
                .unwrap_or_else(|| panic!("{}: a Call that is no job: {call:?}", svc.node));
            if call.outcome == Some(Outcome::Ok) {
                ok_runs
                    .entry(id)
                    .or_default()
                    .push(call.attempt.unwrap_or(0));
            }
            acc.calls.entry(id).or_default().push(call);
        }
        let mut ledger = svc.ledger();
        for runs in ledger.values_mut().chain(ok_runs.values_mut()) {
            runs.sort_unstable();
        }
        if ledger != ok_runs {
            let differ: Vec<String> = ledger
                .keys()
                .chain(ok_runs.keys())
                .collect::<HashSet<_>>()
                .into_iter()
                .filter(|id| ledger.get(id) != ok_runs.get(id))
                .take(5)
                .map(|id| {
                    format!(
                        "job {id}: ledger {:?}, ok Calls {:?}",
                        ledger.get(id),
                        ok_runs.get(id)
                    )
                })
                .collect();
            panic!(
                "{}: the ledger of runs and the history's ok Calls differ: {differ:?}",
                svc.node
            );
        }
        acc.counts.push(counts);
    }
    acc
}
