//! The LISTEN connection: one task owns it, polls it for notifications, checks itself, and
//! replaces it when it fails.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use dispatcher_core::broker::{BrokerStatus, Incoming, SelfCheckStatus, Subscription};
use dispatcher_core::time::sleep_until;
use futures_util::stream::{Stream, StreamExt};
use futures_util::FutureExt;
use serde_json::json;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{AsyncMessage, Client};

use crate::error::{Error, Result};
use crate::{open, quote_ident, Messages, PgBrokerConfig, PublishPath};

type Ack = oneshot::Sender<Result<()>>;

#[derive(Debug)]
enum Cmd {
    Listen(Vec<String>, Ack),
    Unlisten(Vec<String>),
}

#[derive(Debug, Default)]
struct Subs {
    by_channel: HashMap<String, Vec<(u64, mpsc::Sender<Incoming>)>>,
    next_id: u64,
}

#[derive(Debug, Default)]
struct Stats {
    recycles: u64,
    checks: u64,
    check_failures: u64,
    last_rtt: Option<Duration>,
    max_rtt: Duration,
    /// Sum of the successful checks' round trips (for the mean).
    total_rtt: Duration,
    last_recycle_reason: Option<String>,
}

/// Shared state of the listener task.
#[derive(Debug)]
pub(crate) struct Listener {
    config: PgBrokerConfig,
    subs: Mutex<Subs>,
    cmds: mpsc::Sender<Cmd>,
    /// Subscribers waiting for their LISTEN while no connection is ready.
    pending: Mutex<Vec<(Vec<String>, Ack)>>,
    pid: AtomicI32,
    connected: AtomicBool,
    stats: Mutex<Stats>,
    publisher: OnceLock<PublishPath>,
    self_channel: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn listen_sql(verb: &str, channels: &[String]) -> String {
    channels
        .iter()
        .map(|c| format!("{verb} {};", quote_ident(c)))
        .collect()
}

impl Listener {
    pub(crate) async fn start(config: PgBrokerConfig) -> Result<Arc<Listener>> {
        let first = connect(&config).await?;
        let (tx, rx) = mpsc::channel(1024);
        let listener = Arc::new(Listener {
            config,
            subs: Mutex::new(Subs::default()),
            cmds: tx,
            pending: Mutex::new(Vec::new()),
            pid: AtomicI32::new(0),
            connected: AtomicBool::new(false),
            stats: Mutex::new(Stats::default()),
            publisher: OnceLock::new(),
            self_channel: format!("dispatcher_selfcheck_{}", uuid::Uuid::new_v4().simple()),
        });
        let weak = Arc::downgrade(&listener);
        tokio::spawn(run(weak, first, rx));
        Ok(listener)
    }

    pub(crate) fn set_publisher(&self, p: PublishPath) {
        let _ = self.publisher.set(p);
    }

    pub(crate) fn backend_pid(&self) -> i32 {
        self.pid.load(Ordering::Relaxed)
    }

    pub(crate) fn recycles(&self) -> u64 {
        lock(&self.stats).recycles
    }

    pub(crate) fn status(&self) -> BrokerStatus {
        let s = lock(&self.stats);
        let channels: Vec<String> = lock(&self.subs).by_channel.keys().cloned().collect();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut check = SelfCheckStatus::new(s.checks + s.check_failures, s.check_failures);
        check.last_rtt_ms = s.last_rtt.map(ms);
        check.max_rtt_ms = (s.checks > 0).then(|| ms(s.max_rtt));
        check.mean_rtt_ms = (s.checks > 0).then(|| ms(s.total_rtt) / s.checks as f64);
        check.interval_s = Some(self.config.self_check_interval.as_secs_f64());
        // dispatcherd's name for its PostgreSQL broker, so producers are named alike.
        let mut status = BrokerStatus::new("pg_notify");
        status.connected = Some(self.connected.load(Ordering::Relaxed));
        status.recycles = s.recycles;
        status.last_recycle_reason = s.last_recycle_reason.clone();
        status.self_check = Some(check);
        status
            .details
            .insert("listener_pid".into(), json!(self.backend_pid()));
        status.details.insert("channels".into(), json!(channels));
        status
    }

