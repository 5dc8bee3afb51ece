//! The cookbook: two cluster recipes on PostgreSQL, as reusable code for the cookbook binaries
//! (`cookbook-exactly-once`, `cookbook-periodic`) and their tests.
//!
//! * [`exactly_once`]: any one node of the cluster runs a task, and nothing is lost while no
//!   service listens. Submitting inserts a row into `dispatcher_jobs` and NOTIFYs in the same
//!   transaction; every node's [`exactly_once::JobRunner`] claims rows with
//!   `FOR UPDATE SKIP LOCKED` when woken and on a periodic sweep, runs each as a Call on its local
//!   service, and records the outcome. A claim is a lease, renewed while the Call runs, so a job
//!   of a node that died is run by another node once the lease expires.
//! * [`periodic`]: a task runs once per interval anywhere in the cluster. A row per task name in
//!   `dispatcher_periodic` holds the last run time; every node's
//!   [`periodic::PeriodicScheduler`] tries to move it forward every few hundred milliseconds with
//!   one conditional `UPDATE`, and only the node whose `UPDATE` changed the row runs the body.
//!
//! Both recipes claim in the **service process** (the runner and the scheduler are tokio tasks
//! next to the service, each with one database connection of its own) and run the task body as an
//! ordinary Call in the service's pool (worker processes or threads). Task bodies need no
//! database access and no knowledge of the node they run on; the claim and its bookkeeping stay
//! where the node's identity and connection are. `examples/README.md` explains the choices.
//!
//! [`setup`] creates both tables; it is idempotent and safe to run from many nodes at once.

pub mod exactly_once;
pub mod periodic;

use tokio_postgres::{Client, NoTls};

/// The command-line arguments every cookbook node takes.
#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    /// PostgreSQL URL or key=value string.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,
    /// This node's id (unique in the cluster); default `node-<pid>`.
    #[arg(long)]
    pub node_id: Option<String>,
}

impl NodeArgs {
    /// The node id given, or `node-<pid>`.
    pub fn node_id(&self) -> String {
        self.node_id
            .clone()
            .unwrap_or_else(|| format!("node-{}", std::process::id()))
    }
}

/// What went wrong in a cookbook recipe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A database statement or connection failed.
    #[error("database: {}", dispatcher::core::error_chain(.0))]
    Db(#[from] tokio_postgres::Error),
    /// The dispatcher refused something (a stopped service, a bad submission).
    #[error(transparent)]
    Dispatcher(#[from] dispatcher::core::Error),
    /// A setting or an argument was not usable; the text says which and why.
    #[error("{0}")]
    Invalid(String),
}

/// The result of the cookbook's functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The schema of both recipes: the jobs table (recipe 1) and the periodic table (recipe 2).
///
/// `dispatcher_jobs.state` moves `pending` -> `running` (claimed, with a lease) -> `done` or
/// `failed`; a `running` row whose `lease_until` has passed is claimable again.
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS dispatcher_jobs (
    id          bigserial   PRIMARY KEY,
    task        text        NOT NULL,
    args        jsonb       NOT NULL DEFAULT '[]',
    kwargs      jsonb       NOT NULL DEFAULT '{}',
    state       text        NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'running', 'done', 'failed')),
    claimed_by  text,
    attempts    integer     NOT NULL DEFAULT 0,
    lease_until timestamptz,
    outcome     text,
    result      jsonb,
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    claimed_at  timestamptz,
    finished_at timestamptz
);
CREATE INDEX IF NOT EXISTS dispatcher_jobs_open
    ON dispatcher_jobs (id) WHERE state IN ('pending', 'running');

CREATE TABLE IF NOT EXISTS dispatcher_periodic (
    name      text        PRIMARY KEY,
    last_run  timestamptz NOT NULL DEFAULT '-infinity',
    last_node text,
    runs      bigint      NOT NULL DEFAULT 0
);
"#;

/// Creates the cookbook's tables and index when they are missing.
///
/// Runs in one transaction under a transaction-level advisory lock, so nodes starting together
/// do not race on `CREATE TABLE IF NOT EXISTS` (which can fail with a unique violation when two
/// sessions create the same table at once).
pub async fn setup(client: &mut Client) -> Result<()> {
    let tx = client.transaction().await?;
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning; \
         SELECT pg_advisory_xact_lock(hashtext('dispatcher_cookbook_schema'))",
    )
    .await?;
    tx.batch_execute(SCHEMA).await?;
    tx.commit().await?;
    Ok(())
}

/// Connects to `url` (a URL or a `key=value` string, completed from the `PG*` environment
/// variables and the password file as libpq does: see `dispatcher::postgres::conninfo`) without
/// TLS; the connection is driven by a spawned task that ends when the client is dropped or the
/// connection breaks. Its `application_name` is `dispatcher-cookbook` unless the settings have
/// one.
pub async fn connect(url: &str) -> Result<Client> {
    let mut config = dispatcher::postgres::conninfo::config_from_env(url)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    if config.get_application_name().is_none() {
        config.application_name("dispatcher-cookbook");
    }
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        Error::Invalid(format!(
            "cannot connect to {}: {}",
            dispatcher::postgres::redact_connection_string(url),
            dispatcher::core::error_chain(&e)
        ))
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "cookbook: database connection ended");
        }
    });
    Ok(client)
}

/// One database connection that is opened again on first use after it broke.
#[derive(Debug)]
pub(crate) struct Reconnecting {
    url: String,
    client: Option<Client>,
}

impl Reconnecting {
    pub(crate) fn new(url: String, client: Option<Client>) -> Self {
        Reconnecting { url, client }
    }

    /// The connection, opened when there is none or the last one is closed.
    pub(crate) async fn get(&mut self) -> Result<&Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let client = connect(&self.url).await?;
            self.client = Some(client);
        }
        match &self.client {
            Some(c) => Ok(c),
            None => Err(Error::Invalid("no database connection".into())),
        }
    }
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM; the cookbook binaries stop gracefully on either.
pub async fn stop_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Error::Invalid(format!("cannot handle SIGTERM: {e}")))?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(|e| Error::Invalid(format!("cannot handle SIGINT: {e}"))),
        _ = term.recv() => Ok(()),
    }
}
