//! A PostgreSQL fixture: a fresh database per fixture, on whatever server can be had.
//!
//! Where the server comes from, in order:
//!
//! 1. `DATABASE_URL`, when set (a URL or a `key=value` string; the fixture needs the right to
//!    `CREATE DATABASE` there);
//! 2. a server on `127.0.0.1:5432` as user `postgres` (trust auth, as CI machines have);
//! 3. a throwaway server started from locally installed PostgreSQL binaries (`initdb`, `pg_ctl`,
//!    found with `pg_config --bindir` or under `/usr/lib/postgresql/*/bin`), run as the
//!    `postgres` or `nobody` user when the tests run as root; it is stopped when the last fixture
//!    of the process is dropped;
//! 4. with the `testcontainers` feature, a `postgres` container when a Docker engine answers.
//!
//! Tests that restart PostgreSQL use [`PgFixture::throwaway`] and its
//! [`PgFixture::stop_server`] / [`PgFixture::start_server`]: only a throwaway server is ever
//! stopped.
//!
//! If none can be had, [`PgFixture::new`] fails with a message saying how to provide one; tests
//! never skip silently. Each fixture creates `dispatcher_test_<uuid>` and drops it (with
//! `FORCE`) when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use tokio_postgres::{Config, NoTls};

use crate::error::TestkitError;

/// A fresh database on a reachable server.
#[derive(Debug)]
pub struct PgFixture {
    admin: Config,
    config: Config,
    database: String,
    throwaway: bool,
}

const HOW_TO: &str = "no PostgreSQL server for the tests: set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres), \
or run a server on 127.0.0.1:5432 with user postgres and trust auth, or install the PostgreSQL server binaries \
(initdb, pg_ctl) so the tests can start a throwaway server, or enable the `testcontainers` feature with a Docker engine running";

async fn reachable(config: &Config) -> Result<(), String> {
    let mut c = config.clone();
    c.connect_timeout(Duration::from_secs(3));
    match c.connect(NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            client
                .simple_query("SELECT 1")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Renders a config as a `key=value` connection string.
pub fn config_to_string(c: &Config) -> String {
    let mut parts = Vec::new();
    for h in c.get_hosts() {
        match h {
            tokio_postgres::config::Host::Tcp(h) => parts.push(format!("host={h}")),
            tokio_postgres::config::Host::Unix(p) => parts.push(format!("host={}", p.display())),
        }
    }
    if let Some(p) = c.get_ports().first() {
        parts.push(format!("port={p}"));
    }
    if let Some(u) = c.get_user() {
        parts.push(format!("user={u}"));
    }
    if let Some(pw) = c.get_password() {
        parts.push(format!(
            "password='{}'",
            String::from_utf8_lossy(pw)
                .replace('\\', "\\\\")
                .replace('\'', "\\'")
        ));
    }
    if let Some(d) = c.get_dbname() {
        parts.push(format!("dbname={d}"));
    }
    parts.join(" ")
}

impl PgFixture {
    /// Finds a server (see the module docs) and creates a fresh database on it.
    pub async fn new() -> Result<PgFixture, TestkitError> {
        let (admin, throwaway) = find_server().await?;
        let fixture = PgFixture::on_server(admin, throwaway).await;
        if fixture.is_err() && throwaway {
            release_server();
        }
        fixture
    }

    /// Like [`PgFixture::new`] but always on a throwaway server started from the local
    /// PostgreSQL binaries (step 3), whatever else is available.
    pub async fn throwaway() -> Result<PgFixture, TestkitError> {
        let admin = tokio::task::spawn_blocking(acquire_server)
            .await
            .map_err(|e| TestkitError::Postgres(e.to_string()))?
            .map_err(|e| TestkitError::Postgres(format!("{HOW_TO}; throwaway server: {e}")))?;
        let fixture = PgFixture::on_server(admin, true).await;
        if fixture.is_err() {
            release_server();
        }
        fixture
    }

    async fn on_server(admin: Config, throwaway: bool) -> Result<PgFixture, TestkitError> {
        let database = format!("dispatcher_test_{}", uuid::Uuid::new_v4().simple());
        let (client, conn) = admin
            .connect(NoTls)
            .await
            .map_err(|e| TestkitError::Postgres(format!("{HOW_TO} (connect failed: {e})")))?;
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE \"{database}\""))
            .await
            .map_err(|e| {
                TestkitError::Postgres(format!("could not create database {database}: {e}"))
            })?;
        let mut config = admin.clone();
        config.dbname(&database);
        Ok(PgFixture {
            admin,
            config,
            database,
            throwaway,
        })
    }

    /// Connection settings of the fresh database.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The fresh database as a `key=value` connection string.
    pub fn url(&self) -> String {
        config_to_string(&self.config)
    }

    /// The database's name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Stops the throwaway server this fixture is on (`pg_ctl stop -m fast`: sessions are
    /// terminated, the server shuts down cleanly), for tests of what a server restart does to
    /// clients; [`PgFixture::start_server`] starts it again with the same data and port. Every
    /// fixture on that server sees the outage. Blocks until the server is down. Refused for a
    /// fixture that is not on a throwaway server: a shared server is never stopped.
    pub fn stop_server(&self) -> Result<(), TestkitError> {
        self.with_throwaway(|s| {
            let data = s.dir.join("data").display().to_string();
            run(
                &s.bindir.join("pg_ctl"),
                &["-D", &data, "-m", "fast", "-w", "stop"],
                s.run_as.as_deref(),
            )
        })
    }

    /// Starts the throwaway server again after [`PgFixture::stop_server`]; blocks until it
    /// accepts connections.
    pub fn start_server(&self) -> Result<(), TestkitError> {
        self.with_throwaway(pg_ctl_start)
    }

    fn with_throwaway(
        &self,
        f: impl FnOnce(&TempServer) -> Result<(), String>,
    ) -> Result<(), TestkitError> {
        let guard = SERVER.lock().unwrap_or_else(|p| p.into_inner());
        match (self.throwaway, guard.as_ref()) {
            (true, Some(s)) => f(s).map_err(TestkitError::Postgres),
            _ => Err(TestkitError::Postgres(
                "only a fixture on a throwaway server (PgFixture::throwaway) may stop or start its server".into(),
            )),
        }
    }

    /// A client connected to the fresh database (its connection is driven by a spawned task).
    pub async fn client(&self) -> Result<tokio_postgres::Client, TestkitError> {
        let (client, conn) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| TestkitError::Postgres(e.to_string()))?;
        tokio::spawn(conn);
        Ok(client)
    }
}

