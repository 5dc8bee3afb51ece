//! The durable queue: jobs kept in a PostgreSQL table until they have run ([`PgQueue`]).
//!
//! Where the NOTIFY broker ([`crate::PgBroker`]) delivers each message at most once, the queue
//! delivers every job whose enqueue returned success **at least once**: it survives a listener
//! that reconnects, a frozen server or backend, a PostgreSQL restart and a service that is
//! SIGKILLed. A job runs exactly once unless its service loses its lease while running it (it
//! was killed, frozen or partitioned for longer than the lease); then another service runs it
//! again, as its next attempt.
//!
//! * **Schema** ([`PgQueue::migrate`], `dispatcherctl migrate`, or
//!   [`PgQueueConfig::migrate_on_start`]): versioned migrations embedded in the binary, applied
//!   under an advisory lock, in a schema of its own (default `dispatcher`).
//! * **Publish**: [`Publisher`](dispatcher_core::Publisher) works unchanged (the channel is the
//!   queue); a batch is one `INSERT` of rows that each carry up to
//!   [`PgQueueConfig::batch_rows`] messages of one task, and one NOTIFY per queue as a wake-up.
//!   [`PgQueue::enqueue`] adds priority, `run_at` and a unique key; [`enqueue_in`] enqueues in
//!   the caller's own transaction; SQL clients call `dispatcher.enqueue(queue, message)`.
//! * **Claim**: `FOR UPDATE SKIP LOCKED`, sized by the service's free capacity, woken by the
//!   NOTIFY with a poll fallback ([`PgQueueConfig::poll_interval`]) and a timer for the next
//!   future `run_at`.
//! * **Settle**: every Call's end is written back in batches (one statement per few ms): done
//!   jobs are deleted, failed ones retried with the task's backoff or kept as `failed`.
//! * **Leases**: a service's claims are covered by one owner row whose lease
//!   ([`PgQueueConfig::lease`], 30 s) is renewed in one statement; claims of an owner whose
//!   lease expired are taken over by any service within about lease + poll interval.
//!
//! ```no_run
//! use std::sync::Arc;
//! use dispatcher_broker_pg::queue::{Job, PgQueue, PgQueueConfig};
//! use dispatcher_core::TaskMessage;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = PgQueueConfig::from_url("postgres://postgres@127.0.0.1/postgres")?;
//! config.migrate_on_start = true;
//! let queue = Arc::new(PgQueue::connect(config).await?);
//! let job = Job::new("default", &TaskMessage::new("demo.add"))?.priority(5);
//! let enqueued = queue.enqueue(job).await?;
//! println!("job {}", enqueued.id);
//! # Ok(()) }
//! ```

mod consumer;
mod ops;
mod publish;
pub(crate) mod schema;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dispatcher_core::broker::{validate_channel, Broker, BrokerError, BrokerStatus, Subscription};
use dispatcher_core::delivery::ConsumerInfo;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::{open, PgBroker, PgBrokerConfig};

pub use ops::{FailedJob, KeptJobs, QueueCounts, QueueStats, ScheduledJob};
pub use publish::{enqueue_in, Enqueued, Job};
pub use schema::{Migrated, SCHEMA_VERSION};

/// Settings of a [`PgQueue`]. Build with [`PgQueueConfig::from_url`] or [`PgQueueConfig::new`]
/// and change the fields you need.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgQueueConfig {
    /// Connection settings (shared with the NOTIFY broker: keepalives, timeouts, TLS).
    pub pg: PgBrokerConfig,
    /// The schema holding the queue's tables and functions. Default `dispatcher`.
    pub schema: String,
    /// Apply missing migrations when connecting. Default false: a schema that is missing or
    /// too old is an error naming how to migrate.
    pub migrate_on_start: bool,
    /// How long a service's claims stay its own without a renewal. Default 30 s; renewed every
    /// third of it.
    pub lease: Duration,
    /// How often a consumer looks for jobs without a wake-up (a lost NOTIFY delays a job by at
    /// most this) and for claims of expired leases. Default 1 s.
    pub poll_interval: Duration,
    /// Most messages a consumer holds beyond its workers. Default 1,000.
    pub max_prefetch: usize,
    /// A consumer claims what it completes in this long at its current rate (at least one per
    /// worker, at most `max_prefetch` more): no job is claimed that the service cannot start
    /// soon. Default 50 ms.
    pub prefetch_horizon: Duration,
    /// Most messages per job row when publishing a batch. Default 1,000.
    pub batch_rows: usize,
    /// How long `failed` and `canceled` jobs are kept. Default 7 days.
    pub failed_retention: Duration,
    /// How long a statement may take before its connection is given up and replaced (a frozen
    /// server or backend). Default 10 s.
    pub statement_timeout: Duration,
    /// How long settlements are gathered before they are written. Default 2 ms.
    pub settle_delay: Duration,
    /// How often the queue's depth is sampled for metrics. Default 10 s.
    pub stats_interval: Duration,
    /// Shown in the owners table (`dispatcher.running` view). Default `hostname-pid`.
    pub node: String,
}

