//! Recipe 2: a periodic task runs once per interval anywhere in the cluster.
//!
//! `dispatcher_periodic` holds one row per periodic task: its name and the time of its last
//! run. Every node checks every `check_every` (a few hundred milliseconds) with one statement,
//! [`CLAIM_SQL`]:
//!
//! ```sql
//! UPDATE dispatcher_periodic SET last_run = now(), last_node = $2, runs = runs + 1
//!  WHERE name = $1 AND last_run <= now() - make_interval(secs => $3)
//! RETURNING runs, extract(epoch FROM last_run)::float8 AS at
//! ```
//!
//! The `UPDATE` locks the row. When two nodes check at once, the second waits for the first to
//! commit and then evaluates its `WHERE` again on the row as the first left it (READ COMMITTED
//! re-checks updated rows): `last_run` is now recent, so the second changes nothing and gets no
//! row back. Exactly one node per interval sees a row returned, and only that node submits the
//! body to its local service. Successive runs start at least one interval apart in database
//! time (each `now()` is the start of its own transaction on the one server clock).
//!
//! What this does not do: catch up (after a time with no node running, one run happens, not
//! one per missed interval), or keep runs from overlapping when the body takes longer than the
//! interval (the next run may start elsewhere while it still runs). A winner that dies between
//! its claim and its body's run loses that interval's run; the next interval runs as usual.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::GenericClient;

use super::{Error, Reconnecting, Result};
use dispatcher::{ServiceHandle, Submission, Task, TaskMessage};

/// Creates the row of a periodic task if missing; a new row is due at once (`-infinity`).
pub const REGISTER_SQL: &str =
    "INSERT INTO dispatcher_periodic (name) VALUES ($1) ON CONFLICT (name) DO NOTHING";

/// Claims this interval's run of task `$1` for node `$2` when the last run is at least `$3`
/// seconds old; returns the run number and the claim time (seconds since the epoch).
pub const CLAIM_SQL: &str = "\
UPDATE dispatcher_periodic SET last_run = now(), last_node = $2, runs = runs + 1
 WHERE name = $1 AND last_run <= now() - make_interval(secs => $3)
RETURNING runs, extract(epoch FROM last_run)::float8 AS at";

/// Creates the row of periodic task `name` if it does not exist yet.
pub async fn register<C: GenericClient + Sync>(client: &C, name: &str) -> Result<()> {
    client.execute(REGISTER_SQL, &[&name]).await?;
    Ok(())
}

/// A won claim: this node runs the body for this interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Claim {
    /// The run number (`runs` after the claim; 1 for the first run ever).
    pub run: i64,
    /// The claim time on the database's clock, seconds since the Unix epoch.
    pub at: f64,
}

/// Tries to claim this interval's run of `name` for `node_id` (see [`CLAIM_SQL`]); `None` when
/// the last run is less than `every` ago (another node won, or it is not time yet) or the task
/// has no row.
pub async fn try_claim<C: GenericClient + Sync>(
    client: &C,
    name: &str,
    every: Duration,
    node_id: &str,
) -> Result<Option<Claim>> {
    let row = client
        .query_opt(CLAIM_SQL, &[&name, &node_id, &every.as_secs_f64()])
        .await?;
    match row {
        None => Ok(None),
        Some(row) => Ok(Some(Claim {
            run: row.try_get("runs")?,
            at: row.try_get("at")?,
        })),
    }
}

/// A run this node won, and the Call it submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct Win {
    /// The periodic task's name.
    pub name: String,
    /// This node's id.
    pub node_id: String,
    /// The claim.
    pub claim: Claim,
    /// The uuid of the body's Call on this node's service.
    pub uuid: String,
}

/// The most wins a [`PeriodicHandle`] remembers.
pub const WINS_KEPT: usize = 1000;

#[derive(Debug, Clone)]
struct Periodic {
    name: String,
    every: Duration,
    body: TaskMessage,
}

/// Builds the periodic scheduler of one node; see the module docs.
///
/// ```no_run
/// # use dispatcher::core::task;
/// # #[task(name = "app.report")]
/// # fn report() {}
/// # async fn demo(service: std::sync::Arc<dispatcher::runtime::ServiceHandle>)
/// #     -> dispatcher_examples::cookbook::Result<()> {
/// use std::time::Duration;
/// use dispatcher_examples::cookbook::periodic::PeriodicScheduler;
///
/// let periodic = PeriodicScheduler::new("postgres://postgres@127.0.0.1/postgres", "node-a")
///     .every("app.report", Duration::from_secs(60), report::call())
///     .check_every(Duration::from_millis(500))
///     .start(service)
///     .await?;
/// // ... later
/// periodic.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use]
pub struct PeriodicScheduler {
    database_url: String,
    node_id: String,
    check_every: Duration,
    tasks: Vec<Periodic>,
    errors: Vec<Error>,
}

