//! Raw LISTEN/NOTIFY arrival: the floor of publish-to-start latency (`latency`) and, twice, of
//! a control round trip (`control`).
//!
//! One tokio-postgres connection LISTENs on a channel of its own; another sends
//! `SELECT pg_notify(<channel>, '{"task":"bench.noop","seq":<i>}')` (the prepared statement
//! `PgBroker::publish` runs), one message at a time with the scenario's pause after each. A
//! sample runs from just before the NOTIFY is sent until the listening connection's driver
//! task has read the notification off its socket (timestamped there, before anything else
//! looks at it): what PostgreSQL and the kernel cost before any service could act. Warm-up
//! messages go first and are not counted.

use std::time::{Duration, Instant};

use dispatcher_broker_pg::PgBrokerConfig;
use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::error::{BenchError, Result};
use crate::floor::Floor;
use crate::report::summary;
use crate::scenarios::pg::connect;

/// Messages sent before the counted ones.
pub const WARMUP: u64 = 20;
/// How long one notification may take before the floor fails.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(5);

fn db(what: &str) -> impl FnOnce(tokio_postgres::Error) -> BenchError + '_ {
    move |source| BenchError::Db {
        what: what.to_owned(),
        source,
    }
}

/// The sequence number in a floor payload.
fn seq_of(payload: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()?
        .get("seq")?
        .as_u64()
}

/// `samples` publish-to-arrival latencies (after [`WARMUP`] uncounted ones), milliseconds,
/// with `pause` after each message.
pub async fn arrivals(url: &str, samples: u64, pause: Duration) -> Result<Vec<f64>> {
    let config = PgBrokerConfig::from_url(url)?.pg;
    let (listener, mut conn) = config.connect(NoTls).await.map_err(db("connect"))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, Instant)>(1024);
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let at = Instant::now();
                if let Some(seq) = seq_of(n.payload()) {
                    if tx.send((seq, at)).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let outcome = async {
        let channel = format!("bench_floor_{}", std::process::id());
        listener
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .map_err(db("listen"))?;
        let publisher = connect(url).await?;
        let mut ms = Vec::with_capacity(usize::try_from(samples).unwrap_or(0));
        for seq in 0..WARMUP + samples {
            let payload = format!(r#"{{"task":"bench.noop","seq":{seq}}}"#);
            let t0 = Instant::now();
            publisher
                .client
                .execute(&publisher.notify, &[&channel, &payload])
                .await
                .map_err(db("pg_notify"))?;
            let arrived = loop {
                match tokio::time::timeout(ARRIVAL_TIMEOUT, rx.recv()).await {
                    Ok(Some((s, at))) if s == seq => break at,
                    Ok(Some(_)) => continue,
                    Ok(None) => {
                        return Err(BenchError::Run(
                            "NOTIFY floor: the listening connection ended".into(),
                        ))
                    }
                    Err(_) => {
                        return Err(BenchError::Run(format!(
                            "NOTIFY floor: notification {seq} did not arrive within {ARRIVAL_TIMEOUT:?}"
                        )))
                    }
                }
            };
            if seq >= WARMUP {
                ms.push(arrived.duration_since(t0).as_secs_f64() * 1000.0);
            }
            tokio::time::sleep(pause).await;
        }
        Ok(ms)
    }
    .await;
    drop(listener);
    driver.abort();
    outcome
}

/// The floor: p50 and p99 of [`arrivals`].
pub async fn measure(url: &str, samples: u64, pause: Duration) -> Result<Floor> {
    let mut ms = arrivals(url, samples, pause).await?;
    let (p50, p99, _) = summary(&mut ms);
    eprintln!("floor: raw NOTIFY arrival over {samples} messages: p50 {p50:?} ms, p99 {p99:?} ms");
    Ok(Floor {
        kind: format!(
            "raw LISTEN/NOTIFY publish-to-arrival (tokio-postgres), {samples} messages, {:.1} ms apart",
            pause.as_secs_f64() * 1000.0
        ),
        p50_ms: p50,
        p99_ms: p99,
        ..Floor::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_are_read_from_payloads() {
        assert_eq!(seq_of(r#"{"task":"bench.noop","seq":17}"#), Some(17));
        assert_eq!(seq_of(r#"{"task":"bench.noop"}"#), None);
        assert_eq!(seq_of("17"), None);
    }
}
