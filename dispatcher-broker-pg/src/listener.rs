//! A LISTEN connection: one task owns it, polls it for notifications, checks itself, and
//! replaces it when it fails. A broker has one for its subscriptions and, once a service asks
//! for one, a second for its control channels (the same code, [`Role::Control`]).
//!
//! The self-check NOTIFYs the listener's own channel through the broker's publishing
//! connections (round-robin), so it checks both paths: a NOTIFY that misses its deadline
//! replaces that publishing connection (and the check is tried again at once), and a
//! notification that does not arrive within `self_check_timeout` of its NOTIFY replaces the
//! LISTEN connection.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use dispatcher_core::broker::{BrokerStatus, Incoming, SelfCheckStatus, Subscription};
use futures_util::stream::{Stream, StreamExt};
use serde_json::json;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::publishers::Publishers;
use crate::{open, quote_ident, PgBrokerConfig};

mod connection;
use connection::{run, Trouble};

/// Which of a broker's listeners this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The subscriptions of `Broker::subscribe`.
    Main,
    /// The subscriptions of `Broker::subscribe_control`.
    Control,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Main => "listener",
            Role::Control => "control listener",
        }
    }
}

type Ack = oneshot::Sender<Result<()>>;

#[derive(Debug)]
enum Cmd {
    Listen(Vec<String>, Ack),
    Unlisten(Vec<String>),
}

/// Where a subscription's notifications go: its channel, and the bytes of payload it may still
/// hold (a subscription holds at most `subscriber_capacity` notifications and
/// `subscriber_max_bytes` of payload).
#[derive(Debug, Clone)]
struct Sink {
    tx: mpsc::Sender<Incoming>,
    room: Arc<tokio::sync::Semaphore>,
}

/// The bytes a payload counts for in a subscription's byte bound (at least 1, at most the
/// bound: a payload larger than the whole bound still goes through, alone).
fn weight(payload: &str, max: usize) -> u32 {
    payload.len().clamp(1, max.max(1)).min(u32::MAX as usize) as u32
}

#[derive(Debug, Default)]
struct Subs {
    by_channel: HashMap<String, Vec<(u64, Sink)>>,
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
    publishers: Arc<Publishers>,
    role: Role,
    self_channel: String,
    /// A control listener whose last subscription went: it is stopping, and takes no new ones.
    closing: AtomicBool,
    /// Wakes the connection task to stop (a permit is kept if it is busy; never lost, unlike a
    /// command on a full channel).
    stop: tokio::sync::Notify,
    /// The connection while it is ready (every channel LISTENed), for [`Listener::listen_and_run`].
    ready: Mutex<Option<Ready>>,
    /// The connection task waits for room in a full subscription (a service whose intake is
    /// paused): it reads nothing from the connection meanwhile, so a query sent on it gets no
    /// answer until the subscription has room, which is no sign of a dead connection.
    waiting_for_room: AtomicBool,
}

