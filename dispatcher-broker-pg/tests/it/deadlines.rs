//! Deadlines: a frozen publishing connection is replaced, a silent server fails the connect in
//! time, the self-check covers the publishing path and is counted, and the control listener
//! delivers while the main subscription is full.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dispatcher_broker_pg::{Error, PgBroker, PgBrokerConfig};
use dispatcher_core::{Broker, BrokerError};
use dispatcher_testkit::postgres::PgFixture;

use dispatcher_testkit::postgres::Frozen;
use futures_util::StreamExt;

fn status_json(b: &PgBroker) -> serde_json::Value {
    serde_json::to_value(b.status()).unwrap()
}

async fn broker_with(fx: &PgFixture, f: impl FnOnce(&mut PgBrokerConfig)) -> PgBroker {
    let mut config = PgBrokerConfig::new(fx.config().clone());
    f(&mut config);
    PgBroker::with_config(config).await.unwrap()
}

/// Waits until `cond` holds, up to `limit`; `what` and the broker's status in the message.
async fn wait_until(b: &PgBroker, what: &str, limit: Duration, cond: impl Fn(&PgBroker) -> bool) {
    let start = Instant::now();
    while !cond(b) {
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}: {}",
            status_json(b)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_publish_on_a_frozen_connection_fails_in_time_and_the_next_opens_a_fresh_one() {
    let fx = PgFixture::new().await.unwrap();
    let b = broker_with(&fx, |c| {
        c.call_timeout = Duration::from_secs(1);
        // No self-check during the test: the publish alone must find the frozen connection.
        c.self_check_interval = Duration::from_secs(600);
    })
    .await;
    let mut sub = b.subscribe(&["frozen_pub".to_string()]).await.unwrap();
    b.publish("frozen_pub", "before").await.unwrap();
    let old = b.publisher_pids()[0];
    assert!(old > 0, "{}", status_json(&b));

    let frozen = Frozen::freeze(old).unwrap();
    let start = Instant::now();
    let e = b.publish("frozen_pub", "during").await.unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(&e, BrokerError::Timeout(d, what) if *d == Duration::from_secs(1) && what.contains("pg_notify") && what.contains(&old.to_string())),
        "{e:?}"
    );
    assert!(e.to_string().contains("call_timeout"), "{e}");
    assert!(took < Duration::from_secs(5), "the publish took {took:?}");
    assert_eq!(b.publisher_replacements(), 1, "{}", status_json(&b));

    // The next publish opens a fresh connection while the old backend is still frozen.
    b.publish("frozen_pub", "after").await.unwrap();
    let new = b.publisher_pids()[0];
    assert!(new > 0 && new != old, "old {old}, new {new}");
    drop(frozen);
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("a notification")
            .unwrap();
        got.push(m.payload);
    }
    // "during" may or may not have been committed before the freeze; "after" arrives.
    assert_eq!(got[0], "before");
    assert!(got.contains(&"after".to_string()), "{got:?}");
    let status = status_json(&b);
    assert_eq!(status["publisher_replacements"], 1, "{status}");
    assert!(
        status["last_publisher_replacement_reason"]
            .as_str()
            .unwrap()
            .contains("no answer within 1s"),
        "{status}"
    );
}

#[tokio::test]
async fn connecting_to_a_silent_port_times_out_naming_host_and_port() {
    // Accepts TCP connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming() {
            held.push(s);
        }
    });
    let url = format!("postgres://u:TOPSECRET@127.0.0.1:{port}/x");
    let mut config = PgBrokerConfig::from_url(&url).unwrap();
    assert_eq!(
        config.connect_timeout,
        Duration::from_secs(5),
        "the default"
    );
    config.connect_timeout = Duration::from_secs(1);
    let start = Instant::now();
    let e = PgBroker::with_config(config).await.unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let message = e.to_string();
    assert!(
        matches!(&e, Error::ConnectTimeout { target, after, .. } if *target == format!("127.0.0.1:{port}") && *after == Duration::from_secs(1)),
        "{e:?}"
    );
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.contains("connect_timeout"), "{message}");
    assert!(!message.contains("SECRET"), "{message}");
    assert!(
        matches!(BrokerError::from(e), BrokerError::Timeout(d, _) if d == Duration::from_secs(1))
    );

    // The connection string's own connect_timeout sets the whole-connect deadline.
    let c = PgBrokerConfig::from_url(&format!("{url}?connect_timeout=2")).unwrap();
    assert_eq!(c.connect_timeout, Duration::from_secs(2));
}