impl Drop for PgFixture {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let db = self.database.clone();
        // Drop may run inside a runtime: use a thread of its own.
        let t = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok((client, conn)) = admin.connect(NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                        .await;
                }
            });
        });
        let _ = t.join();
        if self.throwaway {
            release_server();
        }
    }
}

async fn find_server() -> Result<(Config, bool), TestkitError> {
    let mut tried = Vec::new();
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let c: Config = url.parse().map_err(|e| {
            TestkitError::Postgres(format!(
                "DATABASE_URL is not a valid connection string: {e}"
            ))
        })?;
        return match reachable(&c).await {
            Ok(()) => Ok((c, false)),
            Err(e) => Err(TestkitError::Postgres(format!(
                "DATABASE_URL is set but its server does not answer: {e}"
            ))),
        };
    }
    let local: Config = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
        .parse()
        .map_err(|e| TestkitError::Postgres(format!("{e}")))?;
    match reachable(&local).await {
        Ok(()) => return Ok((local, false)),
        Err(e) => tried.push(format!("127.0.0.1:5432: {e}")),
    }
    match tokio::task::spawn_blocking(acquire_server).await {
        Ok(Ok(c)) => return Ok((c, true)),
        Ok(Err(e)) => tried.push(format!("throwaway server: {e}")),
        Err(e) => tried.push(format!("throwaway server: {e}")),
    }
    #[cfg(feature = "testcontainers")]
    match container::start().await {
        Ok(c) => return Ok((c, false)),
        Err(e) => tried.push(format!("testcontainers: {e}")),
    }
    Err(TestkitError::Postgres(format!(
        "{HOW_TO}; tried: {}",
        tried.join("; ")
    )))
}

// ----- throwaway server from local binaries -----

#[derive(Debug)]
struct TempServer {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    run_as: Option<String>,
    users: usize,
}

static SERVER: Mutex<Option<TempServer>> = Mutex::new(None);