/// A ready connection, and where a round trip on it that got no answer is reported.
#[derive(Debug, Clone)]
struct Ready {
    client: Arc<Client>,
    trouble: Trouble,
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
    pub(crate) async fn start(
        config: PgBrokerConfig,
        publishers: Arc<Publishers>,
        role: Role,
    ) -> Result<Arc<Listener>> {
        let first = open(&config, role.name()).await?;
        let (tx, rx) = mpsc::channel(1024);
        let listener = Arc::new(Listener {
            config,
            subs: Mutex::new(Subs::default()),
            cmds: tx,
            pending: Mutex::new(Vec::new()),
            pid: AtomicI32::new(0),
            connected: AtomicBool::new(false),
            stats: Mutex::new(Stats::default()),
            publishers,
            role,
            self_channel: format!("dispatcher_selfcheck_{}", uuid::Uuid::new_v4().simple()),
            closing: AtomicBool::new(false),
            stop: tokio::sync::Notify::new(),
            ready: Mutex::new(None),
            waiting_for_room: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&listener);
        tokio::spawn(run(weak, first, rx));
        Ok(listener)
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

    /// Adds a subscription to `channels` (its stream takes it back when dropped); nothing is
    /// LISTENed yet.
    fn register(self: &Arc<Self>, channels: &[String]) -> Result<SubStream> {
        let (tx, rx) = mpsc::channel(self.config.subscriber_capacity.max(1));
        let max_bytes = self.config.subscriber_max_bytes.max(1);
        let room = Arc::new(tokio::sync::Semaphore::new(
            max_bytes.min(tokio::sync::Semaphore::MAX_PERMITS),
        ));
        let sink = Sink {
            tx,
            room: room.clone(),
        };
        let id = {
            let mut subs = lock(&self.subs);
            if self.is_closing() {
                return Err(Error::Closed);
            }
            subs.next_id += 1;
            let id = subs.next_id;
            for c in channels {
                subs.by_channel
                    .entry(c.clone())
                    .or_default()
                    .push((id, sink.clone()));
            }
            id
        };
        Ok(SubStream {
            rx,
            room,
            max_bytes,
            id,
            listener: Arc::downgrade(self),
        })
    }

    pub(crate) async fn subscribe(self: &Arc<Self>, channels: &[String]) -> Result<Subscription> {
        let stream = self.register(channels)?;
        // While no connection works, the LISTEN waits for the next one: bounded by a connect,
        // the longest reconnect delay and the LISTEN itself. (On failure the stream is dropped,
        // which takes the subscription back.)
        let after =
            self.config.connect_timeout + self.config.reconnect_max + self.config.call_timeout;
        let listen = async {
            let (ack_tx, ack_rx) = oneshot::channel();
            self.cmds
                .send(Cmd::Listen(channels.to_vec(), ack_tx))
                .await
                .map_err(|_| Error::Closed)?;
            ack_rx.await.map_err(|_| Error::Closed)?
        };
        match tokio::time::timeout(after, listen).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::CallTimeout {
                    what: format!("LISTEN of {channels:?} ({})", self.role.name()),
                    after,
                })
            }
        }
        Ok(stream.boxed())
    }

    /// Subscribes to `channels` and runs `then` (statements, e.g. NOTIFYs) in one simple query
    /// on this listener's connection, after `LISTEN` of the channels: one round trip, one
    /// transaction, so the LISTEN is in effect when what `then` notifies is committed and no
    /// answer to it can be missed. `describe` names the statements in errors (the SQL itself may
    /// be large, and carries payloads); it is called only then.
    ///
    /// `Ok(None)`: no connection is ready (or the connection is gone before anything was sent);
    /// nothing was subscribed or sent, the caller may take another path. Once the query is sent
    /// it is never sent again: a failure (the connection failing under it, the server refusing
    /// it, no answer within `call_timeout`, which also recycles the connection) is returned, and
    /// the subscription taken back.
    pub(crate) async fn listen_and_run(
        self: &Arc<Self>,
        channels: &[String],
        then: &str,
        describe: impl FnOnce() -> String,
    ) -> Result<Option<Subscription>> {
        let Some(Ready { client, trouble }) = lock(&self.ready).clone() else {
            return Ok(None);
        };
        // A connection nobody reads now (its task waits for room in a full subscription) would
        // answer only once the subscription has room.
        if client.is_closed() || self.waiting_for_room.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let stream = self.register(channels)?;
        let sql = format!("{}{then}", listen_sql("LISTEN", channels));
        let after = self.config.call_timeout;
        match tokio::time::timeout(after, client.batch_execute(&sql)).await {
            Ok(Ok(())) => Ok(Some(stream.boxed())),
            Ok(Err(source)) => Err(Error::Query {
                what: format!("{} ({})", describe(), self.role.name()),
                source,
            }),
            Err(_) => {
                let what = format!("{} ({})", describe(), self.role.name());
                // No answer from a connection that is read: it is stuck, replace it. One whose
                // task started waiting for room meanwhile is not (replacing it would lose what
                // PostgreSQL delivers while it reconnects); the query runs when it reads again.
                if !self.waiting_for_room.load(Ordering::Relaxed) {
                    let _ = trouble.try_send(format!(
                        "{what} got no answer within {after:?} (call_timeout)"
                    ));
                }
                Err(Error::CallTimeout { what, after })
            }
        }
    }

    /// A control listener that lost its last subscription: stopping, and taking no new ones.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
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
            if self.role == Role::Control && subs.by_channel.is_empty() {
                // Nobody needs it any more: an idle listening backend still costs PostgreSQL a
                // wake-up per NOTIFY in the database, so the control connection closes.
                self.closing.store(true, Ordering::Relaxed);
                self.stop.notify_one();
                return;
            }
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
            let n = weight(payload, self.config.subscriber_max_bytes);
            for (id, sink) in list {
                let msg = Incoming::new(channel.to_owned(), payload.to_owned());
                // Room for its bytes first, then a place in the channel; the stream gives the
                // bytes back as the subscriber takes the message.
                let Ok(bytes) = sink.room.try_acquire_many(n) else {
                    full.push((*id, sink.clone(), msg, n));
                    continue;
                };
                match sink.tx.try_send(msg) {
                    Ok(()) => bytes.forget(),
                    Err(TrySendError::Full(msg)) => {
                        drop(bytes);
                        full.push((*id, sink.clone(), msg, n));
                    }
                    Err(TrySendError::Closed(_)) => closed.push(*id),
                }
            }
        }
        for (id, sink, msg, n) in full {
            self.waiting_for_room.store(true, Ordering::Relaxed);
            let sent = match sink.room.acquire_many(n).await {
                Ok(bytes) => {
                    let sent = sink.tx.send(msg).await;
                    if sent.is_ok() {
                        bytes.forget();
                    }
                    sent.is_ok()
                }
                Err(_) => false,
            };
            self.waiting_for_room.store(false, Ordering::Relaxed);
            if !sent {
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
        tracing::warn!(recycles = s.recycles, %reason, listener = self.role.name(), "LISTEN connection recycled");
    }

    fn record_check_failure(&self, reason: &str) {
        lock(&self.stats).check_failures += 1;
        metrics::counter!("dispatcher_broker_self_check_failures_total").increment(1);
        tracing::warn!(%reason, listener = self.role.name(), "self-check failed");
    }
}

/// A subscription's stream; dropping it UNLISTENs channels nobody else wants.
struct SubStream {
    rx: mpsc::Receiver<Incoming>,
    /// The subscription's byte bound: what a message taken counted is given back.
    room: Arc<tokio::sync::Semaphore>,
    max_bytes: usize,
    id: u64,
    listener: std::sync::Weak<Listener>,
}

impl Stream for SubStream {
    type Item = Incoming;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(msg)) = &polled {
            let n = weight(&msg.payload, self.max_bytes);
            self.room.add_permits(n as usize);
        }
        polled
    }
}

impl Drop for SubStream {
    fn drop(&mut self) {
        if let Some(l) = self.listener.upgrade() {
            l.unsubscribe(self.id);
        }
    }
}