#[tokio::test]
async fn a_frozen_publishing_connection_is_caught_by_the_self_check() {
    let fx = PgFixture::new().await.unwrap();
    let b = broker_with(&fx, |c| {
        c.self_check_interval = Duration::from_millis(300);
        c.self_check_timeout = Duration::from_secs(1);
    })
    .await;
    wait_until(&b, "a first self-check", Duration::from_secs(10), |b| {
        status_json(b)["self_check"]["count"].as_u64() >= Some(1)
    })
    .await;
    let old = b.publisher_pids()[0];
    let listener = b.listener_pid();
    let _frozen = Frozen::freeze(old).unwrap();
    // Nothing is published by the test: the self-check alone finds and replaces it.
    wait_until(
        &b,
        "the frozen publishing connection replaced",
        Duration::from_secs(10),
        |b| b.publisher_replacements() >= 1 && b.publisher_pids()[0] != old,
    )
    .await;
    let status = status_json(&b);
    assert!(
        status["self_check"]["failures"].as_u64() >= Some(1),
        "{status}"
    );
    // The checks go on, on the fresh connection, and the listener was not blamed.
    let count = status["self_check"]["count"].as_u64().unwrap();
    wait_until(&b, "more self-checks", Duration::from_secs(10), |b| {
        status_json(b)["self_check"]["count"].as_u64() > Some(count)
    })
    .await;
    assert_eq!(b.recycles(), 0, "{}", status_json(&b));
    assert_eq!(b.listener_pid(), listener);
}

/// Counters by name, as an exporter would see them.
#[derive(Default)]
struct Recorder(Mutex<HashMap<String, Arc<AtomicU64>>>);

impl Recorder {
    fn get(&self, name: &str) -> Option<u64> {
        let m = self.0.lock().unwrap();
        m.get(name).map(|c| c.load(Ordering::Relaxed))
    }
}

impl metrics::Recorder for Recorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let mut m = self.0.lock().unwrap();
        let c = m.entry(key.name().to_owned()).or_default().clone();
        metrics::Counter::from_arc(c)
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// This test binary's recorder (installed once; other tests' brokers count into it too, so
/// the assertions are lower bounds).
fn recorder() -> &'static Recorder {
    static R: OnceLock<&'static Recorder> = OnceLock::new();
    R.get_or_init(|| {
        let r: &'static Recorder = Box::leak(Box::default());
        metrics::set_global_recorder(r).expect("no other recorder in this binary");
        r
    })
}

#[tokio::test]
async fn the_counters_exist_from_the_start_and_count_self_check_failures() {
    let rec = recorder();
    let fx = PgFixture::new().await.unwrap();
    let b = broker_with(&fx, |c| {
        c.self_check_interval = Duration::from_millis(300);
        c.self_check_timeout = Duration::from_secs(1);
    })
    .await;
    for name in [
        "dispatcher_broker_recycles_total",
        "dispatcher_broker_self_checks_total",
        "dispatcher_broker_self_check_failures_total",
        "dispatcher_broker_publisher_replacements_total",
    ] {
        assert!(rec.get(name).is_some(), "{name} is not registered");
    }
    let before = rec
        .get("dispatcher_broker_self_check_failures_total")
        .unwrap();
    // The pid is known once the LISTEN set-up finished (asynchronously, after `connect`).
    wait_until(&b, "the listener ready", Duration::from_secs(10), |b| {
        b.listener_pid() != 0
    })
    .await;
    let pid = b.listener_pid();
    let frozen = Frozen::freeze(pid).unwrap();
    wait_until(
        &b,
        "the frozen listener replaced",
        Duration::from_secs(10),
        |b| b.listener_pid() != pid && b.listener_pid() != 0,
    )
    .await;
    drop(frozen);
    let status = status_json(&b);
    assert!(
        status["self_check"]["failures"].as_u64() >= Some(1),
        "{status}"
    );
    assert!(
        rec.get("dispatcher_broker_self_check_failures_total")
            .unwrap()
            > before,
        "{status}"
    );
    assert!(rec.get("dispatcher_broker_recycles_total").unwrap() >= 1);

    // A connection that dies while a check is out fails that check, too. Hold the checks'
    // NOTIFYs (freeze the publishing connection; its deadline is 3 s), then end the listener:
    // the check out at that moment is counted at once (a NOTIFY that times out later reports
    // to the old connection's loop, which is gone).
    let b = broker_with(&fx, |c| {
        c.self_check_interval = Duration::from_millis(200);
        c.self_check_timeout = Duration::from_secs(3);
    })
    .await;
    wait_until(&b, "a first self-check", Duration::from_secs(10), |b| {
        status_json(b)["self_check"]["count"].as_u64() >= Some(1)
    })
    .await;
    let _frozen = Frozen::freeze(b.publisher_pids()[0]).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let failures = status_json(&b)["self_check"]["failures"].as_u64().unwrap();
    let pid = b.listener_pid();
    let admin = fx.client().await.unwrap();
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    wait_until(
        &b,
        "the check out when the listener died counted failed",
        Duration::from_secs(2),
        |b| status_json(b)["self_check"]["failures"].as_u64() > Some(failures),
    )
    .await;
}

