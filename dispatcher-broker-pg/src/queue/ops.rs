//! Operating the queue: counts, failed and scheduled jobs, retry, discard, prune.

use std::time::Duration;

use serde::Serialize;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::quote_ident;

fn q(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |source| Error::Query {
        what: what.into(),
        source,
    }
}

/// Jobs of one queue by state.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct QueueCounts {
    /// The queue.
    pub queue: String,
    /// Waiting to run, now or later.
    pub available: i64,
    /// Of those, due now.
    pub due: i64,
    /// Handed to a service and not settled.
    pub running: i64,
    /// Failed for good (kept for the retention).
    pub failed: i64,
    /// Canceled.
    pub canceled: i64,
    /// Seconds since the oldest due job became due (0 when none).
    pub oldest_due_s: f64,
}

/// The whole queue at one moment ([`super::PgQueue::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct QueueStats {
    /// The schema.
    pub schema: String,
    /// One entry per queue with any job, by name.
    pub queues: Vec<QueueCounts>,
    /// Services holding a live lease.
    pub live_owners: i64,
    /// Claims held by services whose lease expired, waiting to be taken over.
    pub expired_claims: i64,
}

/// A failed or canceled job, with every attempt's error.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct FailedJob {
    /// Its id (for retry and discard).
    pub id: i64,
    /// Queue.
    pub queue: String,
    /// Task.
    pub task: String,
    /// `failed` or `canceled`.
    pub state: String,
    /// Attempts made.
    pub attempt: i32,
    /// The task message.
    pub message: String,
    /// `[{"attempt": n, "at": time, "error": text}, ...]`, oldest first.
    pub errors: serde_json::Value,
    /// When it failed, seconds since the Unix epoch.
    pub failed_at: f64,
}

/// An available job whose `run_at` is still ahead ([`super::PgQueue::scheduled`]).
///
/// A row of the jobs table may hold several jobs (one publish batch of one task with one
/// `run_at`): each is listed on its own, with the row's `id` and its `index` in the row.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ScheduledJob {
    /// The id of its row in the jobs table.
    pub id: i64,
    /// Queue.
    pub queue: String,
    /// Task.
    pub task: String,
    /// Attempts already made (more than 0 for a job waiting for its retry backoff).
    pub attempt: i32,
    /// The task message.
    pub message: String,
    /// When it is due, seconds since the Unix epoch.
    pub run_at: f64,
    /// Its position among the messages of its row (0 for a row of one job).
    pub index: i32,
}

pub(crate) async fn stats(client: &Client, schema: &str) -> Result<QueueStats> {
    let s = quote_ident(schema);
    let rows = client
        .query(
            &format!(
                "SELECT queue,
                        coalesce(sum(total - taken) FILTER (WHERE state = 'available'), 0)::bigint,
                        coalesce(sum(total - taken) FILTER (WHERE state = 'available' AND run_at <= now()), 0)::bigint,
                        coalesce(sum(total) FILTER (WHERE state = 'failed'), 0)::bigint,
                        coalesce(sum(total) FILTER (WHERE state = 'canceled'), 0)::bigint,
                        coalesce(extract(epoch FROM now() - min(run_at) FILTER (WHERE state = 'available' AND run_at <= now())), 0)::float8
                   FROM {s}.jobs GROUP BY queue ORDER BY queue"
            ),
            &[],
        )
        .await
        .map_err(q("queue counts"))?;
    let mut queues: Vec<QueueCounts> = rows
        .iter()
        .map(|r| QueueCounts {
            queue: r.get(0),
            available: r.get(1),
            due: r.get(2),
            failed: r.get(3),
            canceled: r.get(4),
            oldest_due_s: r.get(5),
            running: 0,
        })
        .collect();
    let running = client
        .query(
            &format!(
                "SELECT queue, sum((hi - lo) - bit_count(done::bit(64)))::bigint
                   FROM {s}.claims GROUP BY queue"
            ),
            &[],
        )
        .await
        .map_err(q("running counts"))?;
    for r in running {
        let queue: String = r.get(0);
        let n: i64 = r.get(1);
        match queues.iter_mut().find(|c| c.queue == queue) {
            Some(c) => c.running = n,
            None => queues.push(QueueCounts {
                queue,
                running: n,
                ..QueueCounts::default()
            }),
        }
    }
    queues.sort_by(|a, b| a.queue.cmp(&b.queue));
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM {s}.owners WHERE lease_until >= now()),
                        (SELECT count(*) FROM {s}.claims c WHERE NOT EXISTS (
                             SELECT 1 FROM {s}.owners o WHERE o.id = c.owner AND o.lease_until >= now()))"
            ),
            &[],
        )
        .await
        .map_err(q("owner counts"))?;
    Ok(QueueStats {
        schema: schema.to_owned(),
        queues,
        live_owners: row.get(0),
        expired_claims: row.get(1),
    })
}

