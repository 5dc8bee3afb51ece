//! `queue`: the durable queue ([`PgQueue`]) end to end, with the service in a separate process.
//!
//! Each round:
//!
//! 1. Creates a fresh database (`dispatcher_bench_queue_<pid>`, dropped at the end) and starts
//!    the service process ([`super::serve`] with `--queue`: a `dispatcher_server::Server` with
//!    a `PgBroker`, a `PgQueue` consuming the queue named like its channel, migrated on start,
//!    and a `ProcessPool` of `W` workers).
//! 2. **Throughput**: `P` publishers, each with a `PgQueue` of its own (one connection), enqueue
//!    `N` no-op jobs (`{"task":"bench.noop"}`) between them, `B` per
//!    [`PgQueue::enqueue_many`] statement, while the service consumes. The clock runs from just
//!    before the first enqueue until the bench sees both `jobs` and `claims` empty (polled every
//!    2 ms once the publishers are done): every job settled in the database.
//! 3. **Tables** (`tables`): `pg_total_relation_size` (heap, TOAST, indexes) of `jobs` and
//!    `claims` together, their heaps and indexes apart, and `n_dead_tup`, at the start, once
//!    the tables are empty (after 1.2 s, so that the backends' statistics have reached the
//!    server), and after the latency phase and a plain `VACUUM` of both.
//! 4. **Latency**: after a 0.5 s pause, one job every `--pause-ms` (5 ms; open loop: job `i` is
//!    enqueued at `i * 5 ms` or as soon as the previous enqueue returned) carrying `time_pub`
//!    (the clock just before its enqueue round trip); `p50_ms`/`p99_ms` are over the Calls'
//!    `started_at - time_pub` (until the service handed the job to a worker), from the history.
//!
//! The service's RSS is sampled every 100 ms: `rss_main_start_kb` before the first enqueue,
//! `rss_main_mid_kb` halfway through the throughput phase, `rss_main_kb` at its end. CPU per
//! job (`cpu_*_us_per_task`) is from `/proc/<pid>/stat` over the throughput phase, for the
//! service, its workers, the PostgreSQL backends serving it, and the publishers' backends.
//!
//! [`super::queue_rounds`] runs the rounds: with the bare-pool floor before each, and with
//! `--peer` interleaved with graphile-worker.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dispatcher_broker_pg::queue::{Job, PgQueue, PgQueueConfig};
use dispatcher_broker_pg::PgBrokerConfig;
use dispatcher_core::call::now_epoch;
use dispatcher_core::Broker;
use tokio_postgres::{Client, NoTls};

use crate::error::{BenchError, Result};
use crate::floor::enqueue::EnqueueFloor;
use crate::report::{
    nproc, proc_cpu_ms, proc_status_kb, round3, summary, Report, TableState, Tables,
};
use crate::scenarios::pg::NOOP;
use crate::scenarios::remote::Remote;
use crate::scenarios::Options;

/// The queue's schema (the server's default).
const SCHEMA: &str = "dispatcher";
/// Pause before the latency phase, so that the service is idle (as the peer does).
const SETTLE_PAUSE: Duration = Duration::from_millis(500);
/// Long enough for every backend to have reported its statistics (they do at most once a
/// second).
const STATS_PAUSE: Duration = Duration::from_millis(1200);

fn db(what: &str) -> impl FnOnce(tokio_postgres::Error) -> BenchError + '_ {
    move |source| BenchError::Db {
        what: what.to_owned(),
        source,
    }
}

/// `url` with its database replaced by `name` (a parameter given later wins, in both forms).
pub fn with_dbname(url: &str, name: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}dbname={name}")
    } else {
        format!("{url} dbname={name}")
    }
}

pub async fn client(url: &str) -> Result<Client> {
    let config = PgBrokerConfig::from_url(url)?;
    let (client, conn) = config.pg.connect(NoTls).await.map_err(db("connect"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("queue: bench connection ended: {e}");
        }
    });
    Ok(client)
}

/// One round in a fresh database, dropped afterwards; `rounds` runs it.
pub async fn round(url: &str, options: &Options, number: u64) -> Result<Report> {
    let name = format!("dispatcher_bench_queue_{}", std::process::id());
    let admin = client(url).await?;
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin
            .batch_execute(&sql)
            .await
            .map_err(db("create the database"))?;
    }
    let db_url = with_dbname(url, &name);
    let outcome = async {
        let history = options.history.unwrap_or(10_000);
        let remote = Remote::start_queue(&db_url, options.workers, Some(history)).await?;
        let outcome = measure(&remote, &db_url, options, history, number).await;
        let stopped = remote.stop().await;
        let report = outcome?;
        stopped?;
        Ok::<Report, BenchError>(report)
    }
    .await;
    if let Err(e) = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
    {
        eprintln!("queue: could not drop {name}: {e}");
    }
    outcome
}

