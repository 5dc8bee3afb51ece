//! Recipe 1: exactly one node of the cluster runs a task, and nothing is lost while no service
//! listens.
//!
//! * **Submit** ([`submit`]): one statement inserts a row into `dispatcher_jobs` and NOTIFYs
//!   [`WAKE_CHANNEL`]. Run inside an application transaction, the job exists and the wake-up is
//!   sent only if that transaction commits (the notification is delivered at commit).
//! * **Claim** ([`claim`]): `UPDATE ... FROM (SELECT id ... FOR UPDATE SKIP LOCKED LIMIT n)`
//!   marks up to `n` claimable rows `running` for this node, with a lease. Concurrent claimers
//!   skip each other's locked rows, so every row goes to exactly one of them.
//! * **Run** ([`JobRunner`]): a tokio task next to the node's service. It claims when a NOTIFY
//!   wakes it (every node hears it; the lock picks the winner) and on a periodic sweep (rows
//!   inserted while no node listened, wake-ups lost in a reconnect, expired leases). Each claimed
//!   row becomes a Call on the local service (uuid `job-<id>-<attempt>`), so the body runs in the
//!   service's pool under the task's declared timeout. The runner renews the leases of its running
//!   jobs every third of the lease, and when a Call ends it records the outcome
//!   ([`record_outcome`]) — only if this node still holds the claim.
//! * **A node dies** mid-job: nobody renews its leases, and once `lease_until` has passed the
//!   rows are claimable again; another node runs them (`attempts` goes to 2). The dead node's
//!   work may have been partly done: the guarantee is exactly once while nodes live, at least
//!   once across a crash, so make task bodies idempotent where that matters.

use std::time::Duration;

use dispatcher::{Outcome, Submission, Task, TaskMessage};
use serde_json::{Map, Value};
use tokio_postgres::{GenericClient, Row};

use super::{Error, Result};

mod runner;

pub use runner::{JobRunner, JobRunnerConfig, JobRunnerStats};

/// The channel submitters NOTIFY and runners LISTEN on.
pub const WAKE_CHANNEL: &str = "dispatcher_jobs";

/// Inserts one job and wakes the runners, in one statement (so in one transaction). The payload
/// is constant, so a transaction that submits many jobs sends one notification: PostgreSQL folds
/// identical notifications of a transaction into one.
pub const SUBMIT_SQL: &str = "\
WITH job AS (
    INSERT INTO dispatcher_jobs (task, args, kwargs) VALUES ($1, $2, $3) RETURNING id
)
SELECT id, pg_notify('dispatcher_jobs', 'wake') FROM job";

/// Claims up to `$3` jobs for node `$1` with a lease of `$2` seconds: pending rows, and running
/// rows whose lease has expired (their node died or lost the database). `MATERIALIZED` keeps the
/// locking subquery from being inlined and run more than once.
pub const CLAIM_SQL: &str = "\
WITH picked AS MATERIALIZED (
    SELECT id FROM dispatcher_jobs
     WHERE state = 'pending' OR (state = 'running' AND lease_until < now())
     ORDER BY id
     LIMIT $3
       FOR UPDATE SKIP LOCKED
)
UPDATE dispatcher_jobs AS j
   SET state = 'running', claimed_by = $1, claimed_at = now(),
       lease_until = now() + make_interval(secs => $2), attempts = j.attempts + 1
  FROM picked
 WHERE j.id = picked.id
RETURNING j.id, j.task, j.args, j.kwargs, j.attempts";

/// Renews the leases of node `$1`'s running jobs `$3` to `$2` seconds from now.
pub const EXTEND_SQL: &str = "\
UPDATE dispatcher_jobs SET lease_until = now() + make_interval(secs => $2)
 WHERE claimed_by = $1 AND state = 'running' AND id = ANY($3)";

/// Records how job `$1` ended, if node `$2` still holds claim number `$3` of it.
pub const FINISH_SQL: &str = "\
UPDATE dispatcher_jobs
   SET state = $4, outcome = $5, result = $6, error = $7, finished_at = now(), lease_until = NULL
 WHERE id = $1 AND claimed_by = $2 AND attempts = $3 AND state = 'running'";

/// Puts job `$1` back to `pending`, if node `$2` still holds claim number `$3` of it.
pub const RELEASE_SQL: &str = "\
UPDATE dispatcher_jobs
   SET state = 'pending', claimed_by = NULL, claimed_at = NULL, lease_until = NULL
 WHERE id = $1 AND claimed_by = $2 AND attempts = $3 AND state = 'running'";

/// Stores a typed submission as a job and wakes the runners; returns the job's id.
///
/// Only the task and its arguments are stored: a channel or uuid set on the submission is not
/// used (the Call's uuid is `job-<id>-<attempt>`), and a delay is refused.
///
/// `client` may be a [`tokio_postgres::Transaction`]: the job then exists, and the runners are
/// woken, only when that transaction commits.
pub async fn submit<T: Task, C: GenericClient + Sync>(
    client: &C,
    submission: Submission<T>,
) -> Result<i64> {
    let (_, message) = submission.into_message(WAKE_CHANNEL)?;
    submit_message(client, &message).await
}