impl PgQueueConfig {
    /// Settings for the database at `url` (a libpq-style URL or key=value string), with the
    /// defaults above.
    pub fn from_url(url: &str) -> Result<Self> {
        Ok(PgQueueConfig::new(PgBrokerConfig::from_url(url)?))
    }

    /// Settings over existing connection settings.
    pub fn new(pg: PgBrokerConfig) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        PgQueueConfig {
            pg,
            schema: "dispatcher".into(),
            migrate_on_start: false,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            max_prefetch: 1_000,
            prefetch_horizon: Duration::from_millis(50),
            batch_rows: 1_000,
            failed_retention: Duration::from_secs(7 * 24 * 3600),
            statement_timeout: Duration::from_secs(10),
            settle_delay: Duration::from_millis(2),
            stats_interval: Duration::from_secs(10),
            node: format!("{host}-{}", std::process::id()),
        }
    }

    /// The same settings in another schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }
}

/// The durable queue broker. See the [module documentation](self).
///
/// As a [`Broker`], a channel is a queue: publishing enqueues, subscribing consumes (each job
/// goes to one consumer, not to every subscriber), and every payload it hands out carries a
/// [`Delivery`](dispatcher_core::Delivery) the service settles. Give it to a service next to a
/// NOTIFY broker, which keeps carrying control commands.
#[derive(Debug)]
pub struct PgQueue {
    config: PgQueueConfig,
    publish: publish::Publish,
    /// The wake-up listener, opened by the first subscribe: a queue that only publishes holds
    /// no LISTEN connection (PostgreSQL wakes every listening backend of the database at each
    /// NOTIFY).
    wake: tokio::sync::OnceCell<PgBroker>,
    consumer: Arc<consumer::Shared>,
}

