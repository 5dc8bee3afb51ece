//! The publishing connections: opened on first use within the connect timeout, each call within
//! its deadline, and a connection whose call misses its deadline replaced.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::task::AbortHandle;
use tokio_postgres::{Client, Statement};

use crate::error::{Error, Result};
use crate::{open, PgBrokerConfig};

/// A publishing connection with its prepared statements. Dropping the last handle (or a
/// replacement) ends its connection task, which fails every call still waiting on it.
#[derive(Debug)]
pub(crate) struct PubConn {
    pub(crate) client: Client,
    pub(crate) notify: Statement,
    pub(crate) notify_many: Statement,
    /// Its backend's pid.
    pub(crate) pid: i32,
    task: AbortHandle,
}

impl Drop for PubConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Default)]
struct Slot {
    conn: Mutex<Option<Arc<PubConn>>>,
    /// Held while a connection for this slot is opened, so that one opens at a time.
    opening: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Stats {
    replacements: u64,
    last_reason: Option<String>,
}

/// The broker's publishing connections, used round-robin by publishes, control replies and the
/// listeners' self-checks alike.
#[derive(Debug)]
pub(crate) struct Publishers {
    config: PgBrokerConfig,
    slots: Vec<Slot>,
    next: AtomicUsize,
    stats: Mutex<Stats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Publishers {
    pub(crate) fn new(config: PgBrokerConfig) -> Publishers {
        let n = config.publish_connections.max(1);
        Publishers {
            config,
            slots: (0..n).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            stats: Mutex::new(Stats::default()),
        }
    }

    /// Opens the first connection now, so that bad settings fail at start.
    pub(crate) async fn open_first(&self) -> Result<()> {
        self.conn(0).await.map(drop)
    }

    /// The backend pid of each publishing connection (0: none open).
    pub(crate) fn pids(&self) -> Vec<i32> {
        self.slots
            .iter()
            .map(|s| lock(&s.conn).as_ref().map_or(0, |c| c.pid))
            .collect()
    }

    /// How many connections were replaced after missing a deadline, and why the last one was.
    pub(crate) fn replacements(&self) -> (u64, Option<String>) {
        let s = lock(&self.stats);
        (s.replacements, s.last_reason.clone())
    }

    fn current(&self, i: usize) -> Option<Arc<PubConn>> {
        match lock(&self.slots[i].conn).as_ref() {
            Some(c) if !c.client.is_closed() => Some(c.clone()),
            _ => None,
        }
    }

    /// The open connection of slot `i`, or a new one within the connect timeout (waiting for
    /// another opener of the slot counts against it too).
    async fn conn(&self, i: usize) -> Result<Arc<PubConn>> {
        if let Some(c) = self.current(i) {
            return Ok(c);
        }
        let after = self.config.connect_timeout;
        let opening = async {
            let _one = self.slots[i].opening.lock().await;
            if let Some(c) = self.current(i) {
                return Ok(c);
            }
            if lock(&self.slots[i].conn).take().is_some() {
                tracing::warn!(slot = i, "publishing connection closed; reconnecting");
            }
            let c = Arc::new(open_publisher(&self.config).await?);
            *lock(&self.slots[i].conn) = Some(c.clone());
            Ok(c)
        };
        tokio::time::timeout(after, opening)
            .await
            .unwrap_or_else(|_| {
                Err(Error::ConnectTimeout {
                    what: "publisher",
                    target: crate::target(&self.config.pg),
                    after,
                })
            })
    }

    /// Empties slot `i` if it still holds `conn` and ends `conn`'s connection task: calls
    /// waiting on it fail at once, and the next call opens a fresh connection.
    fn replace(&self, i: usize, conn: &Arc<PubConn>, reason: &str) {
        {
            let mut slot = lock(&self.slots[i].conn);
            if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
                *slot = None;
            } else {
                // Replaced already by another call that missed its deadline.
                return;
            }
        }
        conn.task.abort();
        let mut s = lock(&self.stats);
        s.replacements += 1;
        s.last_reason = Some(reason.to_owned());
        metrics::counter!("dispatcher_broker_publisher_replacements_total").increment(1);
        tracing::warn!(
            slot = i,
            backend_pid = conn.pid,
            replacements = s.replacements,
            %reason,
            "publishing connection replaced"
        );
    }