/// Backend pids of the current database other than `client`'s own.
async fn backends(client: &Client) -> Result<Vec<u32>> {
    let rows = client
        .query(
            "SELECT pid FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .map_err(db("list backends"))?;
    Ok(rows
        .iter()
        .filter_map(|r| u32::try_from(r.get::<_, i32>(0)).ok())
        .collect())
}

/// The queue tables' sizes and tuple counts.
async fn table_state(client: &Client) -> Result<TableState> {
    let row = client
        .query_one(
            &format!(
                "SELECT sum(pg_total_relation_size(s.relid))::int8,
                        sum(pg_relation_size(s.relid))::int8,
                        sum(pg_indexes_size(s.relid))::int8,
                        sum(s.n_dead_tup)::int8,
                        sum(s.autovacuum_count)::int8
                   FROM pg_stat_user_tables s
                  WHERE s.schemaname = '{SCHEMA}' AND s.relname IN ('jobs', 'claims')"
            ),
            &[],
        )
        .await
        .map_err(db("table sizes"))?;
    let v = |i: usize| row.get::<_, Option<i64>>(i).unwrap_or(0);
    Ok(TableState {
        total_bytes: v(0),
        heap_bytes: v(1),
        index_bytes: v(2),
        dead_tuples: v(3),
        autovacuums: v(4),
    })
}

async fn measure(
    remote: &Remote,
    db_url: &str,
    options: &Options,
    history: u64,
    number: u64,
) -> Result<Report> {
    let n = options.tasks;
    let p = options.publishers.min(n).max(1);
    let batch = options.batch.unwrap_or(1_000).max(1);
    let queue = remote.channel.clone();
    let observer = client(db_url).await?;
    let service_backends = backends(&observer).await?;
    let mut publishers = Vec::new();
    for _ in 0..p {
        let config = PgQueueConfig::from_url(db_url)?;
        publishers.push(Arc::new(PgQueue::connect(config).await?));
    }
    // Open every publisher's connection before the clock starts.
    for q in &publishers {
        q.self_check(Duration::from_secs(10))
            .await
            .map_err(|e| BenchError::Run(format!("a publisher is not ready: {e}")))?;
    }
    let publish_backends: Vec<u32> = backends(&observer)
        .await?
        .into_iter()
        .filter(|pid| !service_backends.contains(pid))
        .collect();
    let start_state = table_state(&observer).await?;
    let base: u64 = remote.outcomes().await?.values().sum();
    let workers = remote.worker_pids().await?;
    let cpu = |pids: &[u32]| -> Option<f64> { pids.iter().map(|p| proc_cpu_ms(*p)).sum() };
    let cpu_before = (
        proc_cpu_ms(remote.pid),
        cpu(&workers),
        cpu(&service_backends),
        cpu(&publish_backends),
    );
    let rss_start = remote.status_kb("VmRSS");
    let samples: Arc<Mutex<Vec<(f64, u64)>>> = Arc::default();
    let start = Instant::now();
    let sampler = {
        let samples = samples.clone();
        let pid = remote.pid;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                if let Some(kb) = proc_status_kb(pid, "VmRSS") {
                    samples
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((start.elapsed().as_secs_f64(), kb));
                }
            }
        })
    };

    // Throughput.
    let job = Job::from_payload(&queue, NOOP)?;
    let mut tasks = Vec::new();
    for (i, q) in publishers.iter().enumerate() {
        let share = n / p + u64::from((i as u64) < n % p);
        let q = q.clone();
        let job = job.clone();
        tasks.push(tokio::spawn(async move {
            let mut left = share;
            while left > 0 {
                let k = left.min(batch);
                q.enqueue_many(vec![job.clone(); usize::try_from(k).unwrap_or(1)])
                    .await?;
                left -= k;
            }
            Ok::<f64, BenchError>(start.elapsed().as_secs_f64())
        }));
    }
    let mut publish_seconds: f64 = 0.0;
    for t in tasks {
        let s = t
            .await
            .map_err(|e| BenchError::Run(format!("a publisher failed: {e}")))??;
        publish_seconds = publish_seconds.max(s);
    }
    eprintln!("queue: {n} jobs enqueued in {publish_seconds:.3}s");
    let empty = wait_empty(remote, &observer, n, base, start).await;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_after = (
        proc_cpu_ms(remote.pid),
        cpu(&workers),
        cpu(&service_backends),
        cpu(&publish_backends),
    );
    let rss_end = remote.status_kb("VmRSS");
    sampler.abort();
    empty?;
    let rate = n as f64 / seconds;
    eprintln!("queue: {n} jobs settled in {seconds:.3}s ({rate:.0}/s)");
    let outcomes = remote.outcomes().await?;
    let ok = outcomes.get("ok").copied().unwrap_or(0);
    let finished: u64 = outcomes.values().sum::<u64>() - base;
    if finished != n || ok < n {
        return Err(BenchError::Run(format!(
            "expected {n} Calls ending ok, the service finished {finished} (outcomes: {outcomes:?})"
        )));
    }
    let per_task = |before: Option<f64>, after: Option<f64>| {
        Some(round3((after? - before?) * 1000.0 / n as f64))
    };
    let rss_mid = {
        let samples = samples.lock().unwrap_or_else(|p| p.into_inner());
        samples
            .iter()
            .min_by(|a, b| {
                (a.0 - seconds / 2.0)
                    .abs()
                    .total_cmp(&(b.0 - seconds / 2.0).abs())
            })
            .map(|s| s.1)
    };
    tokio::time::sleep(STATS_PAUSE).await;
    let after_state = table_state(&observer).await?;

    // Latency: the queue's jobs, each followed half a spacing later by a floor sample.
    let samples_n = options.latency_jobs;
    let spacing = Duration::from_secs_f64(options.pause_ms.unwrap_or(5.0).max(0.0) / 1000.0);
    let mut floor = EnqueueFloor::start(db_url, samples_n).await?;
    tokio::time::sleep(SETTLE_PAUSE).await;
    let base: u64 = remote.outcomes().await?.values().sum();
    let publisher = publishers
        .first()
        .ok_or_else(|| BenchError::Run("no publisher".into()))?;
    let t0 = tokio::time::Instant::now();
    let mut enqueue_ms = Vec::new();
    for i in 0..samples_n {
        let at = t0 + spacing * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(at).await;
        let payload = format!(r#"{{"task":"bench.noop","time_pub":{}}}"#, now_epoch());
        let sent = Instant::now();
        publisher
            .enqueue(Job::from_payload(&queue, &payload)?)
            .await?;
        enqueue_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep_until(at + spacing / 2).await;
        floor.send().await?;
    }
    let mut floor_ms = floor.finish().await?;
    let (floor_p50, floor_p99, _) = summary(&mut floor_ms);
    eprintln!(
        "queue: floor (insert+NOTIFY, one round trip) p50 {floor_p50:?} ms, p99 {floor_p99:?} ms"
    );
    let (p50_enqueue, p99_enqueue, _) = summary(&mut enqueue_ms);
    remote
        .wait_finished("queue latency", base, samples_n, None)
        .await?;
    let calls = remote.newest_calls(samples_n.min(history)).await?;
    let mut start_ms: Vec<f64> = calls
        .iter()
        .filter_map(|c| Some((c.started_at? - c.time_pub?) * 1000.0))
        .collect();
    let mut receive_ms: Vec<f64> = calls
        .iter()
        .filter_map(|c| Some((c.received_at? - c.time_pub?) * 1000.0))
        .collect();
    let (p50_receive, p99_receive, _) = summary(&mut receive_ms);
    if start_ms.len() as u64 != samples_n.min(history) {
        return Err(BenchError::Run(format!(
            "expected {samples_n} started Calls with time_pub, found {}",
            start_ms.len()
        )));
    }
    let (p50, p99, max) = summary(&mut start_ms);
    eprintln!("queue: publish-to-start p50 {p50:?} ms, p99 {p99:?} ms, max {max:?} ms");

    // Clean up.
    drop(publishers);
    observer
        .batch_execute(&format!("VACUUM {SCHEMA}.jobs, {SCHEMA}.claims"))
        .await
        .map_err(db("vacuum"))?;
    let vacuumed = table_state(&observer).await?;
    let tables = Tables {
        start: start_state,
        after: after_state,
        vacuumed,
    };
    eprintln!(
        "queue: jobs+claims {} kB at the start, {} kB ({} dead tuples) after the run, {} kB ({} dead) after VACUUM",
        tables.start.total_bytes / 1024,
        tables.after.total_bytes / 1024,
        tables.after.dead_tuples,
        tables.vacuumed.total_bytes / 1024,
        tables.vacuumed.dead_tuples,
    );
    let (rss_worker_kb, rss_worker_anon_kb) = remote.worker_rss_kb().await?;
    Ok(Report {
        scenario: "queue".to_owned(),
        tasks: n,
        workers: options.workers,
        publishers: Some(p),
        batch: Some(batch),
        seconds: round3(seconds),
        tasks_per_sec: rate.round(),
        publish_seconds: Some(round3(publish_seconds)),
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
        p50_total_ms: p50_receive,
        p99_total_ms: p99_receive,
        p50_enqueue_ms: p50_enqueue,
        p99_enqueue_ms: p99_enqueue,
        floor_p50_ms: floor_p50,
        floor_p99_ms: floor_p99,
        latency: "p50_ms/p99_ms/max_ms: publish-to-start of the latency phase (Call started_at - time_pub, time_pub taken just before the enqueue round trip), one job every --pause-ms; *_total_ms: publish-to-receipt (received_at - time_pub); *_enqueue_ms: the enqueue round trip",
        latency_samples: Some(samples_n),
        rss_main_kb: rss_end,
        rss_main_start_kb: rss_start,
        rss_main_mid_kb: rss_mid,
        rss_main_anon_kb: remote.status_kb("RssAnon"),
        rss_main_peak_kb: remote.status_kb("VmHWM"),
        rss_worker_kb,
        rss_worker_anon_kb,
        cpu_main_us_per_task: per_task(cpu_before.0, cpu_after.0),
        cpu_workers_us_per_task: per_task(cpu_before.1, cpu_after.1),
        cpu_pg_us_per_task: per_task(cpu_before.2, cpu_after.2),
        cpu_pg_publish_us_per_task: per_task(cpu_before.3, cpu_after.3),
        history_size: Some(usize::try_from(history).unwrap_or(usize::MAX)),
        tables: Some(tables),
        outcomes,
        rounds: Some(number),
        nproc: nproc(),
        ..Report::default()
    })
}

