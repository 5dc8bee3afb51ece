//! Enqueueing: [`Job`], one statement per batch, and a wake-up NOTIFY per queue.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use dispatcher_core::{Submission, Task, TaskMessage};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Statement, ToStatement};

use super::{bounded, connect, schema, PgQueueConfig};
use crate::error::{Error, Result};
use crate::quote_ident;

/// One job to enqueue: a wire-format task message for a queue, with its options.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    queue: String,
    task: String,
    message: String,
    priority: i32,
    run_at: Option<SystemTime>,
    unique_key: Option<String>,
    max_attempts: Option<i32>,
}

#[derive(Deserialize)]
struct Head {
    task: Option<String>,
    delay: Option<f64>,
}

impl Job {
    /// A job running `message` from queue `queue`. A `delay` in the message becomes the job's
    /// `run_at`.
    pub fn new(queue: impl Into<String>, message: &TaskMessage) -> Result<Self> {
        let mut message = message.clone();
        let delay = message.delay.take();
        let text = message
            .to_json()
            .map_err(|e| Error::Job(format!("task {:?}: {e}", message.task)))?;
        let mut job = Job::raw(queue.into(), message.task, text);
        job.delay_by(delay)?;
        Ok(job)
    }

    /// A job from a typed submission (`my_task::call(...)`), on the submission's channel or
    /// `default_queue`. A task declared `unique = true` gets a unique key from its name and
    /// arguments: enqueueing it again while one is available or running returns that one.
    pub fn from_submission<T: Task>(
        submission: Submission<T>,
        default_queue: &str,
    ) -> Result<Self> {
        let (queue, message) = submission
            .into_message(default_queue)
            .map_err(|e| Error::Job(e.to_string()))?;
        let mut job = Job::new(queue, &message)?;
        if T::descriptor().config().unique {
            job.unique_key = Some(unique_key_of(&message));
        }
        Ok(job)
    }

    /// A job from a payload as a publisher sends it: a task message in JSON, or a signed
    /// envelope of one (stored as signed; the service verifies it when it runs the job, so its
    /// `signature_max_age` must cover the time jobs wait in the queue).
    pub fn from_payload(queue: &str, payload: &str) -> Result<Self> {
        if dispatcher_core::signing::is_signed(payload) {
            #[derive(Deserialize)]
            struct Signed {
                payload: String,
            }
            let inner: Signed = serde_json::from_str(payload).map_err(|e| {
                Error::Job(format!(
                    "the signed payload for queue {queue:?} is not a signed envelope: {e}"
                ))
            })?;
            let head = Job::from_payload(queue, &inner.payload)?;
            if head.run_at.is_some() {
                return Err(Error::Job(format!(
                    "task {:?}: a signed message cannot carry a delay for the queue (its signature covers the delay field); enqueue it with Job::delay or run_at instead",
                    head.task
                )));
            }
            return Ok(Job::raw(queue.to_owned(), head.task, payload.to_owned()));
        }
        let head: Head = serde_json::from_str(payload).map_err(|e| {
            Error::Job(format!(
                "the payload for queue {queue:?} is not a task message: {e}"
            ))
        })?;
        let Some(task) = head.task else {
            return Err(Error::Job(format!(
                "the payload for queue {queue:?} has no \"task\" field (only task messages can be queued)"
            )));
        };
        if head.delay.is_some_and(|d| d > 0.0) {
            // The queue applies the delay (run_at); the service must not apply it again.
            let message: TaskMessage = serde_json::from_str(payload)
                .map_err(|e| Error::Job(format!("task {task:?}: {e}")))?;
            return Job::new(queue, &message);
        }
        Ok(Job::raw(queue.to_owned(), task, payload.to_owned()))
    }

    fn raw(queue: String, task: String, message: String) -> Self {
        Job {
            queue,
            task,
            message,
            priority: 0,
            run_at: None,
            unique_key: None,
            max_attempts: None,
        }
    }

    fn delay_by(&mut self, delay: Option<f64>) -> Result<()> {
        if let Some(d) = delay.filter(|d| *d > 0.0) {
            let d = Duration::try_from_secs_f64(d)
                .map_err(|_| Error::Job(format!("task {:?}: bad delay {d}", self.task)))?;
            self.run_at = Some(SystemTime::now() + d);
        }
        Ok(())
    }

