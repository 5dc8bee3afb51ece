//! The task that owns a listener's connection: LISTENs, delivers notifications to the
//! subscriptions, runs the commands (LISTEN/UNLISTEN of new channels), runs the self-check, and
//! reconnects with backoff when the connection fails.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher_core::time::sleep_until;
use futures_util::stream::StreamExt;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{AsyncMessage, Client};

use super::{listen_sql, lock, Ack, Cmd, Listener, Ready};
use crate::error::{Error, Result};
use crate::{open, Messages};

pub(super) async fn run(
    listener: std::sync::Weak<Listener>,
    first: (Client, Messages),
    mut cmds: mpsc::Receiver<Cmd>,
) {
    let mut next = Some(first);
    let mut backoff = None::<Duration>;
    loop {
        let Some(l) = listener.upgrade() else { return };
        let conn = match next.take() {
            Some(c) => c,
            None => {
                let delay = backoff.unwrap_or(Duration::ZERO);
                // While waiting, keep taking commands so subscribers are answered on reconnect.
                let wait = tokio::time::sleep(delay);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        _ = &mut wait => break,
                        cmd = cmds.recv() => match cmd {
                            Some(Cmd::Listen(channels, ack)) => lock(&l.pending).push((channels, ack)),
                            Some(Cmd::Unlisten(_)) => {}
                            None => return,
                        },
                        () = l.stop.notified() => return,
                    }
                }
                match open(&l.config, l.role.name()).await {
                    Ok(c) => c,
                    Err(e) => {
                        let b = backoff
                            .map(|b| {
                                (b * 2)
                                    .max(l.config.reconnect_min)
                                    .min(l.config.reconnect_max)
                            })
                            .unwrap_or(l.config.reconnect_min);
                        tracing::warn!(error = %e, retry_in = ?b, listener = l.role.name(), "reconnect failed");
                        backoff = Some(b);
                        continue;
                    }
                }
            }
        };
        let reason = serve(&l, conn, &mut cmds).await;
        l.connected.store(false, Ordering::Relaxed);
        l.pid.store(0, Ordering::Relaxed);
        match reason {
            None => return,
            Some(reason) => {
                l.record_recycle(&reason);
                backoff = Some(Duration::ZERO);
            }
        }
    }
}

/// A self-check in flight.
struct Check {
    token: String,
    /// When it was started (the round trip runs from here).
    sent: Instant,
    /// When its NOTIFY was committed; until then the publishing path's deadline bounds it.
    published: Option<Instant>,
}

/// Why a connection's round trip failed, from the tasks that run them.
pub(super) type Trouble = mpsc::Sender<String>;

/// Runs `sql` within the call timeout on `client`; a miss reports the connection as stuck.
async fn bounded_batch(
    client: &Client,
    sql: &str,
    after: Duration,
    trouble: &Trouble,
) -> std::result::Result<(), Option<tokio_postgres::Error>> {
    match tokio::time::timeout(after, client.batch_execute(sql)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Some(e)),
        Err(_) => {
            let _ = trouble.try_send(format!(
                "{sql} got no answer within {after:?} (call_timeout)"
            ));
            Err(None)
        }
    }
}

/// Serves one connection until it must be replaced (the reason) or the broker is gone (`None`).
async fn serve(
    l: &Arc<Listener>,
    conn: (Client, Messages),
    cmds: &mut mpsc::Receiver<Cmd>,
) -> Option<String> {
    let mut check: Option<Check> = None;
    let reason = serve_until(l, conn, cmds, &mut check).await;
    *lock(&l.ready) = None;
    if let (Some(reason), Some(_)) = (&reason, &check) {
        // The connection went while a check was out: that check failed.
        l.record_check_failure(&format!(
            "the connection was replaced during the check: {reason}"
        ));
    }
    reason
}