impl PgQueue {
    /// Connects (applying migrations first when `migrate_on_start` is set) and checks that the
    /// schema is at the version this build needs.
    pub async fn connect(config: PgQueueConfig) -> Result<Self> {
        schema::check_schema(&config.schema)?;
        let mut client = connect(&config.pg, "queue setup").await?;
        if config.migrate_on_start {
            schema::migrate(&mut client, &config.schema).await?;
        }
        let found = schema::version(&client, &config.schema).await?;
        if found < SCHEMA_VERSION {
            return Err(Error::NotMigrated {
                schema: config.schema.clone(),
                found,
                needed: SCHEMA_VERSION,
            });
        }
        if found > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                schema: config.schema.clone(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        Ok(PgQueue {
            publish: publish::Publish::new(config.clone()),
            consumer: consumer::Shared::new(config.clone()),
            wake: tokio::sync::OnceCell::new(),
            config,
        })
    }

    /// The wake-up listener, opened on first use.
    async fn wake(&self) -> Result<&PgBroker> {
        self.wake
            .get_or_try_init(|| PgBroker::with_config(self.config.pg.clone()))
            .await
    }

    /// Connects to `url` with the default settings.
    pub async fn connect_url(url: &str) -> Result<Self> {
        PgQueue::connect(PgQueueConfig::from_url(url)?).await
    }

    /// The settings.
    pub fn config(&self) -> &PgQueueConfig {
        &self.config
    }

    /// Applies missing migrations to the configured schema (see [`migrate`]).
    pub async fn migrate(&self) -> Result<Migrated> {
        let mut client = connect(&self.config.pg, "migrate").await?;
        schema::migrate(&mut client, &self.config.schema).await
    }

    /// Enqueues one job; returns its id, or the id of the live job with the same unique key.
    pub async fn enqueue(&self, job: Job) -> Result<Enqueued> {
        let mut done = self.publish.enqueue(vec![job]).await?;
        done.pop()
            .ok_or_else(|| Error::Job("the database returned no row for the job".into()))
    }

    /// Enqueues several jobs in one statement (jobs of one task without a unique key share
    /// rows of up to `batch_rows`); one [`Enqueued`] per row written, in order.
    pub async fn enqueue_many(&self, jobs: Vec<Job>) -> Result<Vec<Enqueued>> {
        self.publish.enqueue(jobs).await
    }

    /// Counts by queue and state, and the age of the oldest available job per queue.
    pub async fn stats(&self) -> Result<QueueStats> {
        let client = connect(&self.config.pg, "queue stats").await?;
        ops::stats(&client, &self.config.schema).await
    }

    /// Failed and canceled jobs, newest first, with every attempt's error.
    pub async fn failed(&self, queue: Option<&str>, limit: i64) -> Result<Vec<FailedJob>> {
        let client = connect(&self.config.pg, "queue failed").await?;
        ops::failed(&client, &self.config.schema, queue, limit).await
    }

    /// Available jobs whose `run_at` is ahead (delayed, or waiting for a retry's backoff),
    /// soonest first, at most `limit`; of `queue` only, when given. Due jobs are not listed.
    pub async fn scheduled(&self, queue: Option<&str>, limit: i64) -> Result<Vec<ScheduledJob>> {
        let client = connect(&self.config.pg, "queue scheduled").await?;
        ops::scheduled(&client, &self.config.schema, queue, limit).await
    }

    /// Makes failed or canceled jobs available again now (their attempts start over); returns
    /// how many. Ids of jobs in another state are ignored.
    pub async fn retry(&self, ids: &[i64]) -> Result<u64> {
        let client = connect(&self.config.pg, "queue retry").await?;
        ops::retry(&client, &self.config.schema, ids).await
    }

    /// Deletes failed or canceled jobs; returns how many.
    pub async fn discard(&self, ids: &[i64]) -> Result<u64> {
        let client = connect(&self.config.pg, "queue discard").await?;
        ops::discard(&client, &self.config.schema, ids).await
    }

    /// Deletes failed and canceled jobs older than the retention, in batches; returns how many.
    pub async fn prune(&self) -> Result<u64> {
        let client = connect(&self.config.pg, "queue prune").await?;
        ops::prune(&client, &self.config.schema, self.config.failed_retention).await
    }

    /// Messages handed out by this queue's consumers and not settled yet.
    pub fn in_flight(&self) -> usize {
        self.consumer.in_flight()
    }
}

impl Drop for PgQueue {
    /// Stops its claim loops and writes what is settled; jobs handed out and not settled run
    /// again after the lease.
    fn drop(&mut self) {
        self.consumer.close();
    }
}

/// Applies missing queue migrations to `schema` with `client` (see [`PgQueue::migrate`]): what
/// `dispatcherctl migrate` runs.
pub async fn migrate(client: &mut Client, schema: &str) -> Result<Migrated> {
    schema::migrate(client, schema).await
}

/// Checks a queue schema name: lowercase letters, digits and `_`, starting with a letter or
/// `_`, at most 50 bytes ([`Error::Schema`] otherwise).
pub fn check_schema_name(name: &str) -> Result<()> {
    schema::check_schema(name)
}

/// Opens one connection with `config`'s settings (keepalives, timeouts, TLS), driven by a task
/// of its own, for the functions below: operating the queue without a [`PgQueue`].
pub async fn open_client(config: &PgBrokerConfig) -> Result<Client> {
    connect(config, "queue operations").await
}

/// Checks that `schema` is at [`SCHEMA_VERSION`]: [`Error::NotMigrated`] when it is missing
/// (version 0) or older, [`Error::SchemaTooNew`] when it is newer. Returns the version.
pub async fn check_version(client: &Client, schema: &str) -> Result<i32> {
    let found = schema::version(client, schema).await?;
    if found < SCHEMA_VERSION {
        return Err(Error::NotMigrated {
            schema: schema.to_owned(),
            found,
            needed: SCHEMA_VERSION,
        });
    }
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            schema: schema.to_owned(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    Ok(found)
}

/// [`PgQueue::stats`] with `client`, for the queue in `schema`.
pub async fn stats(client: &Client, schema: &str) -> Result<QueueStats> {
    schema::check_schema(schema)?;
    ops::stats(client, schema).await
}

/// [`PgQueue::failed`] with `client`, for the queue in `schema`.
pub async fn failed(
    client: &Client,
    schema: &str,
    queue: Option<&str>,
    limit: i64,
) -> Result<Vec<FailedJob>> {
    schema::check_schema(schema)?;
    ops::failed(client, schema, queue, limit).await
}

/// [`PgQueue::scheduled`] with `client`, for the queue in `schema`.
pub async fn scheduled(
    client: &Client,
    schema: &str,
    queue: Option<&str>,
    limit: i64,
) -> Result<Vec<ScheduledJob>> {
    schema::check_schema(schema)?;
    ops::scheduled(client, schema, queue, limit).await
}

/// Makes the kept jobs `which` selects available again now (their attempts start over, and
/// consumers are woken); returns their ids, ascending.
pub async fn retry_jobs(client: &Client, schema: &str, which: KeptJobs<'_>) -> Result<Vec<i64>> {
    schema::check_schema(schema)?;
    ops::retry_kept(client, schema, which).await
}

/// Deletes the kept jobs `which` selects; returns their ids, ascending.
pub async fn discard_jobs(client: &Client, schema: &str, which: KeptJobs<'_>) -> Result<Vec<i64>> {
    schema::check_schema(schema)?;
    ops::discard_kept(client, schema, which).await
}

#[async_trait]
impl Broker for PgQueue {
    async fn publish(&self, channel: &str, payload: &str) -> std::result::Result<(), BrokerError> {
        validate_channel(channel)?;
        let job = Job::from_payload(channel, payload)?;
        self.publish.enqueue(vec![job]).await?;
        Ok(())
    }

    async fn publish_batch(
        &self,
        messages: &[(String, String)],
    ) -> std::result::Result<(), BrokerError> {
        let mut jobs = Vec::with_capacity(messages.len());
        for (channel, payload) in messages {
            validate_channel(channel)?;
            jobs.push(Job::from_payload(channel, payload)?);
        }
        self.publish.enqueue(jobs).await?;
        Ok(())
    }

    async fn subscribe(
        &self,
        channels: &[String],
    ) -> std::result::Result<Subscription, BrokerError> {
        for c in channels {
            validate_channel(c)?;
        }
        let wake = self
            .wake()
            .await?
            .subscribe(&[schema::wake_channel(&self.config.schema)])
            .await?;
        Ok(consumer::start(self.consumer.clone(), channels.to_vec(), wake).await?)
    }

    fn consumer(&self, info: &ConsumerInfo) {
        self.consumer.set_info(info);
    }

    fn status(&self) -> BrokerStatus {
        let mut s = BrokerStatus::new("pg_queue");
        s.details = self.consumer.details();
        if let Some(wake) = self.wake.get().map(PgBroker::status) {
            s.connected = wake.connected;
            s.recycles = wake.recycles;
            s.last_recycle_reason = wake.last_recycle_reason;
            s.self_check = wake.self_check;
            if let Some(pid) = wake.details.get("listener_pid") {
                // The wake-up listener's backend, as the NOTIFY broker reports its own.
                s.details.insert("listener_pid".into(), pid.clone());
            }
        }
        s.details
            .insert("schema".into(), self.config.schema.clone().into());
        s
    }

    /// A query on the publishing connection, then the wake-up listener's round trip (a NOTIFY
    /// to itself) once it consumes: the paths the queue needs.
    async fn self_check(&self, bound: Duration) -> std::result::Result<Duration, BrokerError> {
        let start = std::time::Instant::now();
        tokio::time::timeout(bound, self.publish.ping())
            .await
            .map_err(|_| {
                BrokerError::Timeout(bound, "a query on the queue's connection".into())
            })??;
        if let Some(wake) = self.wake.get() {
            let left = bound.saturating_sub(start.elapsed());
            wake.self_check(left).await?;
        }
        Ok(start.elapsed())
    }
}

/// Opens a connection whose messages are driven by a task of its own.
pub(crate) async fn connect(config: &PgBrokerConfig, what: &'static str) -> Result<Client> {
    use futures_util::StreamExt;
    let (client, mut messages) = open(config, what).await?;
    tokio::spawn(async move {
        while let Some(m) = messages.next().await {
            if let Err(e) = m {
                tracing::debug!(error = %e, what, "queue connection ended");
                break;
            }
        }
    });
    Ok(client)
}

/// Runs `fut` within `after`; a statement that does not answer becomes
/// [`Error::StatementTimeout`].
pub(crate) async fn bounded<T>(
    what: &str,
    after: Duration,
    fut: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> Result<T> {
    match tokio::time::timeout(after, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(Error::Query {
            what: what.to_owned(),
            source,
        }),
        Err(_) => Err(Error::StatementTimeout {
            what: what.to_owned(),
            after,
        }),
    }
}