pub(crate) async fn failed(
    client: &Client,
    schema: &str,
    queue: Option<&str>,
    limit: i64,
) -> Result<Vec<FailedJob>> {
    let s = quote_ident(schema);
    let rows = client
        .query(
            &format!(
                "SELECT id, queue, task, state, attempt, messages[1], errors::text,
                        extract(epoch FROM updated_at)::float8
                   FROM {s}.jobs
                  WHERE state IN ('failed', 'canceled') AND ($1::text IS NULL OR queue = $1)
                  ORDER BY id DESC LIMIT $2"
            ),
            &[&queue, &limit.max(0)],
        )
        .await
        .map_err(q("list failed jobs"))?;
    Ok(rows
        .iter()
        .map(|r| FailedJob {
            id: r.get(0),
            queue: r.get(1),
            task: r.get(2),
            state: r.get(3),
            attempt: r.get(4),
            message: r.get(5),
            errors: serde_json::from_str(r.get::<_, &str>(6)).unwrap_or_default(),
            failed_at: r.get(7),
        })
        .collect())
}

pub(crate) async fn scheduled(
    client: &Client,
    schema: &str,
    queue: Option<&str>,
    limit: i64,
) -> Result<Vec<ScheduledJob>> {
    let s = quote_ident(schema);
    let limit = limit.max(0);
    // Every row listed holds at least one job not handed out: `limit` rows are enough.
    let rows = client
        .query(
            &format!(
                "SELECT j.id, j.queue, j.task, j.attempt, m.message, (j.taken + m.ord - 1)::int4,
                        extract(epoch FROM j.run_at)::float8
                   FROM (SELECT id, queue, task, attempt, taken, total, run_at, messages
                           FROM {s}.jobs
                          WHERE state = 'available' AND run_at > now()
                            AND ($1::text IS NULL OR queue = $1)
                          ORDER BY run_at, id LIMIT $2) j
                  CROSS JOIN LATERAL unnest(j.messages[j.taken + 1 : j.total])
                        WITH ORDINALITY AS m(message, ord)
                  ORDER BY j.run_at, j.id, m.ord LIMIT $2"
            ),
            &[&queue, &limit],
        )
        .await
        .map_err(q("list scheduled jobs"))?;
    Ok(rows
        .iter()
        .map(|r| ScheduledJob {
            id: r.get(0),
            queue: r.get(1),
            task: r.get(2),
            attempt: r.get(3),
            message: r.get(4),
            index: r.get(5),
            run_at: r.get(6),
        })
        .collect())
}

pub(crate) async fn retry(client: &Client, schema: &str, ids: &[i64]) -> Result<u64> {
    let s = quote_ident(schema);
    let row = client
        .query_one(
            &format!(
                "WITH r AS (
                     UPDATE {s}.jobs SET state = 'available', taken = 0, attempt = 0,
                            run_at = now(), updated_at = now()
                      WHERE id = ANY($1) AND state IN ('failed', 'canceled')
                     RETURNING queue
                 ), woke AS (
                     SELECT pg_notify($2, d.queue) FROM (SELECT DISTINCT queue FROM r) d
                 )
                 SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM woke)"
            ),
            &[&ids, &super::schema::wake_channel(schema)],
        )
        .await
        .map_err(q("retry failed jobs"))?;
    Ok(row.get::<_, i64>(0) as u64)
}

