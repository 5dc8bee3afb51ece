//! No binary ever prints a password. Every connection-string form that carries one (`user:pass@`,
//! `?password=` in any case and percent-encoded, `password='…'` key/value settings, and
//! `PGPASSWORD` in the environment) goes through every error path (an unparsable string, a bad
//! port, a refused connection, a database that does not exist, another scheme) of every binary
//! that takes a connection string; the secret must appear in neither stdout nor stderr.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher_testkit::postgres::PgFixture;
use tokio::process::Command;
use tokio_postgres::config::Host;

use super::dispatcherctl;

/// Every secret below contains this (lowercase match); `%58` is `X` percent-encoded.
const MARKS: [&str; 2] = ["xk9", "%58k9"];

/// The dispatcher-bench binary of this workspace (built here when missing).
fn bench() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let path = dir.join("dispatcher-bench");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "dispatcher-bench"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "could not build dispatcher-bench");
    }
    path
}

/// One way of giving the settings: the connection string and extra environment.
#[derive(Clone, Debug)]
struct Form {
    what: String,
    conn: String,
    env: Vec<(&'static str, String)>,
}

fn form(what: impl Into<String>, conn: String) -> Form {
    Form {
        what: what.into(),
        conn,
        env: Vec::new(),
    }
}

/// Every form, on every error path, for a server at `host:port` (`db`: a database that exists).
fn forms(host: &str, port: u16) -> Vec<Form> {
    let mut out = Vec::new();
    let url_forms = |hostport: &str, db: &str| {
        vec![
            format!("postgres://postgres:ZQ7XK9@{hostport}/{db}"),
            format!("postgres://postgres@{hostport}/{db}?password=ZQ7XK9"),
            format!("postgresql://postgres@{hostport}/{db}?PassWord=ZQ7XK9&sslmode=disable"),
            format!("postgres://postgres@{hostport}/{db}?pass%77ord=ZQ7XK9"),
            format!("postgres://postgres@{hostport}/{db}?password=ZQ7%58K9"),
            format!("postgres://postgres:ZQ7%58K9@{hostport}/{db}"),
        ]
    };
    let kv_forms = |h: &str, p: &str, db: &str| {
        vec![
            format!("host={h} port={p} user=postgres password='ZQ7 XK9 x' dbname={db}"),
            format!("host={h} port={p} user=postgres password = ZQ7XK9 dbname={db}"),
            format!("host={h} port={p} user=postgres PASSWORD='ZQ7\\'XK9' dbname={db}"),
        ]
    };
    // Unparsable.
    out.push(form(
        "unparsable url",
        "postgres://postgres:ZQ7XK9@[::1/db".into(),
    ));
    out.push(form(
        "unparsable url query",
        format!("postgres://postgres@{host}:{port}/db?password=ZQ7XK9&connect_timeout=soon"),
    ));
    out.push(form(
        "unterminated quote",
        format!("host={host} port={port} password='ZQ7XK9 dbname=db"),
    ));
    out.push(form(
        "another scheme",
        "mysql://root:ZQ7XK9@127.0.0.1/db".into(),
    ));
    // A bad port.
    for c in url_forms("127.0.0.1:notaport", "db") {
        out.push(form("bad port", c));
    }
    for c in kv_forms("127.0.0.1", "notaport", "db") {
        out.push(form("bad port", c));
    }
    // A refused connection (nothing listens on port 1).
    for c in url_forms("127.0.0.1:1", "db") {
        out.push(form("refused", c));
    }
    for c in kv_forms("127.0.0.1", "1", "db") {
        out.push(form("refused", c));
    }
    // A database that does not exist, on the real server.
    let hp = format!("{host}:{port}");
    for c in url_forms(&hp, "no_such_database_for_redaction") {
        out.push(form("no such database", c));
    }
    for c in kv_forms(host, &port.to_string(), "no_such_database_for_redaction") {
        out.push(form("no such database", c));
    }
    // PGPASSWORD in the environment.
    for (what, c) in [
        (
            "PGPASSWORD, refused",
            "postgres://postgres@127.0.0.1:1/db".to_owned(),
        ),
        (
            "PGPASSWORD, no such database",
            format!("postgres://postgres@{hp}/no_such_database_for_redaction"),
        ),
        (
            "PGPASSWORD, bad port",
            "postgres://postgres@127.0.0.1:notaport/db".to_owned(),
        ),
        ("PGPASSWORD, empty string", String::new()),
    ] {
        let mut f = form(what, c);
        f.env.push(("PGPASSWORD", "ZQ7XK9".into()));
        if f.conn.is_empty() {
            f.env.push(("PGHOST", "127.0.0.1".into()));
            f.env.push(("PGPORT", "1".into()));
        }
        out.push(f);
    }
    out
}

/// One binary invocation: program and arguments, `{}` standing for the connection string, and
/// whether the string goes through `DATABASE_URL` instead.
struct Run {
    name: &'static str,
    program: PathBuf,
    args: Vec<&'static str>,
    via_env: bool,
}

/// Where the connection string goes: `{}` in the arguments, `DATABASE_URL`, or a configuration
/// file whose path replaces `{file}` (`[broker] url = "…"`, written as is: a string that is not
/// valid TOML there takes the path that quotes the file's lines).
fn config_file(scratch: &Path, conn: &str) -> PathBuf {
    let path = scratch.join(format!("{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, format!("[broker]\nurl = \"{conn}\"\n")).unwrap();
    path
}

fn runs() -> Vec<Run> {
    let demo = PathBuf::from(env!("CARGO_BIN_EXE_dispatcher-demo"));
    let once = PathBuf::from(env!("CARGO_BIN_EXE_cookbook-exactly-once"));
    let periodic = PathBuf::from(env!("CARGO_BIN_EXE_cookbook-periodic"));
    let ctl = dispatcherctl();
    let run = |name, program: &Path, args: &[&'static str], via_env| Run {
        name,
        program: program.to_path_buf(),
        args: args.to_vec(),
        via_env,
    };
    vec![
        run("dispatcher-demo (quickstart)", &demo, &[], true),
        run(
            "dispatcher-demo serve",
            &demo,
            &["serve", "--database-url", "{}"],
            false,
        ),
        run(
            "dispatcher-demo serve (DATABASE_URL)",
            &demo,
            &["serve"],
            true,
        ),
        run(
            "dispatcher-demo serve --config",
            &demo,
            &["serve", "--config", "{file}"],
            false,
        ),
        run(
            "dispatcher-demo enqueue",
            &demo,
            &["enqueue", "--database-url", "{}", "demo.echo"],
            false,
        ),
        run(
            "dispatcherctl status",
            &ctl,
            &["--database-url", "{}", "status"],
            false,
        ),
        run("dispatcherctl alive (DATABASE_URL)", &ctl, &["alive"], true),
        run(
            "dispatcherctl jobs",
            &ctl,
            &["--database-url", "{}", "jobs"],
            false,
        ),
        run(
            "dispatcherctl migrate",
            &ctl,
            &["--database-url", "{}", "migrate"],
            false,
        ),
        run(
            "cookbook-exactly-once",
            &once,
            &["--database-url", "{}", "--node-id", "redact"],
            false,
        ),
        run(
            "cookbook-exactly-once --submit",
            &once,
            &["--database-url", "{}", "--submit", "1"],
            false,
        ),
        run(
            "cookbook-periodic",
            &periodic,
            &["--database-url", "{}", "--node-id", "redact"],
            false,
        ),
        run(
            "dispatcher-bench pg",
            &bench(),
            &[
                "pg",
                "--tasks",
                "10",
                "--raw",
                "none",
                "--database-url",
                "{}",
            ],
            false,
        ),
    ]
}

/// Runs one invocation for at most 30 s; returns whether it failed (exited non-zero) and all
/// it printed.
async fn run_once(run: &Run, form: &Form, scratch: &Path) -> (bool, String) {
    let file = scratch.join(uuid::Uuid::new_v4().simple().to_string());
    let out = std::fs::File::create(&file).unwrap();
    let err = out.try_clone().unwrap();
    let mut cmd = Command::new(&run.program);
    let mut config = None;
    for a in &run.args {
        match *a {
            "{}" => cmd.arg(&form.conn),
            "{file}" => cmd.arg(config.insert(config_file(scratch, &form.conn))),
            a => cmd.arg(a),
        };
    }
    cmd.env_remove("DATABASE_URL")
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        // A private home: no ~/.pgpass of the machine's.
        .env("HOME", scratch);
    for v in dispatcher::postgres::conninfo::VARIABLES {
        cmd.env_remove(v);
    }
    if run.via_env {
        cmd.env("DATABASE_URL", &form.conn);
    }
    for (k, v) in &form.env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let failed = match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(status) => !status.unwrap().success(),
        Err(_) => {
            let _ = child.kill().await;
            false
        }
    };
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    if let Some(config) = config {
        let _ = std::fs::remove_file(config);
    }
    (failed, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_binary_prints_a_password_on_any_error_path() {
    let fx = PgFixture::new().await.unwrap();
    let c = fx.config();
    let host = match &c.get_hosts()[0] {
        Host::Tcp(h) => h.clone(),
        Host::Unix(_) => "127.0.0.1".to_owned(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let scratch = std::env::temp_dir().join(format!("redaction-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&scratch).unwrap();
    let scratch = Arc::new(scratch);
    let forms = forms(&host, port);
    let runs = Arc::new(runs());
    let started = Instant::now();
    let limit = Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..runs.len() {
        for f in &forms {
            let (runs, f, scratch, limit) =
                (runs.clone(), f.clone(), scratch.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire().await.unwrap();
                let run = &runs[r];
                let (failed, text) = run_once(run, &f, &scratch).await;
                (run.name, f, failed, text)
            });
        }
    }
    let mut leaks = Vec::new();
    let mut failures = 0;
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        let (name, f, failed, text) = done.unwrap();
        total += 1;
        failures += usize::from(failed);
        let lower = text.to_lowercase();
        if MARKS.iter().any(|m| lower.contains(m)) {
            leaks.push(format!(
                "{name} with {} ({:?}, env {:?}):\n{text}",
                f.what,
                f.conn,
                f.env.iter().map(|(k, _)| k).collect::<Vec<_>>()
            ));
        }
    }
    std::fs::remove_dir_all(&*scratch).unwrap();
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n-----\n")
    );
    // The runs did reach their error paths: nearly every one fails (the demo quickstart falls
    // back to nothing; every form here is broken one way or another).
    assert!(
        failures * 10 >= total * 9,
        "only {failures} of {total} runs failed (in {:?})",
        started.elapsed()
    );
}