async fn serve_until(
    l: &Arc<Listener>,
    (client, mut messages): (Client, Messages),
    cmds: &mut mpsc::Receiver<Cmd>,
    check: &mut Option<Check>,
) -> Option<String> {
    let client = Arc::new(client);
    let call_timeout = l.config.call_timeout;
    let (trouble, mut troubles) = mpsc::channel::<String>(8);

    // LISTEN everything, learn the backend pid, then answer waiting subscribers.
    let (ready_tx, mut ready_rx) = oneshot::channel::<std::result::Result<i32, String>>();
    {
        let client = client.clone();
        let sql = listen_sql("LISTEN", &l.all_channels());
        tokio::spawn(async move {
            let r = async {
                client.batch_execute(&sql).await?;
                let row = client.query_one("SELECT pg_backend_pid()", &[]).await?;
                row.try_get::<_, i32>(0)
            }
            .await
            .map_err(|e| e.to_string());
            let _ = ready_tx.send(r);
        });
    }
    let mut ready = false;
    let mut tick = tokio::time::interval(l.config.self_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The outcome of the current check's NOTIFY (token, result).
    let (published_tx, mut published_rx) = mpsc::channel::<(String, Result<()>)>(4);
    // When the connection last delivered something. The self-check's bound runs from the later
    // of its NOTIFY and this: a connection busy delivering a backlog (the self-check
    // notification queued behind it), or waiting for a full subscription, is alive.
    let mut progress = Instant::now();
    let setup_deadline = tokio::time::Instant::now() + call_timeout;

    loop {
        let check_deadline = check.as_ref().and_then(|c| c.published).map(|published| {
            tokio::time::Instant::from_std(published.max(progress) + l.config.self_check_timeout)
        });
        tokio::select! {
            msg = messages.next() => {
                if let Some(reason) = on_message(l, check, msg).await {
                    return Some(reason);
                }
                // More may be buffered already: take them in this turn, up to a bound, so that
                // commands and the self-check timer still get theirs.
                for _ in 1..DRAIN {
                    let Some(msg) = messages.next().now_or_never() else {
                        break;
                    };
                    if let Some(reason) = on_message(l, check, msg).await {
                        return Some(reason);
                    }
                }
                progress = Instant::now();
            }
            r = &mut ready_rx, if !ready => match r {
                Ok(Ok(pid)) => {
                    ready = true;
                    l.pid.store(pid, Ordering::Relaxed);
                    l.connected.store(true, Ordering::Relaxed);
                    *lock(&l.ready) = Some(Ready { client: client.clone(), trouble: trouble.clone() });
                    tracing::info!(backend_pid = pid, listener = l.role.name(), "LISTEN connection ready");
                    // Channels asked for while the connection was being set up may have missed the
                    // LISTEN of everything: LISTEN them now, then answer.
                    let waiting: Vec<(Vec<String>, Ack)> = lock(&l.pending).drain(..).collect();
                    if !waiting.is_empty() {
                        let client = client.clone();
                        let channels: Vec<String> = waiting.iter().flat_map(|(c, _)| c.iter().cloned()).collect();
                        let sql = listen_sql("LISTEN", &channels);
                        let (l2, trouble) = (l.clone(), trouble.clone());
                        tokio::spawn(async move {
                            match bounded_batch(&client, &sql, call_timeout, &trouble).await {
                                Ok(()) => {
                                    for (_, ack) in waiting {
                                        let _ = ack.send(Ok(()));
                                    }
                                }
                                // Stuck or closed: the next connection LISTENs for them.
                                Err(None) => lock(&l2.pending).extend(waiting),
                                Err(Some(_)) if client.is_closed() => lock(&l2.pending).extend(waiting),
                                Err(Some(e)) => {
                                    let reason = e.to_string();
                                    for (_, ack) in waiting {
                                        let _ = ack.send(Err(Error::Listen { sql: sql.clone(), reason: reason.clone() }));
                                    }
                                }
                            }
                        });
                    }
                }
                Ok(Err(e)) => return Some(format!("LISTEN failed: {e}")),
                Err(_) => return Some("LISTEN setup was dropped".to_owned()),
            },
            _ = tokio::time::sleep_until(setup_deadline), if !ready => {
                return Some(format!("LISTEN setup got no answer within {call_timeout:?} (call_timeout)"));
            }
            reason = troubles.recv() => {
                if let Some(reason) = reason {
                    return Some(reason);
                }
            }
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Listen(channels, ack)) => {
                    if !ready {
                        lock(&l.pending).push((channels, ack));
                        continue;
                    }
                    let client = client.clone();
                    let sql = listen_sql("LISTEN", &channels);
                    let (l2, trouble) = (l.clone(), trouble.clone());
                    tokio::spawn(async move {
                        match bounded_batch(&client, &sql, call_timeout, &trouble).await {
                            Ok(()) => { let _ = ack.send(Ok(())); }
                            // The connection is being replaced: the new one LISTENs for it.
                            Err(None) => lock(&l2.pending).push((channels, ack)),
                            Err(Some(_)) if client.is_closed() => lock(&l2.pending).push((channels, ack)),
                            Err(Some(source)) => { let _ = ack.send(Err(Error::Query { what: sql, source })); }
                        }
                    });
                }
                Some(Cmd::Unlisten(channels)) => {
                    let client = client.clone();
                    let sql = listen_sql("UNLISTEN", &channels);
                    let trouble = trouble.clone();
                    tokio::spawn(async move {
                        if let Err(Some(e)) = bounded_batch(&client, &sql, call_timeout, &trouble).await {
                            tracing::debug!(error = %e, "UNLISTEN failed");
                        }
                    });
                }
                None => return None,
            },
            () = l.stop.notified() => {
                tracing::debug!(listener = l.role.name(), "no subscription left; connection closed");
                return None;
            }
            _ = tick.tick(), if ready && check.is_none() => {
                let token = uuid::Uuid::new_v4().simple().to_string();
                *check = Some(Check { token: token.clone(), sent: Instant::now(), published: None });
                let (l2, done) = (l.clone(), published_tx.clone());
                tokio::spawn(async move {
                    let r = l2
                        .publishers
                        .notify(&l2.self_channel, &token, l2.config.self_check_timeout)
                        .await;
                    let _ = done.send((token, r)).await;
                });
            }
            Some((token, r)) = published_rx.recv() => {
                let Some(c) = check.as_mut().filter(|c| c.token == token) else {
                    // The notification came back first, or the check is over.
                    continue;
                };
                match r {
                    Ok(()) => c.published = Some(Instant::now()),
                    Err(e) => {
                        // The publishing path failed; the LISTEN connection is not to blame. A
                        // NOTIFY that missed its deadline had its connection replaced: check
                        // again at once, on the next one (other failures wait for the tick).
                        *check = None;
                        let stuck = matches!(e, Error::CallTimeout { .. });
                        l.record_check_failure(&format!("the self-check NOTIFY failed: {e}"));
                        if stuck {
                            tick.reset_immediately();
                        }
                    }
                }
            }
            _ = sleep_until(check_deadline), if check_deadline.is_some() => {
                *check = None;
                let reason = format!(
                    "self-check notification not received within {:?}",
                    l.config.self_check_timeout
                );
                l.record_check_failure(&reason);
                return Some(reason);
            }
        }
    }
}