fn find_bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn run(cmd: &Path, args: &[&str], run_as: Option<&str>) -> Result<(), String> {
    let out = match run_as {
        Some(user) => Command::new("runuser")
            .args(["-u", user, "--"])
            .arg(cmd)
            .args(args)
            .output(),
        None => Command::new(cmd).args(args).output(),
    }
    .map_err(|e| format!("{}: {e}", cmd.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            cmd.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn acquire_server() -> Result<Config, String> {
    let mut guard = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = guard.as_mut() {
        s.users += 1;
        return server_config(s);
    }
    let bindir =
        find_bindir().ok_or("no initdb found (pg_config --bindir, /usr/lib/postgresql/*/bin)")?;
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let run_as = if is_root {
        let has_postgres = Command::new("id")
            .arg("postgres")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        Some(if has_postgres { "postgres" } else { "nobody" }.to_owned())
    } else {
        None
    };
    let dir = std::env::temp_dir().join(format!("dispatcher-pg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    if let Some(user) = &run_as {
        run(
            Path::new("chown"),
            &[user, &dir.display().to_string()],
            None,
        )?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())?;
    let data = dir.join("data");
    let data_s = data.display().to_string();
    run(
        &bindir.join("initdb"),
        &["-D", &data_s, "-U", "postgres", "-A", "trust"],
        run_as.as_deref(),
    )?;
    let s = TempServer {
        dir,
        bindir,
        port,
        run_as,
        users: 1,
    };
    pg_ctl_start(&s)?;
    let c = server_config(&s);
    *guard = Some(s);
    c
}

/// `pg_ctl start` of a throwaway server (its data directory, port and socket directory).
fn pg_ctl_start(s: &TempServer) -> Result<(), String> {
    let opts = format!(
        "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
        s.port,
        s.dir.display()
    );
    let data = s.dir.join("data").display().to_string();
    let log = s.dir.join("log").display().to_string();
    run(
        &s.bindir.join("pg_ctl"),
        &["-D", &data, "-o", &opts, "-l", &log, "-w", "start"],
        s.run_as.as_deref(),
    )
}

fn server_config(s: &TempServer) -> Result<Config, String> {
    format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        s.port
    )
    .parse()
    .map_err(|e: tokio_postgres::Error| e.to_string())
}

fn release_server() {
    let mut guard = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    let last = match guard.as_mut() {
        Some(s) => {
            s.users -= 1;
            s.users == 0
        }
        None => false,
    };
    if last {
        if let Some(s) = guard.take() {
            let data = s.dir.join("data").display().to_string();
            let _ = run(
                &s.bindir.join("pg_ctl"),
                &["-D", &data, "-m", "immediate", "stop"],
                s.run_as.as_deref(),
            );
            let _ = std::fs::remove_dir_all(&s.dir);
        }
    }
}

#[cfg(feature = "testcontainers")]
mod container {
    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    use tokio_postgres::Config;

    pub(super) async fn start() -> Result<Config, String> {
        let node = Postgres::default()
            .start()
            .await
            .map_err(|e| e.to_string())?;
        let port = node
            .get_host_port_ipv4(5432)
            .await
            .map_err(|e| e.to_string())?;
        // The container lives as long as the test process.
        std::mem::forget(node);
        format!("host=127.0.0.1 port={port} user=postgres password=postgres dbname=postgres")
            .parse()
            .map_err(|e: tokio_postgres::Error| e.to_string())
    }
}

/// A process stopped with SIGSTOP, as a frozen PostgreSQL server looks to its clients: the
/// socket stays open and nothing answers. Freeze a backend (`SELECT pg_backend_pid()` on the
/// connection under test) to test deadlines and dead-connection detection; it gets SIGCONT when
/// the guard is dropped, so a failing test never leaves it stopped.
///
/// ```no_run
/// # async fn demo(client: &tokio_postgres::Client) -> Result<(), Box<dyn std::error::Error>> {
/// let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
/// let frozen = dispatcher_testkit::postgres::Frozen::freeze(pid)?;
/// // ... a call on that connection must now give up after its deadline ...
/// drop(frozen); // the backend goes on
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Frozen(i32);

impl Frozen {
    /// Stops process `pid` (SIGSTOP). Fails for a pid that is not positive, or when the signal
    /// cannot be sent (no such process, another user's).
    pub fn freeze(pid: i32) -> Result<Frozen, TestkitError> {
        if pid <= 0 {
            return Err(TestkitError::Postgres(format!(
                "cannot freeze pid {pid}: not a process id"
            )));
        }
        signal(pid, nix::sys::signal::Signal::SIGSTOP)
            .map_err(|e| TestkitError::Postgres(format!("cannot freeze process {pid}: {e}")))?;
        Ok(Frozen(pid))
    }

    /// The frozen process's id.
    pub fn pid(&self) -> i32 {
        self.0
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = signal(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) -> nix::Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
}