impl PeriodicScheduler {
    /// A scheduler for node `node_id` (unique in the cluster) on `database_url` (a URL or a
    /// `key=value` string; no TLS), checking every 250 ms.
    pub fn new(database_url: impl Into<String>, node_id: impl Into<String>) -> Self {
        PeriodicScheduler {
            database_url: database_url.into(),
            node_id: node_id.into(),
            check_every: Duration::from_millis(250),
            tasks: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// How often this node checks whether a run is due. A run starts up to this late.
    pub fn check_every(mut self, every: Duration) -> Self {
        self.check_every = every;
        self
    }

    /// Runs `body` once per `every` in the cluster, under `name` (the row's key: every node must
    /// use the same name and interval for the same periodic task).
    pub fn every<T: Task>(
        mut self,
        name: impl Into<String>,
        every: Duration,
        body: Submission<T>,
    ) -> Self {
        let name = name.into();
        match body.into_message("local") {
            Ok(_) if every.is_zero() => self.errors.push(Error::Invalid(format!(
                "periodic task {name:?}: the interval must be above zero"
            ))),
            Ok((_, mut body)) => {
                // Each run is a Call of its own: the service gives each one a fresh uuid.
                body.uuid = None;
                self.tasks.push(Periodic { name, every, body });
            }
            Err(e) => self.errors.push(e.into()),
        }
        self
    }

    /// Creates the tasks' rows and starts checking; the bodies run on `service`. The tables must
    /// exist ([`super::setup`]).
    pub async fn start(self, service: Arc<ServiceHandle>) -> Result<PeriodicHandle> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(e);
        }
        if self.node_id.is_empty() {
            return Err(Error::Invalid("PeriodicScheduler: node_id is empty".into()));
        }
        if self.check_every.is_zero() {
            return Err(Error::Invalid(
                "PeriodicScheduler: check_every must be above zero".into(),
            ));
        }
        let client = super::connect(&self.database_url).await?;
        for t in &self.tasks {
            register(&client, &t.name).await?;
        }
        let wins = Arc::new(Mutex::new(VecDeque::new()));
        let (stop, stop_rx) = watch::channel(false);
        let checker = Checker {
            db: Reconnecting::new(self.database_url, Some(client)),
            node_id: self.node_id,
            check_every: self.check_every,
            tasks: self.tasks,
            service,
            wins: wins.clone(),
        };
        let join = tokio::spawn(checker.run(stop_rx));
        Ok(PeriodicHandle {
            stop,
            join: Mutex::new(Some(join)),
            wins,
        })
    }
}

/// A running periodic scheduler.
#[derive(Debug)]
pub struct PeriodicHandle {
    stop: watch::Sender<bool>,
    join: Mutex<Option<JoinHandle<()>>>,
    wins: Arc<Mutex<VecDeque<Win>>>,
}

impl PeriodicHandle {
    /// The runs this node won (the last [`WINS_KEPT`]), oldest first.
    pub fn wins(&self) -> Vec<Win> {
        self.wins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Stops checking (a check under way finishes first) and waits for it.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let join = self.join.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(j) = join {
            let _ = j.await;
        }
    }
}

impl Drop for PeriodicHandle {
    fn drop(&mut self) {
        if let Some(j) = self.join.lock().unwrap_or_else(|p| p.into_inner()).take() {
            j.abort();
        }
    }
}

struct Checker {
    db: Reconnecting,
    node_id: String,
    check_every: Duration,
    tasks: Vec<Periodic>,
    service: Arc<ServiceHandle>,
    wins: Arc<Mutex<VecDeque<Win>>>,
}

impl Checker {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        tracing::info!(node = %self.node_id, tasks = self.tasks.len(), "periodic scheduler started");
        let mut tick = tokio::time::interval(self.check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick() => {
                    if !self.check().await {
                        break;
                    }
                }
            }
        }
        tracing::info!(node = %self.node_id, "periodic scheduler stopped");
    }

    /// Checks every task once; false when the service has stopped.
    async fn check(&mut self) -> bool {
        for t in &self.tasks {
            let claimed = match self.db.get().await {
                Ok(client) => try_claim(client, &t.name, t.every, &self.node_id).await,
                Err(e) => Err(e),
            };
            let claim = match claimed {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(node = %self.node_id, task = %t.name, error = %e, "periodic check failed");
                    continue;
                }
            };
            match self.service.submit_message(t.body.clone()).await {
                Ok(uuid) => {
                    tracing::info!(node = %self.node_id, task = %t.name, run = claim.run, uuid = %uuid, "won this interval's run");
                    let mut wins = self.wins.lock().unwrap_or_else(|p| p.into_inner());
                    if wins.len() == WINS_KEPT {
                        wins.pop_front();
                    }
                    wins.push_back(Win {
                        name: t.name.clone(),
                        node_id: self.node_id.clone(),
                        claim,
                        uuid,
                    });
                }
                Err(e) => {
                    tracing::error!(node = %self.node_id, task = %t.name, run = claim.run, error = %e, "won the run but the service refused the body; this interval's run is lost");
                    return false;
                }
            }
        }
        true
    }
}