#[tokio::test]
async fn the_control_subscription_delivers_while_the_main_one_is_full() {
    let fx = PgFixture::new().await.unwrap();
    let b = broker_with(&fx, |c| {
        c.subscriber_capacity = 4;
        c.self_check_interval = Duration::from_millis(300);
        c.self_check_timeout = Duration::from_secs(1);
    })
    .await;
    assert_eq!(b.control_listener_pid(), None, "started lazily");
    let mut main = b.subscribe(&["flood".to_string()]).await.unwrap();
    let batch: Vec<(String, String)> = (0..100)
        .map(|i| ("flood".to_string(), format!("task-{i}")))
        .collect();
    b.publish_batch(&batch).await.unwrap();
    // The main listener now waits for `main`, which nobody reads.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut control = b
        .subscribe_control(&["flood_control".to_string()])
        .await
        .unwrap()
        .expect("PgBroker has a control path");
    let pid = b.control_listener_pid().unwrap();
    assert!(pid > 0 && pid != b.listener_pid(), "{}", status_json(&b));
    for i in 0..3 {
        let cmd = format!("cmd-{i}");
        b.publish("flood_control", &cmd).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), control.next())
            .await
            .unwrap_or_else(|_| panic!("control message {i} held up: {}", status_json(&b)))
            .unwrap();
        assert_eq!(got.payload, cmd);
    }
    let status = status_json(&b);
    assert_eq!(status["control_listener"]["listener_pid"], pid, "{status}");
    assert_eq!(status["connected"], true, "{status}");
    // A reply channel subscribed now rides the control listener too (the main one waits).
    let mut reply = b.subscribe(&["reply_to_full".to_string()]).await.unwrap();
    b.publish("reply_to_full", "a reply").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), reply.next())
        .await
        .unwrap_or_else(|_| panic!("reply held up behind the flood: {}", status_json(&b)))
        .unwrap();
    assert_eq!(got.payload, "a reply");
    drop(reply);

    // Its own self-check and reconnect: freeze it, it is replaced, and keeps delivering.
    let frozen = Frozen::freeze(pid).unwrap();
    wait_until(
        &b,
        "the control listener replaced",
        Duration::from_secs(10),
        |b| b.control_listener_pid().is_some_and(|p| p != pid && p != 0),
    )
    .await;
    drop(frozen);
    assert_eq!(b.control_recycles(), Some(1), "{}", status_json(&b));
    assert_eq!(b.recycles(), 0, "the main listener is alive, only waiting");
    let mut delivered = false;
    for i in 0..50 {
        b.publish("flood_control", &format!("again-{i}"))
            .await
            .unwrap();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), control.next()).await
        {
            assert!(m.payload.starts_with("again-"));
            delivered = true;
            break;
        }
    }
    assert!(delivered, "nothing after the recycle: {}", status_json(&b));

    // Meanwhile the flood waited, in order, and is all there.
    for i in 0..100 {
        let m = tokio::time::timeout(Duration::from_secs(5), main.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.payload, format!("task-{i}"));
    }

    // The last control subscription dropped: its connection closes (an idle listening backend
    // still costs PostgreSQL a wake-up per NOTIFY), and the next subscription opens a new one.
    let last = b.control_listener_pid().unwrap();
    drop(control);
    wait_until(
        &b,
        "the control listener stopped",
        Duration::from_secs(5),
        |b| b.control_listener_pid().is_none(),
    )
    .await;
    let client = fx.client().await.unwrap();
    let start = Instant::now();
    loop {
        let alive: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&last],
            )
            .await
            .unwrap()
            .get(0);
        if alive == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the control listener's backend {last} still open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut again = b
        .subscribe_control(&["flood_control".to_string()])
        .await
        .unwrap()
        .unwrap();
    let pid = b.control_listener_pid().unwrap();
    assert!(pid > 0 && pid != last, "{}", status_json(&b));
    b.publish("flood_control", "reopened").await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), again.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.payload, "reopened");
}