/// Polls until `jobs` and `claims` are empty; prints progress (the service's finished count)
/// once a second; fails when nothing moves for 30 s.
async fn wait_empty(
    remote: &Remote,
    observer: &Client,
    n: u64,
    base: u64,
    start: Instant,
) -> Result<()> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {SCHEMA}.jobs) OR EXISTS (SELECT 1 FROM {SCHEMA}.claims)"
    );
    let statement = observer.prepare(&sql).await.map_err(db("prepare"))?;
    let mut last_print = Instant::now();
    let mut last_done = 0;
    let mut last_change = Instant::now();
    loop {
        let busy: bool = observer
            .query_one(&statement, &[])
            .await
            .map_err(db("look at the tables"))?
            .get(0);
        if !busy {
            return Ok(());
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let done = remote
                .outcomes()
                .await?
                .values()
                .sum::<u64>()
                .saturating_sub(base);
            eprintln!(
                "queue: {done}/{n} finished after {:.1}s; service RSS {} KiB",
                start.elapsed().as_secs_f64(),
                remote.status_kb("VmRSS").unwrap_or(0)
            );
            if done != last_done {
                last_done = done;
                last_change = Instant::now();
            } else if last_change.elapsed() > Duration::from_secs(30) {
                return Err(BenchError::Run(format!(
                    "queue: stuck at {done}/{n} finished for 30 s with jobs left in the tables"
                )));
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_replaced_in_both_forms() {
        assert_eq!(
            with_dbname("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/postgres?dbname=x"
        );
        assert_eq!(
            with_dbname("postgres://h/db?sslmode=disable", "x"),
            "postgres://h/db?sslmode=disable&dbname=x"
        );
        assert_eq!(
            with_dbname("host=h user=u dbname=postgres", "x"),
            "host=h user=u dbname=postgres dbname=x"
        );
        let c: tokio_postgres::Config = with_dbname("postgres://postgres@h/postgres", "x")
            .parse()
            .unwrap();
        assert_eq!(c.get_dbname(), Some("x"));
        let c: tokio_postgres::Config = with_dbname("host=h dbname=postgres", "x").parse().unwrap();
        assert_eq!(c.get_dbname(), Some("x"));
    }
}