    pub(crate) async fn subscribe(self: &Arc<Self>, channels: &[String]) -> Result<Subscription> {
        let (tx, rx) = mpsc::channel(self.config.subscriber_capacity.max(1));
        let id = {
            let mut subs = lock(&self.subs);
            subs.next_id += 1;
            let id = subs.next_id;
            for c in channels {
                subs.by_channel
                    .entry(c.clone())
                    .or_default()
                    .push((id, tx.clone()));
            }
            id
        };
        let stream = SubStream {
            rx,
            id,
            listener: Arc::downgrade(self),
        };
        let (ack_tx, ack_rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Listen(channels.to_vec(), ack_tx))
            .await
            .map_err(|_| Error::Closed)?;
        ack_rx.await.map_err(|_| Error::Closed)??;
        Ok(stream.boxed())
    }

    fn unsubscribe(&self, id: u64) {
        let mut emptied = Vec::new();
        {
            let mut subs = lock(&self.subs);
            subs.by_channel.retain(|channel, list| {
                list.retain(|(i, _)| *i != id);
                if list.is_empty() {
                    emptied.push(channel.clone());
                    false
                } else {
                    true
                }
            });
        }
        if !emptied.is_empty() {
            // Full only when thousands of commands are queued; the channel then stays LISTENed
            // until the next reconnect, which is harmless.
            let _ = self.cmds.try_send(Cmd::Unlisten(emptied));
        }
    }

    /// Hands a notification to every subscription of its channel. A full subscription is
    /// waited for (outside the lock), so each gets every notification, in order.
    async fn deliver(&self, channel: &str, payload: &str) {
        // The usual case, every subscription has room: one message per subscription and nothing
        // else allocated, no waiting.
        let mut full = Vec::new();
        let mut closed = Vec::new();
        {
            let subs = lock(&self.subs);
            let Some(list) = subs.by_channel.get(channel) else {
                return;
            };
            for (id, tx) in list {
                let msg = Incoming::new(channel.to_owned(), payload.to_owned());
                match tx.try_send(msg) {
                    Ok(()) => {}
                    Err(TrySendError::Full(msg)) => full.push((*id, tx.clone(), msg)),
                    Err(TrySendError::Closed(_)) => closed.push(*id),
                }
            }
        }
        for (id, tx, msg) in full {
            if tx.send(msg).await.is_err() {
                closed.push(id);
            }
        }
        for id in closed {
            self.unsubscribe(id);
        }
    }

    fn all_channels(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.subs).by_channel.keys().cloned().collect();
        v.push(self.self_channel.clone());
        v
    }

    fn record_recycle(&self, reason: &str) {
        let mut s = lock(&self.stats);
        s.recycles += 1;
        s.last_recycle_reason = Some(reason.to_owned());
        metrics::counter!("dispatcher_broker_recycles_total").increment(1);
        tracing::warn!(recycles = s.recycles, %reason, "LISTEN connection recycled");
    }
}

async fn connect(config: &PgBrokerConfig) -> Result<(Client, Messages)> {
    open(config, "listener").await
}