/// Most messages taken from the connection in one turn of the listener's loop.
const DRAIN: usize = 64;

/// Handles one message from the connection; `Some(reason)` when the connection must be replaced.
async fn on_message(
    l: &Listener,
    check: &mut Option<Check>,
    msg: Option<std::result::Result<AsyncMessage, tokio_postgres::Error>>,
) -> Option<String> {
    match msg {
        Some(Ok(AsyncMessage::Notification(n))) => {
            if n.channel() == l.self_channel {
                if check.as_ref().is_some_and(|c| c.token == n.payload()) {
                    if let Some(Check { sent, .. }) = check.take() {
                        let rtt = sent.elapsed();
                        let mut s = lock(&l.stats);
                        s.checks += 1;
                        s.last_rtt = Some(rtt);
                        s.max_rtt = s.max_rtt.max(rtt);
                        s.total_rtt += rtt;
                        metrics::gauge!("dispatcher_broker_self_check_rtt_seconds")
                            .set(rtt.as_secs_f64());
                        metrics::counter!("dispatcher_broker_self_checks_total").increment(1);
                    }
                }
            } else {
                l.deliver(n.channel(), n.payload()).await;
            }
            None
        }
        Some(Ok(AsyncMessage::Notice(n))) => {
            tracing::debug!(notice = %n, "notice on the LISTEN connection");
            None
        }
        Some(Ok(_)) => None,
        Some(Err(e)) => Some(format!("connection error: {e}")),
        None => Some("connection closed".to_owned()),
    }
}
