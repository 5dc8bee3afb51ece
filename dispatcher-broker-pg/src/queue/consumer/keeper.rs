//! The keeper: settlements written in batches, leases renewed and released, maintenance,
//! depth gauges.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use dispatcher_core::delivery::Settlement;
use tokio_postgres::{Client, Statement};

use super::super::{bounded, connect, PgQueueConfig};
use super::{lock, Shared, PER_CLAIM};
use crate::error::{Error, Result};
use crate::quote_ident;

/// Settlements of one owner, as the settle function's arrays.
#[derive(Debug, Default)]
struct Batch {
    /// Claims with messages left to settle after this batch, and the bits it settles.
    ids: Vec<i64>,
    masks: Vec<i64>,
    /// Claims whose last messages this batch settles: deleted, with no update before.
    complete: Vec<i64>,
    back_claims: Vec<i64>,
    back_idx: Vec<i32>,
    back_state: Vec<&'static str>,
    back_delay_ms: Vec<i64>,
    back_error: Vec<Option<String>>,
    back_counted: Vec<bool>,
    /// Messages per claim in this batch, and their bits.
    per_claim: HashMap<i64, (u32, i64)>,
}

struct KeeperConn {
    client: Client,
    settle: Statement,
    renew: Statement,
}

/// Writes settlements, renews leases, prunes, samples the depth.
pub(super) async fn keeper(shared: Arc<Shared>) {
    let config = shared.config.clone();
    let mut conn: Option<KeeperConn> = None;
    let mut renew = tokio::time::interval(config.lease / 3);
    let mut maintain = tokio::time::interval(Duration::from_secs(30));
    let mut sample = tokio::time::interval(config.stats_interval);
    for t in [&mut renew, &mut maintain, &mut sample] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let mut backoff = config.pg.reconnect_min;
    let mut pending: Vec<(u64, Settlement)> = Vec::new();
    loop {
        if shared.is_closed() {
            // One last write of what is buffered, then stop (the leases lapse).
            pending.append(&mut lock(&shared.buf));
            if let Some(c) = conn.as_ref() {
                if let Err(e) = flush(&shared, c, &mut pending).await {
                    tracing::warn!(error = %e, unwritten = pending.len(), "durable queue closed with settlements unwritten; their jobs run again after the lease");
                }
                if let Err(e) = release_leases(&shared, c).await {
                    tracing::debug!(error = %e, "durable queue closed; its leases lapse on their own");
                }
            }
            return;
        }
        if conn.is_none() {
            match keeper_connect(&config).await {
                Ok(c) => {
                    conn = Some(c);
                    backoff = config.pg.reconnect_min;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "durable queue: cannot connect to write settlements");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(config.pg.reconnect_max);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_ref() else { continue };
        // The timers first: under a steady flow a settlement arrives during every flush, so
        // the flush branch is always ready and would starve the lease renewal (the service
        // would lose its own claims while running them).
        let result = tokio::select! {
            biased;
            _ = renew.tick() => renew_leases(&shared, c).await,
            _ = maintain.tick() => maintenance(&shared, c).await,
            _ = sample.tick() => gauges(&config, &c.client).await,
            _ = shared.flush.notified() => {
                tokio::time::sleep(config.settle_delay).await;
                pending.append(&mut lock(&shared.buf));
                flush(&shared, c, &mut pending).await
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, unwritten = pending.len(), "durable queue: keeper connection given up; reconnecting");
            conn = None;
            if !pending.is_empty() {
                // Come back to them after reconnecting.
                shared.flush.notify_one();
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(config.pg.reconnect_max);
        }
    }
}

async fn keeper_connect(config: &PgQueueConfig) -> Result<KeeperConn> {
    let s = quote_ident(&config.schema);
    let client = connect(&config.pg, "queue settlements").await?;
    client
        .batch_execute("SET synchronous_commit = off")
        .await
        .map_err(|source| Error::Query {
            what: "set synchronous_commit".into(),
            source,
        })?;
    let settle = client
        .prepare(&format!(
            "SELECT {s}.settle($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .await
        .map_err(|source| Error::Query {
            what: "prepare settle".into(),
            source,
        })?;
    // An upsert: an owner row deleted while this service was frozen comes back.
    let renew = client
        .prepare(&format!(
            "INSERT INTO {s}.owners AS o (id, node, lease_until) OVERRIDING SYSTEM VALUE
             SELECT unnest($1::bigint[]), $2, now() + make_interval(secs => $3)
             ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until"
        ))
        .await
        .map_err(|source| Error::Query {
            what: "prepare lease renewal".into(),
            source,
        })?;
    Ok(KeeperConn {
        client,
        settle,
        renew,
    })
}

async fn flush(
    shared: &Shared,
    c: &KeeperConn,
    pending: &mut Vec<(u64, Settlement)>,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut by_owner: HashMap<i64, Batch> = HashMap::new();
    {
        let claims = lock(&shared.claims);
        for (id, s) in pending.iter() {
            let claim = (id / PER_CLAIM) as i64;
            let idx = (id % PER_CLAIM) as i32;
            let Some((owner, _)) = claims.get(&claim) else {
                tracing::error!(
                    claim,
                    "settlement for a claim this service does not hold; ignored"
                );
                continue;
            };
            let b = by_owner.entry(*owner).or_default();
            let entry = b.per_claim.entry(claim).or_default();
            entry.0 += 1;
            entry.1 |= 1i64 << idx;
            let back = match s {
                Settlement::Complete => None,
                Settlement::Retry { after, error } => Some((
                    "available",
                    after.as_millis().min(i64::MAX as u128) as i64,
                    Some(error.clone()),
                    true,
                )),
                Settlement::Fail { error } => Some(("failed", 0, Some(error.clone()), true)),
                Settlement::Cancel { reason } => Some(("canceled", 0, Some(reason.clone()), true)),
                Settlement::Release => Some(("available", 0, None, false)),
                // A settlement this build does not know: keep the job for a person to look at.
                _ => Some(("failed", 0, Some(format!("unknown settlement {s:?}")), true)),
            };
            if let Some((state, delay, error, counted)) = back {
                b.back_claims.push(claim);
                b.back_idx.push(idx);
                b.back_state.push(state);
                b.back_delay_ms.push(delay);
                b.back_error.push(error);
                b.back_counted.push(counted);
            }
        }
        // A claim whose every message handed out is settled now is deleted at once; others get
        // their bits (what a takeover after a crash must not run again).
        for b in by_owner.values_mut() {
            for (claim, (n, mask)) in &b.per_claim {
                let left = claims.get(claim).map_or(0, |c| c.1);
                if *n >= left {
                    b.complete.push(*claim);
                } else {
                    b.ids.push(*claim);
                    b.masks.push(*mask);
                }
            }
        }
    }
    for (owner, b) in &by_owner {
        bounded(
            "settle jobs",
            shared.config.statement_timeout,
            c.client.query_one(
                &c.settle,
                &[
                    owner,
                    &b.ids,
                    &b.masks,
                    &b.complete,
                    &b.back_claims,
                    &b.back_idx,
                    &b.back_state,
                    &b.back_delay_ms,
                    &b.back_error,
                    &b.back_counted,
                ],
            ),
        )
        .await?;
    }
    // Written: count them and forget the claims that are done.
    let counters = &shared.counters;
    for (_, s) in pending.drain(..) {
        let (counter, name) = match s {
            Settlement::Complete => (&counters.completed, "dispatcher_queue_completed_total"),
            Settlement::Retry { .. } => (&counters.retried, "dispatcher_queue_retries_total"),
            Settlement::Cancel { .. } => (&counters.canceled, "dispatcher_queue_canceled_total"),
            Settlement::Release => (&counters.released, "dispatcher_queue_released_total"),
            _ => (&counters.failed, "dispatcher_queue_failures_total"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(name).increment(1);
    }
    let mut claims = lock(&shared.claims);
    for b in by_owner.values() {
        for (claim, (n, _)) in &b.per_claim {
            if let Some(entry) = claims.get_mut(claim) {
                entry.1 = entry.1.saturating_sub(*n);
                if entry.1 == 0 {
                    claims.remove(claim);
                }
            }
        }
    }
    Ok(())
}

/// At close: owners with nothing held are removed, the others' leases end now, so that what they
/// still hold (handed out, never settled) runs elsewhere at once rather than after the lease.
async fn release_leases(shared: &Shared, c: &KeeperConn) -> Result<()> {
    let owners = std::mem::take(&mut *lock(&shared.owners));
    if owners.is_empty() {
        return Ok(());
    }
    let s = quote_ident(&shared.config.schema);
    bounded(
        "release leases",
        shared.config.statement_timeout,
        c.client.batch_execute(&format!(
            "DELETE FROM {s}.owners o WHERE o.id IN ({ids})
               AND NOT EXISTS (SELECT 1 FROM {s}.claims c WHERE c.owner = o.id);
             UPDATE {s}.owners SET lease_until = now() - interval '1 second'
              WHERE id IN ({ids});",
            ids = owners
                .iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    )
    .await
}

async fn renew_leases(shared: &Shared, c: &KeeperConn) -> Result<()> {
    let owners = lock(&shared.owners).clone();
    if owners.is_empty() {
        return Ok(());
    }
    bounded(
        "renew leases",
        shared.config.statement_timeout,
        c.client.execute(
            &c.renew,
            &[
                &owners,
                &shared.config.node,
                &shared.config.lease.as_secs_f64(),
            ],
        ),
    )
    .await?;
    Ok(())
}

/// Prunes kept jobs past the retention, owners long expired with nothing left, and job rows
/// whose every message is settled but whose delete was missed.
async fn maintenance(shared: &Shared, c: &KeeperConn) -> Result<()> {
    let config = &shared.config;
    let s = quote_ident(&config.schema);
    let timeout = config.statement_timeout;
    let pruned = tokio::time::timeout(
        timeout,
        super::super::ops::prune(&c.client, &config.schema, config.failed_retention),
    )
    .await
    .map_err(|_| Error::StatementTimeout {
        what: "prune kept jobs".into(),
        after: timeout,
    })??;
    let owners = bounded(
        "remove expired owners",
        timeout,
        c.client.execute(
            &format!(
                "DELETE FROM {s}.owners o WHERE o.lease_until < now() - interval '10 minutes'
                   AND NOT EXISTS (SELECT 1 FROM {s}.claims c WHERE c.owner = o.id)"
            ),
            &[],
        ),
    )
    .await?;
    let rows = bounded(
        "remove settled job rows",
        timeout,
        c.client.execute(
            &format!(
                "DELETE FROM {s}.jobs j WHERE j.state = 'running'
                   AND NOT EXISTS (SELECT 1 FROM {s}.claims c WHERE c.job_id = j.id)"
            ),
            &[],
        ),
    )
    .await?;
    if pruned + owners + rows > 0 {
        tracing::debug!(pruned, owners, rows, "durable queue maintenance");
    }
    Ok(())
}

async fn gauges(config: &PgQueueConfig, client: &Client) -> Result<()> {
    let stats = tokio::time::timeout(
        config.statement_timeout,
        super::super::ops::stats(client, &config.schema),
    )
    .await
    .map_err(|_| Error::StatementTimeout {
        what: "queue stats".into(),
        after: config.statement_timeout,
    })??;
    for q in &stats.queues {
        for (state, n) in [
            ("available", q.available),
            ("running", q.running),
            ("failed", q.failed),
            ("canceled", q.canceled),
        ] {
            metrics::gauge!("dispatcher_queue_jobs", "queue" => q.queue.clone(), "state" => state)
                .set(n as f64);
        }
        metrics::gauge!("dispatcher_queue_oldest_due_seconds", "queue" => q.queue.clone())
            .set(q.oldest_due_s);
    }
    metrics::gauge!("dispatcher_queue_expired_claims").set(stats.expired_claims as f64);
    Ok(())
}