async fn run(
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
                    }
                }
                match connect(&l.config).await {
                    Ok(c) => c,
                    Err(e) => {
                        let b = backoff
                            .map(|b| {
                                (b * 2)
                                    .max(l.config.reconnect_min)
                                    .min(l.config.reconnect_max)
                            })
                            .unwrap_or(l.config.reconnect_min);
                        tracing::warn!(error = %e, retry_in = ?b, "listener reconnect failed");
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

/// Serves one connection until it must be replaced (the reason) or the broker is gone (`None`).
async fn serve(
    l: &Arc<Listener>,
    (client, mut messages): (Client, Messages),
    cmds: &mut mpsc::Receiver<Cmd>,
) -> Option<String> {
    let client = Arc::new(client);

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
    let mut check: Option<(String, Instant)> = None;
    // When the connection last delivered something. The self-check's bound runs from the later
    // of its publish and this: a connection busy delivering a backlog (the self-check
    // notification queued behind it), or waiting for a full subscription, is alive.
    let mut progress = Instant::now();
    let setup_deadline = tokio::time::Instant::now() + l.config.self_check_timeout * 2;

    loop {
        let check_deadline = check.as_ref().map(|(_, sent)| {
            tokio::time::Instant::from_std((*sent).max(progress) + l.config.self_check_timeout)
        });
        tokio::select! {
            msg = messages.next() => {
                if let Some(reason) = on_message(l, &mut check, msg).await {
                    return Some(reason);
                }
                // More may be buffered already: take them in this turn, up to a bound, so that
                // commands and the self-check timer still get theirs.
                for _ in 1..DRAIN {
                    let Some(msg) = messages.next().now_or_never() else {
                        break;
                    };
                    if let Some(reason) = on_message(l, &mut check, msg).await {
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
                    tracing::info!(backend_pid = pid, "LISTEN connection ready");
                    // Channels asked for while the connection was being set up may have missed the
                    // LISTEN of everything: LISTEN them now, then answer.
                    let waiting: Vec<(Vec<String>, Ack)> = lock(&l.pending).drain(..).collect();
                    if !waiting.is_empty() {
                        let client = client.clone();
                        let channels: Vec<String> = waiting.iter().flat_map(|(c, _)| c.iter().cloned()).collect();
                        let sql = listen_sql("LISTEN", &channels);
                        let l2 = l.clone();
                        tokio::spawn(async move {
                            match client.batch_execute(&sql).await {
                                Ok(()) => {
                                    for (_, ack) in waiting {
                                        let _ = ack.send(Ok(()));
                                    }
                                }
                                Err(_) if client.is_closed() => lock(&l2.pending).extend(waiting),
                                Err(e) => {
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
                return Some("LISTEN setup did not complete in time".to_owned());
            }
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Listen(channels, ack)) => {
                    if !ready {
                        lock(&l.pending).push((channels, ack));
                        continue;
                    }
                    let client = client.clone();
                    let sql = listen_sql("LISTEN", &channels);
                    let l2 = l.clone();
                    tokio::spawn(async move {
                        match client.batch_execute(&sql).await {
                            Ok(()) => { let _ = ack.send(Ok(())); }
                            // The connection is being replaced: the new one LISTENs for it.
                            Err(_) if client.is_closed() => lock(&l2.pending).push((channels, ack)),
                            Err(source) => { let _ = ack.send(Err(Error::Query { what: sql, source })); }
                        }
                    });
                }
                Some(Cmd::Unlisten(channels)) => {
                    let client = client.clone();
                    let sql = listen_sql("UNLISTEN", &channels);
                    tokio::spawn(async move {
                        if let Err(e) = client.batch_execute(&sql).await {
                            tracing::debug!(error = %e, "UNLISTEN failed");
                        }
                    });
                }
                None => return None,
            },
            _ = tick.tick(), if ready && check.is_none() => {
                // No check before the broker gave its publishing path (right after connecting).
                if l.publisher.get().is_none() {
                    continue;
                }
                let token = uuid::Uuid::new_v4().simple().to_string();
                check = Some((token.clone(), Instant::now()));
                let l2 = l.clone();
                tokio::spawn(async move {
                    if let Some(p) = l2.publisher.get() {
                        if let Err(e) = p.notify(&l2.self_channel, &token).await {
                            tracing::warn!(error = %e, "self-check publish failed");
                        }
                    }
                });
            }
            _ = sleep_until(check_deadline), if check_deadline.is_some() => {
                lock(&l.stats).check_failures += 1;
                metrics::counter!("dispatcher_broker_self_check_failures_total").increment(1);
                return Some(format!(
                    "self-check notification not received within {:?}",
                    l.config.self_check_timeout
                ));
            }
        }
    }
}

/// Most messages taken from the connection in one turn of the listener's loop.
const DRAIN: usize = 64;

/// Handles one message from the connection; `Some(reason)` when the connection must be replaced.
async fn on_message(
    l: &Listener,
    check: &mut Option<(String, Instant)>,
    msg: Option<std::result::Result<AsyncMessage, tokio_postgres::Error>>,
) -> Option<String> {
    match msg {
        Some(Ok(AsyncMessage::Notification(n))) => {
            if n.channel() == l.self_channel {
                if check.as_ref().is_some_and(|(t, _)| t == n.payload()) {
                    if let Some((_, sent)) = check.take() {
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

/// A subscription's stream; dropping it UNLISTENs channels nobody else wants.
struct SubStream {
    rx: mpsc::Receiver<Incoming>,
    id: u64,
    listener: std::sync::Weak<Listener>,
}

impl Stream for SubStream {
    type Item = Incoming;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for SubStream {
    fn drop(&mut self) {
        if let Some(l) = self.listener.upgrade() {
            l.unsubscribe(self.id);
        }
    }
}