    /// Runs `f` on the next connection (round-robin) within `after`. A connection that misses
    /// the deadline is replaced and the call fails with [`Error::CallTimeout`]; a call that
    /// fails because its connection closed under it is tried once more on a fresh one.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, after: Duration, f: F) -> Result<T>
    where
        F: Fn(Arc<PubConn>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let conn = self.conn(i).await?;
        match tokio::time::timeout(after, f(conn.clone())).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if conn.client.is_closed() => {
                // The connection died under us (or was replaced): once more on a fresh one.
                tracing::warn!(error = %e, slot = i, "{what} failed on a closed connection; retrying once");
            }
            Ok(Err(source)) => {
                return Err(Error::Query {
                    what: what.to_owned(),
                    source,
                })
            }
            Err(_) => return Err(self.timed_out(i, &conn, what, after)),
        }
        let conn = self.conn(i).await?;
        match tokio::time::timeout(after, f(conn.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(Error::Query {
                what: what.to_owned(),
                source,
            }),
            Err(_) => Err(self.timed_out(i, &conn, what, after)),
        }
    }

    fn timed_out(&self, i: usize, conn: &Arc<PubConn>, what: &str, after: Duration) -> Error {
        let what = format!(
            "{what} on publishing connection {i} (backend pid {})",
            conn.pid
        );
        self.replace(i, conn, &format!("{what}: no answer within {after:?}"));
        Error::CallTimeout { what, after }
    }

    /// One NOTIFY within `after` (the listeners' self-checks).
    pub(crate) async fn notify(&self, channel: &str, payload: &str, after: Duration) -> Result<()> {
        self.call("self-check pg_notify", after, |c| async move {
            c.client.execute(&c.notify, &[&channel, &payload]).await
        })
        .await
        .map(drop)
    }
}

/// Opens a publishing connection: connect, prepare both statements and learn the backend pid
/// (pipelined: one round trip), all within the connect timeout.
async fn open_publisher(config: &PgBrokerConfig) -> Result<PubConn> {
    let (client, mut messages) = open(config, "publisher").await?;
    let task = tokio::spawn(async move {
        while let Some(m) = messages.next().await {
            if let Err(e) = m {
                tracing::warn!(error = %e, "publishing connection ended");
                break;
            }
        }
    })
    .abort_handle();
    let setup = async {
        let prepared = tokio::try_join!(
            client.prepare("SELECT pg_notify($1, $2)"),
            client.prepare(
                "SELECT count(pg_notify(c, p)) FROM unnest($1::text[], $2::text[]) AS m(c, p)"
            ),
            client.query_one("SELECT pg_backend_pid()", &[]),
        );
        prepared.map_err(|source| Error::Query {
            what: "preparing pg_notify".into(),
            source,
        })
    };
    let after = config.connect_timeout;
    let (notify, notify_many, row) = match tokio::time::timeout(after, setup).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            task.abort();
            return Err(e);
        }
        Err(_) => {
            task.abort();
            return Err(Error::ConnectTimeout {
                what: "publisher (preparing pg_notify)",
                target: crate::target(&config.pg),
                after,
            });
        }
    };
    let pid = row.try_get::<_, i32>(0).map_err(|source| Error::Query {
        what: "pg_backend_pid()".into(),
        source,
    });
    let pid = match pid {
        Ok(p) => p,
        Err(e) => {
            task.abort();
            return Err(e);
        }
    };
    Ok(PubConn {
        client,
        notify,
        notify_many,
        pid,
        task,
    })
}