    /// Higher runs first (default 0).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Not before `at`.
    pub fn run_at(mut self, at: SystemTime) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Not before `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.run_at = Some(SystemTime::now() + delay);
        self
    }

    /// At most one live (available or running) job with this key per queue.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Overrides the task's `max_attempts` for this job (at least 1).
    pub fn max_attempts(mut self, max: u32) -> Self {
        self.max_attempts = Some(i32::try_from(max.max(1)).unwrap_or(i32::MAX));
        self
    }

    /// The queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The task's name.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// The message text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether it may share a row with other jobs of its queue and task.
    fn batchable(&self) -> bool {
        self.unique_key.is_none() && self.max_attempts.is_none()
    }
}

/// A key for a unique task: its name and a hash of its arguments.
fn unique_key_of(message: &TaskMessage) -> String {
    let args = serde_json::json!([message.args, message.kwargs]).to_string();
    // FNV-1a, twice with different offsets: stable across builds and processes.
    let fnv = |seed: u64| {
        args.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
        })
    };
    format!(
        "{}:{:016x}{:016x}",
        message.task,
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4)
    )
}

/// What enqueueing wrote: a row's id, and whether it was an existing live job with the same
/// unique key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Enqueued {
    /// The row's id (a row of a batch carries several jobs).
    pub id: i64,
    /// True when a live job with the unique key existed, and nothing was added.
    pub existing: bool,
}

/// Rows for one statement: jobs grouped into rows, the flat messages, and the columns.
struct Rows {
    queue: Vec<String>,
    task: Vec<String>,
    priority: Vec<i32>,
    run_at: Vec<Option<SystemTime>>,
    unique_key: Vec<Option<String>>,
    max_attempts: Vec<Option<i32>>,
    first: Vec<i32>,
    count: Vec<i32>,
    messages: Vec<String>,
}

fn rows(jobs: Vec<Job>, batch_rows: usize) -> Result<Rows> {
    let mut r = Rows {
        queue: Vec::new(),
        task: Vec::new(),
        priority: Vec::new(),
        run_at: Vec::new(),
        unique_key: Vec::new(),
        max_attempts: Vec::new(),
        first: Vec::new(),
        count: Vec::new(),
        messages: Vec::with_capacity(jobs.len()),
    };
    let mut seen_keys = HashMap::new();
    // Batchable jobs of one queue, task, priority and run_at share rows.
    let mut groups: HashMap<(String, String, i32, Option<SystemTime>), Vec<String>> =
        HashMap::new();
    let mut order = Vec::new();
    for job in jobs {
        if let Some(k) = &job.unique_key {
            // Two jobs of one statement with one key: the first is enqueued, the second would
            // be "the existing one"; PostgreSQL refuses both in one statement, so drop it here.
            if seen_keys
                .insert((job.queue.clone(), k.clone()), ())
                .is_some()
            {
                continue;
            }
        }
        if job.batchable() {
            let key = (job.queue, job.task, job.priority, job.run_at);
            let group = groups.entry(key.clone()).or_default();
            if group.is_empty() {
                order.push(key);
            }
            group.push(job.message);
            continue;
        }
        r.push(
            job.queue,
            job.task,
            job.priority,
            job.run_at,
            job.unique_key,
            job.max_attempts,
            vec![job.message],
        )?;
    }
    for key in order {
        let Some(messages) = groups.remove(&key) else {
            continue;
        };
        let (queue, task, priority, run_at) = key;
        let mut messages = messages.into_iter().peekable();
        while messages.peek().is_some() {
            let chunk: Vec<String> = messages.by_ref().take(batch_rows.max(1)).collect();
            r.push(
                queue.clone(),
                task.clone(),
                priority,
                run_at,
                None,
                None,
                chunk,
            )?;
        }
    }
    Ok(r)
}

impl Rows {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        queue: String,
        task: String,
        priority: i32,
        run_at: Option<SystemTime>,
        unique_key: Option<String>,
        max_attempts: Option<i32>,
        messages: Vec<String>,
    ) -> Result<()> {
        let first = i32::try_from(self.messages.len())
            .map_err(|_| Error::Job("more than 2^31 messages in one statement".into()))?;
        self.queue.push(queue);
        self.task.push(task);
        self.priority.push(priority);
        self.run_at.push(run_at);
        self.unique_key.push(unique_key);
        self.max_attempts.push(max_attempts);
        self.first.push(first);
        self.count.push(messages.len() as i32);
        self.messages.extend(messages);
        Ok(())
    }
}

/// The enqueue statement of `schema`: rows from arrays, one NOTIFY per queue.
fn insert_sql(schema: &str) -> String {
    let s = quote_ident(schema);
    let wake = schema::wake_channel(schema);
    format!(
        "WITH r AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[],
                                  $5::text[], $6::int[], $7::int[], $8::int[])
                 WITH ORDINALITY AS r(queue, task, priority, run_at, unique_key, max_attempts,
                                      first, n, ord)
         ), ins AS (
             INSERT INTO {s}.jobs AS j (queue, task, priority, run_at, unique_key, max_attempts,
                                        messages, total)
             SELECT r.queue, r.task, r.priority, coalesce(r.run_at, now()), r.unique_key,
                    r.max_attempts, ($9::text[])[r.first + 1 : r.first + r.n], r.n
               FROM r ORDER BY r.ord
             ON CONFLICT (queue, unique_key)
                 WHERE unique_key IS NOT NULL AND state IN ('available', 'running')
             DO UPDATE SET updated_at = now()
             RETURNING j.id, j.queue, (j.xmax::text <> '0') AS existing
         ), woke AS (
             SELECT pg_notify('{wake}', d.queue) FROM (SELECT DISTINCT ins.queue FROM ins) d
         )
         SELECT ins.id, ins.existing, (SELECT count(*) FROM woke) FROM ins"
    )
}

/// Runs the enqueue statement (`statement`: [`insert_sql`] as text or prepared) for `jobs`.
async fn insert<C, S>(
    client: &C,
    statement: &S,
    jobs: Vec<Job>,
    batch_rows: usize,
) -> std::result::Result<Vec<Enqueued>, InsertError>
where
    C: GenericClient + Sync,
    S: ToStatement + Sync + Send + ?Sized,
{
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let r = rows(jobs, batch_rows).map_err(InsertError::Input)?;
    let params: [&(dyn ToSql + Sync); 9] = [
        &r.queue,
        &r.task,
        &r.priority,
        &r.run_at,
        &r.unique_key,
        &r.max_attempts,
        &r.first,
        &r.count,
        &r.messages,
    ];
    let rows = client
        .query(statement, &params)
        .await
        .map_err(InsertError::Db)?;
    Ok(rows
        .iter()
        .map(|row| Enqueued {
            id: row.get(0),
            existing: row.get(1),
        })
        .collect())
}

enum InsertError {
    Input(Error),
    Db(tokio_postgres::Error),
}

/// Enqueues `jobs` with the caller's own client or transaction, in the queue of `schema`: they
/// commit if and only if the caller's transaction does (the wake-up NOTIFY is sent at commit).
///
/// ```no_run
/// use dispatcher_broker_pg::queue::{enqueue_in, Job};
/// use dispatcher_core::TaskMessage;
///
/// # async fn demo(client: &mut tokio_postgres::Client) -> Result<(), Box<dyn std::error::Error>> {
/// let tx = client.transaction().await?;
/// tx.execute("INSERT INTO orders (id) VALUES (42)", &[]).await?;
/// let mut message = TaskMessage::new("shop.confirm");
/// message.args = vec![42.into()];
/// enqueue_in(&tx, "dispatcher", vec![Job::new("default", &message)?]).await?;
/// tx.commit().await?; // the order and its job, or neither
/// # Ok(()) }
/// ```
pub async fn enqueue_in<C: GenericClient + Sync>(
    client: &C,
    schema: &str,
    jobs: Vec<Job>,
) -> Result<Vec<Enqueued>> {
    schema::check_schema(schema)?;
    insert(client, insert_sql(schema).as_str(), jobs, 1_000)
        .await
        .map_err(|e| match e {
            InsertError::Input(e) => e,
            InsertError::Db(source) => Error::Query {
                what: "enqueue".into(),
                source,
            },
        })
}

/// The queue's publishing connection, with the enqueue statement prepared on it (parsing and
/// planning it costs more than running it).
#[derive(Debug)]
pub(super) struct Publish {
    config: PgQueueConfig,
    conn: Mutex<Option<Conn>>,
}

#[derive(Debug)]
struct Conn {
    client: Client,
    insert: Statement,
}

impl Publish {
    pub(super) fn new(config: PgQueueConfig) -> Self {
        Publish {
            config,
            conn: Mutex::new(None),
        }
    }