/// Stores an untyped task message as a job and wakes the runners; returns the job's id.
pub async fn submit_message<C: GenericClient + Sync>(
    client: &C,
    message: &TaskMessage,
) -> Result<i64> {
    if message.delay.is_some() {
        return Err(Error::Invalid(format!(
            "job for task {:?}: a delay is not supported by the jobs table",
            message.task
        )));
    }
    let args = Value::Array(message.args.clone());
    let kwargs = Value::Object(message.kwargs.clone());
    let row = client
        .query_one(SUBMIT_SQL, &[&message.task, &args, &kwargs])
        .await?;
    Ok(row.try_get::<_, i64>("id")?)
}

/// A job claimed by this node.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    /// The row's id.
    pub id: i64,
    /// The task name.
    pub task: String,
    /// The stored positional arguments (should be a JSON array).
    pub args: Value,
    /// The stored named arguments (should be a JSON object).
    pub kwargs: Value,
    /// Which claim of the row this is (1 for the first; more after expired leases).
    pub attempt: i32,
}

impl ClaimedJob {
    fn from_row(row: &Row) -> Result<Self> {
        Ok(ClaimedJob {
            id: row.try_get("id")?,
            task: row.try_get("task")?,
            args: row.try_get("args")?,
            kwargs: row.try_get("kwargs")?,
            attempt: row.try_get("attempts")?,
        })
    }

    /// The uuid of the Call that runs this claim of the job: `job-<id>-<attempt>`.
    pub fn call_uuid(&self) -> String {
        format!("job-{}-{}", self.id, self.attempt)
    }

    /// The task message that runs the job, or why the row cannot be one.
    pub fn message(&self) -> std::result::Result<TaskMessage, String> {
        let args = match &self.args {
            Value::Array(a) => a.clone(),
            Value::Null => Vec::new(),
            other => return Err(format!("args must be a JSON array, not {other}")),
        };
        let kwargs = match &self.kwargs {
            Value::Object(m) => m.clone(),
            Value::Null => Map::new(),
            other => return Err(format!("kwargs must be a JSON object, not {other}")),
        };
        let mut message = TaskMessage::new(self.task.clone());
        message.uuid = Some(self.call_uuid());
        message.args = args;
        message.kwargs = kwargs;
        Ok(message)
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Claims up to `limit` jobs for `node_id` with a lease of `lease` (see [`CLAIM_SQL`]); ordered
/// by id.
pub async fn claim<C: GenericClient + Sync>(
    client: &C,
    node_id: &str,
    limit: usize,
    lease: Duration,
) -> Result<Vec<ClaimedJob>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(CLAIM_SQL, &[&node_id, &seconds(lease), &limit])
        .await?;
    let mut jobs = rows
        .iter()
        .map(ClaimedJob::from_row)
        .collect::<Result<Vec<_>>>()?;
    jobs.sort_by_key(|j| j.id);
    Ok(jobs)
}

/// Renews `node_id`'s leases on `ids` to `lease` from now; returns how many rows it still held.
pub async fn extend_leases<C: GenericClient + Sync>(
    client: &C,
    node_id: &str,
    ids: &[i64],
    lease: Duration,
) -> Result<u64> {
    Ok(client
        .execute(EXTEND_SQL, &[&node_id, &seconds(lease), &ids])
        .await?)
}

/// The state a job gets for a Call outcome: `done` for `ok`, `None` (back to `pending`) for
/// `canceled` (a stopping node, an operator's cancel), `failed` for every other outcome.
pub fn state_for(outcome: Outcome) -> Option<&'static str> {
    match outcome {
        Outcome::Ok => Some("done"),
        Outcome::Canceled => None,
        _ => Some("failed"),
    }
}

/// Records how a claimed job's Call ended (see [`state_for`]); returns false when this node no
/// longer held the claim (its lease expired and another node took the job), so nothing changed.
pub async fn record_outcome<C: GenericClient + Sync>(
    client: &C,
    node_id: &str,
    job: (i64, i32),
    outcome: Outcome,
    result: Option<&Value>,
    error: Option<&str>,
) -> Result<bool> {
    let (id, attempt) = job;
    let n = match state_for(outcome) {
        Some(state) => {
            client
                .execute(
                    FINISH_SQL,
                    &[
                        &id,
                        &node_id,
                        &attempt,
                        &state,
                        &outcome.as_str(),
                        &result,
                        &error,
                    ],
                )
                .await?
        }
        None => {
            client
                .execute(RELEASE_SQL, &[&id, &node_id, &attempt])
                .await?
        }
    };
    Ok(n == 1)
}