pub(crate) async fn discard(client: &Client, schema: &str, ids: &[i64]) -> Result<u64> {
    let s = quote_ident(schema);
    client
        .execute(
            &format!("DELETE FROM {s}.jobs WHERE id = ANY($1) AND state IN ('failed', 'canceled')"),
            &[&ids],
        )
        .await
        .map_err(q("discard failed jobs"))
}

/// Deletes kept jobs older than `retention`, 1,000 rows per statement.
pub(crate) async fn prune(client: &Client, schema: &str, retention: Duration) -> Result<u64> {
    let s = quote_ident(schema);
    let secs = retention.as_secs_f64();
    let mut total = 0;
    loop {
        let n = client
            .execute(
                &format!(
                    "DELETE FROM {s}.jobs WHERE id IN (
                         SELECT id FROM {s}.jobs
                          WHERE state IN ('failed', 'canceled')
                            AND updated_at < now() - make_interval(secs => $1)
                          LIMIT 1000)"
                ),
                &[&secs],
            )
            .await
            .map_err(q("prune kept jobs"))?;
        total += n;
        if n < 1000 {
            return Ok(total);
        }
    }
}

/// The kept jobs a [`super::retry_jobs`] or [`super::discard_jobs`] acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptJobs<'a> {
    /// The jobs with these ids that are failed or canceled (other ids are left alone).
    Ids(&'a [i64]),
    /// Every failed job (not the canceled ones), of one queue or of all.
    AllFailed {
        /// Only this queue's failed jobs.
        queue: Option<&'a str>,
    },
}

impl KeptJobs<'_> {
    /// The condition on `jobs` and its one parameter (`$1`).
    fn condition(&self) -> (&'static str, &(dyn tokio_postgres::types::ToSql + Sync)) {
        match self {
            KeptJobs::Ids(ids) => (
                "id = ANY($1::bigint[]) AND state IN ('failed', 'canceled')",
                ids,
            ),
            KeptJobs::AllFailed { queue } => (
                "state = 'failed' AND ($1::text IS NULL OR queue = $1)",
                queue,
            ),
        }
    }
}

/// Like [`retry`], for the jobs `which` selects; returns the ids made available, in order.
pub(crate) async fn retry_kept(
    client: &Client,
    schema: &str,
    which: KeptJobs<'_>,
) -> Result<Vec<i64>> {
    let s = quote_ident(schema);
    let (condition, param) = which.condition();
    let wake = super::schema::wake_channel(schema);
    let rows = client
        .query(
            &format!(
                "WITH r AS (
                     UPDATE {s}.jobs SET state = 'available', taken = 0, attempt = 0,
                            run_at = now(), updated_at = now()
                      WHERE {condition}
                     RETURNING id, queue
                 ), woke AS (
                     SELECT pg_notify($2, d.queue) FROM (SELECT DISTINCT queue FROM r) d
                 )
                 SELECT id FROM r, (SELECT count(*) FROM woke) w ORDER BY id"
            ),
            &[param, &wake],
        )
        .await
        .map_err(q("retry failed jobs"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Like [`discard`], for the jobs `which` selects; returns the ids deleted, in order.
pub(crate) async fn discard_kept(
    client: &Client,
    schema: &str,
    which: KeptJobs<'_>,
) -> Result<Vec<i64>> {
    let s = quote_ident(schema);
    let (condition, param) = which.condition();
    let rows = client
        .query(
            &format!(
                "WITH d AS (DELETE FROM {s}.jobs WHERE {condition} RETURNING id)
                 SELECT id FROM d ORDER BY id"
            ),
            &[param],
        )
        .await
        .map_err(q("discard failed jobs"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