    async fn client(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Conn>>> {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
            *slot = None;
            let client = connect(&self.config.pg, "queue publisher").await?;
            let insert = bounded(
                "prepare the enqueue statement",
                self.config.statement_timeout,
                client.prepare(&insert_sql(&self.config.schema)),
            )
            .await?;
            *slot = Some(Conn { client, insert });
        }
        Ok(slot)
    }

    pub(super) async fn enqueue(&self, jobs: Vec<Job>) -> Result<Vec<Enqueued>> {
        let timeout = self.config.statement_timeout;
        for attempt in 0..2 {
            let slot = self.client().await?;
            let Some(Conn {
                client,
                insert: statement,
            }) = slot.as_ref()
            else {
                continue;
            };
            let result = tokio::time::timeout(
                timeout,
                insert(client, statement, jobs.clone(), self.config.batch_rows),
            )
            .await;
            match result {
                Ok(Ok(done)) => return Ok(done),
                Ok(Err(InsertError::Input(e))) => return Err(e),
                Ok(Err(InsertError::Db(source))) => {
                    let closed = client.is_closed();
                    drop(slot);
                    if closed && attempt == 0 {
                        // The connection died before the statement reached the server (or with
                        // it): a closed connection never commits, so one retry is safe.
                        tracing::warn!(error = %source, "enqueue failed on a closed connection; retrying once");
                        *self.conn.lock().await = None;
                        continue;
                    }
                    return Err(Error::Query {
                        what: "enqueue".into(),
                        source,
                    });
                }
                Err(_) => {
                    drop(slot);
                    *self.conn.lock().await = None;
                    // Unknown whether it committed: report, never retry (no duplicate).
                    return Err(Error::StatementTimeout {
                        what: "enqueue".into(),
                        after: timeout,
                    });
                }
            }
        }
        Err(Error::Closed)
    }

