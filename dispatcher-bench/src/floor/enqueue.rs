//! The floor of the durable queue's publish-to-start latency (`queue`), measured in the same
//! database and interleaved with the queue's latency jobs: one connection inserts a row and
//! NOTIFYs in one statement (synchronous commit, as an enqueue), a second LISTENs, and on each
//! notification a third runs `SELECT 1` (one round trip, as the claim). A sample runs from just
//! before the insert until the `SELECT 1` returned.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dispatcher_broker_pg::PgBrokerConfig;
use tokio_postgres::{Client, NoTls};

use crate::error::{BenchError, Result};
use crate::scenarios::queue::client;

fn db(what: &str) -> impl FnOnce(tokio_postgres::Error) -> BenchError + '_ {
    move |source| BenchError::Db {
        what: what.to_owned(),
        source,
    }
}

/// The floor while it runs (see the module docs).
pub struct EnqueueFloor {
    publisher: Client,
    insert: tokio_postgres::Statement,
    sent: Vec<Instant>,
    done: Arc<Mutex<Vec<Option<Instant>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl EnqueueFloor {
    /// Connects, creates the floor's table, and LISTENs; room for `samples` samples.
    pub async fn start(db_url: &str, samples: u64) -> Result<EnqueueFloor> {
        use futures_util::StreamExt;
        use tokio_postgres::AsyncMessage;

        let config = PgBrokerConfig::from_url(db_url)?.pg;
        let publisher = client(db_url).await?;
        let prober = client(db_url).await?;
        let (listener, mut conn) = config.connect(NoTls).await.map_err(db("connect"))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<usize>(1024);
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(Ok(m)) = messages.next().await {
                if let AsyncMessage::Notification(n) = m {
                    if let Ok(i) = n.payload().parse::<usize>() {
                        let _ = tx.send(i).await;
                    }
                }
            }
        });
        publisher
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, v text)",
            )
            .await
            .map_err(db("create the floor table"))?;
        listener
            .batch_execute("LISTEN bench_floor")
            .await
            .map_err(db("listen"))?;
        let insert = publisher
            .prepare(
                "WITH i AS (INSERT INTO bench_floor (v) VALUES ($1) RETURNING id)
                 SELECT pg_notify('bench_floor', $1) FROM i",
            )
            .await
            .map_err(db("prepare"))?;
        let probe = prober.prepare("SELECT 1").await.map_err(db("prepare"))?;
        let n = usize::try_from(samples).unwrap_or(usize::MAX);
        let done: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; n]));
        let consumer = {
            let done = done.clone();
            tokio::spawn(async move {
                // Holds the listener's client: dropping it would end the connection.
                let _listener = listener;
                while let Some(i) = rx.recv().await {
                    if prober.query_one(&probe, &[]).await.is_err() {
                        break;
                    }
                    if let Some(slot) = done.lock().unwrap_or_else(|p| p.into_inner()).get_mut(i) {
                        *slot = Some(Instant::now());
                    }
                }
            })
        };
        Ok(EnqueueFloor {
            publisher,
            insert,
            sent: Vec::with_capacity(n),
            done,
            tasks: vec![driver, consumer],
        })
    }

    /// Sends the next sample.
    pub async fn send(&mut self) -> Result<()> {
        let i = self.sent.len();
        self.sent.push(Instant::now());
        self.publisher
            .query_one(&self.insert, &[&i.to_string()])
            .await
            .map_err(db("insert and notify"))?;
        Ok(())
    }

    /// Every sample's latency, milliseconds (waits up to 10 s for the last ones).
    pub async fn finish(self) -> Result<Vec<f64>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let latencies = loop {
            let got: Vec<f64> = {
                let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
                done.iter()
                    .zip(&self.sent)
                    .filter_map(|(d, s)| {
                        Some(d.as_ref()?.duration_since(*s).as_secs_f64() * 1000.0)
                    })
                    .collect()
            };
            if got.len() == self.sent.len() || Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        for t in &self.tasks {
            t.abort();
        }
        if latencies.len() != self.sent.len() {
            return Err(BenchError::Run(format!(
                "floor: {} of {} notifications arrived",
                latencies.len(),
                self.sent.len()
            )));
        }
        Ok(latencies)
    }
}