    pub(super) async fn ping(&self) -> Result<()> {
        let slot = self.client().await?;
        let Some(Conn { client, .. }) = slot.as_ref() else {
            return Err(Error::Closed);
        };
        bounded(
            "ping",
            self.config.statement_timeout,
            client.simple_query("SELECT 1"),
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(task: &str, n: i64) -> TaskMessage {
        let mut m = TaskMessage::new(task);
        m.args = vec![n.into()];
        m
    }

    #[test]
    fn batchable_jobs_share_rows_of_at_most_batch_rows() {
        let mut jobs = Vec::new();
        for i in 0..5 {
            jobs.push(Job::new("q", &msg("a", i)).unwrap());
        }
        jobs.push(Job::new("q", &msg("b", 9)).unwrap());
        jobs.push(Job::new("q", &msg("a", 7)).unwrap().unique_key("k"));
        let r = rows(jobs, 2).unwrap();
        // The unique one alone, then a: 2+2+1, then b: 1.
        assert_eq!(r.count, [1, 2, 2, 1, 1]);
        assert_eq!(r.task, ["a", "a", "a", "a", "b"]);
        assert_eq!(r.first, [0, 1, 3, 5, 6]);
        assert_eq!(r.messages.len(), 7);
    }

    #[test]
    fn duplicate_keys_in_one_statement_are_dropped() {
        let a = Job::new("q", &msg("a", 1)).unwrap().unique_key("k");
        let b = Job::new("q", &msg("a", 2)).unwrap().unique_key("k");
        let c = Job::new("other", &msg("a", 2)).unwrap().unique_key("k");
        let r = rows(vec![a, b, c], 10).unwrap();
        assert_eq!(r.queue, ["q", "other"]);
    }

    #[test]
    fn payloads_need_a_task_and_their_delay_becomes_run_at() {
        let e = Job::from_payload("q", "{\"control\":\"alive\"}").unwrap_err();
        assert!(e.to_string().contains("no \"task\" field"), "{e}");
        let e = Job::from_payload("q", "not json").unwrap_err();
        assert!(e.to_string().contains("not a task message"), "{e}");
        let j = Job::from_payload("q", r#"{"task":"t","delay":60}"#).unwrap();
        assert!(j
            .run_at
            .is_some_and(|t| t > SystemTime::now() + Duration::from_secs(50)));
        assert!(!j.message.contains("delay"), "{}", j.message);
    }

    #[test]
    fn signed_payloads_are_queued_as_signed() {
        let key = dispatcher_core::signing::SigningKey::new(&[7u8; 32]).unwrap();
        let signed = key.sign(r#"{"task":"t.signed","args":[1]}"#).unwrap();
        let j = Job::from_payload("q", &signed).unwrap();
        assert_eq!((j.task(), j.message()), ("t.signed", signed.as_str()));
        let delayed = key.sign(r#"{"task":"t.signed","delay":5}"#).unwrap();
        let e = Job::from_payload("q", &delayed).unwrap_err().to_string();
        assert!(e.contains("cannot carry a delay"), "{e}");
    }

    #[test]
    fn unique_keys_depend_on_task_and_arguments() {
        assert_eq!(unique_key_of(&msg("a", 1)), unique_key_of(&msg("a", 1)));
        assert_ne!(unique_key_of(&msg("a", 1)), unique_key_of(&msg("a", 2)));
        assert_ne!(unique_key_of(&msg("a", 1)), unique_key_of(&msg("b", 1)));
    }
}
